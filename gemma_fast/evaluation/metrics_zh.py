"""Metrics that are right in Chinese (per example, so each carries a bootstrap interval like gemma_fast.metrics).
BERTScore in Chinese (multilingual-e5-small, layer 9) is in gemma_fast.bertscore with the English encoder.

- LLaMA-Factory-compatible scores (eval.llamafactory_metrics), the formulas of LLaMA-Factory's
  src/llamafactory/train/sft/metric.py (ComputeSimilarity), each x100 and rounded to 4 places:
  * BLEU-4: nltk `sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)`,
    on characters (spaces and newlines are characters too);
  * ROUGE-1/2/L F: `rouge_chinese.Rouge().get_scores(" ".join(jieba.cut(pred)), " ".join(jieba.cut(ref)))`, 0 when
    either side has no token. rouge-chinese 1.0.3 is re-implemented here (`rouge_chinese_f`; a test compares it with
    the package when that is importable): sentences cut at 。！？? (and …… / ......), whitespace collapsed, words =
    the space-split tokens of all sentences; ROUGE-N counts *distinct* n-grams (sets), ROUGE-L is the LCS of the
    word sequences; F = 2PR / (P + R + 1e-8).
- Poetry: lines of a poem, form checks (line count and 5/7 characters per line).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

LF_KEYS = ("lf_bleu4", "lf_rouge1", "lf_rouge2", "lf_rougeL")
LF_LABEL = "LLaMA-Factory-compatible (char BLEU-4 method3, jieba ROUGE F, x100)"


# ---------------------------------------------------------------- LLaMA-Factory-compatible


@lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def jieba_tokens(text: str) -> list[str]:
    return list(_jieba().cut(text))


def lf_bleu4(prediction: str, reference: str) -> float:
    """LLaMA-Factory's bleu-4: character-level sentence BLEU-4, nltk smoothing method 3, x100."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return round(sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3) * 100, 4)


_CUTS = ((r"([。！？\?])([^”’])", r"\1\n\2"), (r"(\.{6})([^”’])", r"\1\n\2"), (r"(\…{2})([^”’])", r"\1\n\2"),
         (r"([。！？\?][”’])([^，。！？\?])", r"\1\n\2"))


def _cut_sentences(text: str) -> list[str]:
    for pattern, repl in _CUTS:
        text = re.sub(pattern, repl, text)
    return text.rstrip().split("\n")


def _words(text: str) -> list[str]:
    sentences = [" ".join(s.split()) for s in _cut_sentences(text) if len(s) > 0]
    return [w for s in sentences for w in s.split(" ")]


def _ngrams(words: list[str], n: int) -> set:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b, start=1):
            row.append(previous[j - 1] + 1 if x == y else max(previous[j], row[j - 1]))
        previous = row
    return previous[-1]


def _f(overlap: int, hyp: int, ref: int) -> float:
    p = overlap / hyp if hyp else 0.0
    r = overlap / ref if ref else 0.0
    return 2.0 * ((p * r) / (p + r + 1e-8))


def rouge_chinese_f(hypothesis: str, reference: str) -> dict[str, float]:
    """rouge-chinese 1.0.3's Rouge().get_scores(hyp, ref)[0][k]["f"] for rouge-1, rouge-2, rouge-l (inputs: space-
    separated tokens)."""
    h, r = _words(hypothesis), _words(reference)
    out = {}
    for n in (1, 2):
        hs, rs = _ngrams(h, n), _ngrams(r, n)
        out[f"rouge-{n}"] = _f(len(hs & rs), len(hs), len(rs))
    out["rouge-l"] = _f(_lcs_length(r, h), len(h), len(r))
    return out


def lf_rouge(prediction: str, reference: str) -> dict[str, float]:
    """LLaMA-Factory's rouge-1/2/l: F of rouge-chinese on space-joined jieba tokens, x100; 0 when a side is empty."""
    hyp, ref = " ".join(jieba_tokens(prediction)), " ".join(jieba_tokens(reference))
    if not hyp.split() or not ref.split():
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    return {k: round(v * 100, 4) for k, v in rouge_chinese_f(hyp, ref).items()}


def llamafactory_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per example: lf_bleu4, lf_rouge1, lf_rouge2, lf_rougeL (all x100), as LLaMA-Factory's predict step reports."""
    out = {k: [] for k in LF_KEYS}
    for p, r in zip(predictions, references):
        rouge = lf_rouge(p, r)
        out["lf_bleu4"].append(lf_bleu4(p, r))
        out["lf_rouge1"].append(rouge["rouge-1"])
        out["lf_rouge2"].append(rouge["rouge-2"])
        out["lf_rougeL"].append(rouge["rouge-l"])
    return out


# ---------------------------------------------------------------- poetry

from ..data.poetry import (HAN_CLASS, continuation_request, form_check,  # noqa: E402,F401
                           poem_lines, regular_length)

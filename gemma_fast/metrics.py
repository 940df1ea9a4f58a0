"""Language-aware, offline metrics. (Foundation: answer-token loss, perplexity, ROUGE-L; issue #5 adds the rest.)"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch

from .prompts import encode_example

# One CJK ideograph per token (Chinese has no spaces); runs of Latin letters/digits as words.
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


class MixedTokenizer:
    """rouge-score's default tokenizer drops every non-ASCII character, so Chinese would score 0.0."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MixedTokenizer())
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


@torch.no_grad()
def answer_token_losses(model, tokenizer, records: list[dict], max_length: int, batch_size: int = 8) -> list[tuple[float, int]]:
    """Per record: (summed cross-entropy over the answer + <end_of_turn> tokens, number of those tokens).

    Uses the same encode_example as training, so the loss is over exactly the tokens the model was trained on.
    """
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_example(tokenizer, r, max_length) for r in records]
    out: list[tuple[float, int]] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, e in enumerate(batch):  # right padding: positions stay aligned with training
            n = len(e["input_ids"])
            ids[row, :n] = torch.tensor(e["input_ids"])
            attention[row, :n] = 1
            labels[row, :n] = torch.tensor([t if m else -100 for t, m in zip(e["input_ids"], e["completion_mask"])])
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        token_loss = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="none"
        ).view(shift_labels.shape)
        mask = shift_labels != -100
        for row in range(len(batch)):
            out.append((token_loss[row][mask[row]].sum().item(), int(mask[row].sum().item())))
    return out


def loss_and_perplexity(per_record: list[tuple[float, int]]) -> tuple[float, float]:
    """Token-weighted mean answer loss over all records, and its exponential."""
    total = sum(loss for loss, _ in per_record)
    count = sum(n for _, n in per_record)
    mean = total / count if count else float("nan")
    return mean, math.exp(mean)

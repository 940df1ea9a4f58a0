"""Padding-free batches with attention per example, on any device (the CPU included).

A batch of 8 Kaggle docs records is ~170 real tokens each, padded to its longest (~350): half of what the backbone
computes is padding. TRL's `padding_free=True` concatenates a batch into one row (position_ids restart at each
example, cu_seq_lens mark the boundaries), but then needs a varlen kernel: flash-attention on a GPU, and on a CPU
transformers builds a dense block-diagonal mask over the whole row (slower than padding). This attention function
runs scaled_dot_product_attention on each example's slice instead (causal, its fused CPU/GPU kernel, no mask), so
no position is padding and no example sees another. Gemma 2's attention-logit soft-capping, which SDPA cannot do,
is computed explicitly; sliding windows are honoured. Loss and gradients equal the padded path
(tests/unit/test_varlen.py). Registered with transformers' AttentionInterface; nothing here imports transformers at
module level (Unsloth must be imported first).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

NAME = "gemma_fast_varlen"


_last: dict = {}  # the boundaries of the batch in flight, by the tensor they came from (see cached_boundaries)


def cached_boundaries(cu_seq_lens: torch.Tensor | None, position_ids: torch.Tensor | None, length: int) -> list[int]:
    """boundaries(), computed once per batch: every attention layer of a forward (and the recomputing one under
    gradient checkpointing) gets the same cu_seq_lens / position_ids tensor, and reading it is a host sync on a GPU
    (28-56 per step otherwise). Keyed by the tensor object itself (a weak reference, so a new batch's tensor at a
    reused address never matches) and its version counter (an in-place change does not match either)."""
    import weakref

    source = cu_seq_lens if cu_seq_lens is not None else position_ids
    if source is None:
        return [0, length]
    ref = _last.get("ref")
    if ref is not None and ref() is source and _last["key"] == (source._version, length):
        return _last["bounds"]
    bounds = boundaries(cu_seq_lens, position_ids, length)
    _last.update(ref=weakref.ref(source), key=(source._version, length), bounds=bounds)
    return bounds


def boundaries(cu_seq_lens: torch.Tensor | None, position_ids: torch.Tensor | None, length: int) -> list[int]:
    """Start of every example and the end of the row: from TRL's cu_seq_lens, else where position_ids restart at 0."""
    if cu_seq_lens is not None:
        return [int(x) for x in cu_seq_lens.tolist()]
    if position_ids is None:
        return [0, length]
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    return (starts if starts and starts[0] == 0 else [0, *starts]) + [length]


def _window_mask(length: int, window: int, device) -> torch.Tensor:
    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    return (k <= q) & (k > q - window)  # transformers' causal mask with its sliding-window overlay


def _attend(q, k, v, scaling, window, softcap, dropout):
    length = q.shape[-2]
    mask = _window_mask(length, window, q.device) if window and length > window else None
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None, scale=scaling)
    weights = torch.matmul(q, k.transpose(-1, -2)) * scaling
    weights = torch.tanh(weights / softcap) * softcap
    keep = mask if mask is not None else torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    weights = weights.masked_fill(~keep, torch.finfo(weights.dtype).min)
    probs = F.dropout(torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype), p=dropout)
    return torch.matmul(probs, v)


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     sliding_window: int | None = None, softcap: float | None = None, **kwargs):
    """transformers' attention-function signature: query [1, heads, T, d], key/value [1, kv_heads, T, d] ->
    ([1, T, heads, d], None)."""
    if query.shape[0] != 1 or attention_mask is not None and attention_mask.dim() == 4:
        raise RuntimeError(f"{NAME} expects one padding-free row (TRL padding_free=True), got a batch of {query.shape[0]}")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    bounds = cached_boundaries(kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids"), query.shape[-2])
    outs = [_attend(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], scaling, sliding_window, softcap, dropout)
            for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)
    return NAME


def supports(model) -> bool:
    """Whether the model's generation was checked equal to the padded path (families.Family.varlen; tests/unit/
    test_varlen.py): Gemma 1-3n and Gemma 4's E-style, 31B-style and MoE shapes. An unknown model type is refused when
    the model loads (families.family_for), so it never reaches here."""
    from ..families import family_of_config

    return family_of_config(model.config).varlen


class _KnownToWork(logging.Filter):
    """TRL 1.15 warns that padding-free rows need a flash-attention kernel; this function is the varlen kernel."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "attention implementation is not set to a supported Flash Attention" not in record.getMessage()


def use_varlen(model) -> None:
    """Switch `model` (before PEFT wraps it) to per-example attention; batches must then be padding-free."""
    register()
    model.set_attn_implementation(NAME)
    trl_logger = logging.getLogger("trl.trainer.sft_trainer")
    if not any(isinstance(f, _KnownToWork) for f in trl_logger.filters):
        trl_logger.addFilter(_KnownToWork())

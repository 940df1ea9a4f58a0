"""Evaluation batches by a token budget, not a fixed count (gpu_path_review_2 HIGH 1).

A batch's memory grows with rows x (its longest row + what generation adds): the KV cache is padded to the longest
prompt, and generation appends `max_new_tokens` to every row (Unsloth's fast decode another KV_CACHE_INCREMENT). A
fixed row count that suits the short prompts runs out of memory on the long ones at the end of a length-sorted
evaluation. No torch here: the same function batches the run and prices it in `--plan`.
"""

from __future__ import annotations

from typing import Sequence

# Unsloth's decode (unsloth/models/llama.py, KV_CACHE_INCREMENT = 512) sizes its first KV buffer as
# KV_CACHE_INCREMENT + the sequence + 1 (unsloth/models/_decode_graphs.py): 513 positions beyond the prompt.
UNSLOTH_DECODE_BUFFER = 513


def token_batches(lengths: Sequence[int], max_rows: int, max_tokens: int | None = None, extra: int = 0) -> list[list[int]]:
    """Indices into `lengths`, shortest first (little padding), grouped into batches of at most `max_rows` items whose
    rows x (longest length in the batch + `extra`) stays within `max_tokens` (None: no token cap). An item that alone
    exceeds the budget still runs, alone: it cannot be split."""
    if max_rows < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch limits must be >= 1 (max_rows={max_rows}, max_tokens={max_tokens})")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # stable: equal lengths keep their order
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i]) + extra
        full = len(current) + 1 > max_rows or (max_tokens is not None and (len(current) + 1) * width > max_tokens)
        if current and full:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    if current:
        batches.append(current)
    return batches


def largest_batch_tokens(max_rows: int, max_tokens: int, width: int) -> int:
    """An upper bound on rows x width over every batch `token_batches` can form when no row is wider than `width`
    (length + extra): a batch of several rows stays within the budget, a single row within `width`."""
    return min(max_rows * width, max(max_tokens, width))

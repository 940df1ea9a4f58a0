"""Batched greedy generation: length-sorted, left-padded, stopping at <end_of_turn>."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .models import stop_token_ids


@torch.no_grad()
def generate_batched(
    model, tokenizer, prompts: list[str], batch_size: int = 16, max_new_tokens: int = 64,
    do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
) -> list[str]:
    """Answers in the order of `prompts`. Sorting by length keeps padding (wasted compute) small in each batch.
    The tokenizer's padding side and the global random state are as they were afterwards."""
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # the new tokens of every row then start at the same position
    try:
        with torch.random.fork_rng() if do_sample else nullcontext():  # sampling seeds a fork, not the caller
            if do_sample:
                torch.manual_seed(seed)
            return _generate(model, tokenizer, prompts, batch_size, max_new_tokens, do_sample, temperature, top_p)
    finally:
        tokenizer.padding_side = side


def _generate(model, tokenizer, prompts, batch_size, max_new_tokens, do_sample, temperature, top_p) -> list[str]:
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, **sampling, eos_token_id=stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        for row, i in enumerate(idx):
            answers[i] = tokenizer.decode(out[row, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return answers

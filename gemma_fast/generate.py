"""Batched generation: prompts encoded by the model's PromptFormat, length-sorted, left-padded, stopping at the end
of a turn (or of the text)."""

from __future__ import annotations

from contextlib import nullcontext

import torch


@torch.no_grad()
def generate_batched(
    model, tokenizer, prompts_format, prompts: list, batch_size: int = 16, max_new_tokens: int = 64,
    do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
) -> list[str]:
    """Answers to `prompts` (prompts.Prompt, built by `prompts_format`) in their order. Sorting by length keeps padding
    (wasted compute) small in each batch; the global random state is as it was afterwards."""
    model.eval()
    with torch.random.fork_rng() if do_sample else nullcontext():  # sampling seeds a fork, not the caller
        if do_sample:
            torch.manual_seed(seed)
        encoded = prompts_format.encode_many(prompts)
        return _generate(model, tokenizer, prompts_format, encoded, batch_size, max_new_tokens, do_sample, temperature, top_p)


def left_padded(rows: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, padded on the left so every row's new tokens start at the same position."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for n, row in enumerate(rows):
        ids[n, width - len(row):] = torch.tensor(row, dtype=torch.long)
        attention[n, width - len(row):] = 1
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device)}


def _generate(model, tokenizer, fmt, encoded, batch_size, max_new_tokens, do_sample, temperature, top_p) -> list[str]:
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(encoded)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = left_padded([encoded[i] for i in idx], fmt.pad_id, device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, **sampling, eos_token_id=fmt.stop_ids, pad_token_id=fmt.pad_id)
        for row, i in enumerate(idx):
            answers[i] = tokenizer.decode(out[row, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return answers

"""Batched generation: prompts encoded by the model's PromptFormat, length-sorted, left-padded, stopping at the end
of a turn (or of the text). Batches hold at most `batch_size` prompts and, with `batch_tokens`, at most that many
tokens of KV cache (rows x (longest prompt + new tokens + Unsloth's decode buffer): batching.token_batches)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .batching import UNSLOTH_DECODE_BUFFER, token_batches


@torch.no_grad()
def generate_batched(
    model, tokenizer, prompts_format, prompts: list, batch_size: int = 16, max_new_tokens: int = 64,
    do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_tokens: int | None = None,
) -> list[str]:
    """Answers to `prompts` (prompts.Prompt, built by `prompts_format`) in their order. Sorting by length keeps padding
    (wasted compute) small in each batch; the global random state is as it was afterwards."""
    model.eval()
    with torch.random.fork_rng() if do_sample else nullcontext():  # sampling seeds a fork, not the caller
        if do_sample:
            torch.manual_seed(seed)
        encoded = prompts_format.encode_many(prompts)
        extra = max_new_tokens + decode_buffer(model)
        batches = token_batches([len(e) for e in encoded], batch_size, batch_tokens, extra)
        return _generate(model, tokenizer, prompts_format, encoded, batches, max_new_tokens, do_sample, temperature, top_p)


def decode_buffer(model) -> int:
    """KV positions generation holds beyond prompt + new tokens: Unsloth's fast GPU decode allocates 513 more (its
    CPU backend and transformers' own generate allocate none)."""
    base = getattr(model, "module", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    on_gpu = next(base.parameters()).is_cuda
    return UNSLOTH_DECODE_BUFFER if on_gpu and getattr(base.config, "unsloth_version", None) else 0


def left_padded(rows: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, padded on the left so every row's new tokens start at the same position."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for n, row in enumerate(rows):
        ids[n, width - len(row):] = torch.tensor(row, dtype=torch.long)
        attention[n, width - len(row):] = 1
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device)}


def _generate(model, tokenizer, fmt, encoded, batches, max_new_tokens, do_sample, temperature, top_p) -> list[str]:
    device = next(model.parameters()).device
    answers: list[str] = [""] * len(encoded)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    for idx in batches:
        enc = left_padded([encoded[i] for i in idx], fmt.pad_id, device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, **sampling, eos_token_id=fmt.stop_ids, pad_token_id=fmt.pad_id)
        for row, i in enumerate(idx):
            answers[i] = tokenizer.decode(out[row, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return answers

"""Merge a LoRA adapter into a full copy of its base model (for --merge and the GGUF export), and free memory
between the big steps."""

from __future__ import annotations

from pathlib import Path

import torch

from .models import load_model
from .recipe import Recipe


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def merge_adapter(recipe: Recipe, adapter_dir: Path, target: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Merge LoRA weights into a 16/32-bit copy of the base model (never into 4-bit weights), on the CPU:
    merging is plain tensor arithmetic and needs no GPU memory."""
    from peft import PeftModel

    base = load_model(recipe.model, "hf", recipe.train.max_seq_length, on_cpu=True, dtype=dtype)
    merged = PeftModel.from_pretrained(base.model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(target)
    base.tokenizer.save_pretrained(target)
    return target

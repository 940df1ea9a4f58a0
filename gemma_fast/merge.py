"""Merge a LoRA adapter into a full copy of its base model (for --merge and the GGUF export), and free memory
between the big steps.

A merged folder says what it was made from (MERGED_FILE: the adapter's and the base's content digests), so the
GGUF export reuses <run>/merged only when it is this adapter merged into this base (merged_mismatch)."""

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
    merging is plain tensor arithmetic and needs no GPU memory. Written to <target>.partial with MERGED_FILE, then
    moved into place: `target` is either the complete merge or what it was before."""
    import shutil

    from peft import PeftModel

    from .io import write_json, writing

    target = Path(target)
    partial = target.with_name(f"{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        base = load_model(recipe.model, "hf", recipe.train.max_seq_length, on_cpu=True, dtype=dtype)
        merged = PeftModel.from_pretrained(base.model, str(adapter_dir)).merge_and_unload()
        with writing(partial):  # a full disk is an OSError naming the folder, also from safetensors
            merged.save_pretrained(partial)
            base.tokenizer.save_pretrained(partial)
            write_json(partial / MERGED_FILE, made_from(adapter_dir, recipe.model, dtype))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if target.exists():  # an earlier merge of this run (--merge again): replaced only now that the new one is complete
        shutil.rmtree(target)
    partial.rename(target)
    return target


MERGED_FILE = "gemma_fast_merged.json"


def made_from(adapter_dir: Path, base_spec: str, dtype: torch.dtype | None = None) -> dict:
    from .identity import base_identity, folder_sha256

    return {"adapter_sha256": folder_sha256(Path(adapter_dir)), "base": base_identity(base_spec),
            **({"dtype": str(dtype).removeprefix("torch.")} if dtype is not None else {})}


def merged_mismatch(merged: Path, adapter_dir: Path, base_spec: str) -> str | None:
    """Why `merged` is not `adapter_dir` merged into `base_spec` (by content), or None when it is."""
    import json

    from .identity import folder_sha256, same_base

    try:
        record = json.loads((Path(merged) / MERGED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("base"), dict):
        return f"it has no readable {MERGED_FILE} saying what it was made from"
    if record.get("adapter_sha256") != folder_sha256(Path(adapter_dir)):
        return f"it was made from another adapter than {adapter_dir} (retrained since?)"
    if not same_base(record["base"], base_spec):
        return f"it was made from the base '{record['base'].get('name')}', not '{base_spec}'"
    return None

"""Merge a LoRA adapter into a full copy of its base model (the `merged` export, and the float32 copy the exports
that read a merged model get: merged_for_export), and free memory between the big steps.

A merged folder says what it was made from (MERGED_FILE: the adapter's and the base's content digests), so an
export reuses <run>/merged only when it is this adapter merged into this base (merged_mismatch)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import UserError
from ..models.loader import load_model
from ..recipe import Recipe

log = logging.getLogger(__name__)


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

    from ..io import write_json, writing

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
    from ..identity import base_identity, folder_sha256

    return {"adapter_sha256": folder_sha256(Path(adapter_dir)), "base": base_identity(base_spec),
            **({"dtype": str(dtype).removeprefix("torch.")} if dtype is not None else {})}


def merged_mismatch(merged: Path, adapter_dir: Path, base_spec: str) -> str | None:
    """Why `merged` is not `adapter_dir` merged into `base_spec` (by content), or None when it is."""
    import json

    try:
        record = json.loads((Path(merged) / MERGED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("base"), dict):
        return f"it has no readable {MERGED_FILE} saying what it was made from"
    return made_from_mismatch(record, adapter_dir, base_spec)


def made_from_mismatch(record: dict, adapter_dir: Path, base_spec: str, made: str = "it was made") -> str | None:
    """Why a made_from() record (of a merged folder or an exported GGUF) is not `adapter_dir` on `base_spec`; `made`
    starts the sentence ("it was made", "was exported")."""
    from ..identity import folder_sha256, same_base

    if not isinstance(record, dict) or not isinstance(record.get("base"), dict):
        return "it has no record of what it was made from"
    if record.get("adapter_sha256") != folder_sha256(Path(adapter_dir)):
        return f"{made} from another adapter than {adapter_dir} (retrained since?)"
    if not same_base(record["base"], base_spec):
        return f"{made} from the base '{record['base'].get('name')}', not '{base_spec}'"
    return None


def merged_for_export(recipe: Recipe, run_dir: Path, work: Path, reuse: Path | None = None) -> tuple[Path, bool]:
    """`reuse` (default <run>/merged) when it records being this adapter merged into this base (merged_mismatch, by
    content); else a fresh float32 merge into `work` (True: temporary), `reuse` left as it is."""
    import json
    import shutil

    adapter = run_dir / "adapter"
    weights = next((p for p in (adapter / "adapter_model.safetensors", adapter / "adapter_model.bin") if p.is_file()), None)
    if weights is None:
        raise UserError(f"export: no adapter in {adapter} (train first, or name a finished run with --run)")
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    peft_type = config.get("peft_type", "LORA") if isinstance(config, dict) else "LORA"
    if str(peft_type).upper() != "LORA":
        raise UserError(f"export: {adapter} is a {peft_type} adapter; only LoRA merges into the weights")
    merged = run_dir / "merged" if reuse is None else reuse
    if (merged / "config.json").is_file() and any(merged.glob("*.safetensors")):
        why = merged_mismatch(merged, adapter, recipe.model)
        if why is None:
            return merged, False
        log.warning(f"not exporting {merged}: {why}; merging afresh for the export ({merged} is left as it is)")
    target = work / "merged"
    shutil.rmtree(target, ignore_errors=True)
    log.info(f"merging {adapter} into a float32 copy of {recipe.model} for the export")
    merge_adapter(recipe, adapter, target, torch.float32)
    free_memory()
    return target, True

"""The fine-tuning methods: one entry each, holding every rule that differs between them, so that a stage asks the
method (`method_of(name).merges`) instead of comparing its name. Adding a method is one `Method(...)` entry here plus
its branch in training/run.attach_adapter (the PEFT config it builds); recipe choices, the run plan, checkpoint checks,
exports and the memory estimate follow.

Backends are decided in models/backend.py (BACKENDS); which methods run on which backend is here (`on_unsloth`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class Method:
    name: str
    peft_type: str  # what the adapter's adapter_config.json says (PEFT's PeftType)
    weights_4bit: bool = False  # the base loads in 4-bit NF4 (needs bitsandbytes on CUDA)
    cpu_fallback: str = ""  # the method a machine without CUDA trains instead ("": itself)
    merges: bool = True  # its weights fold into the base: --merge, --gguf, merged evaluation
    on_unsloth: bool = True  # Unsloth patches LoRA only
    packing: bool = True  # packed rows allowed
    checkpointing: bool = True  # runs with gradient checkpointing (PEFT drops the prefix cache under it)
    padding_free: bool = True  # padding-free rows (a prefix cache needs padded batches)
    why_not: str = ""  # one phrase saying why the refused combinations are refused


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("lora", "LORA"),
    Method("qlora", "LORA", weights_4bit=True, cpu_fallback="lora"),
    Method("prefix", "PREFIX_TUNING", merges=False, on_unsloth=False, packing=False, checkpointing=False,
           padding_free=False, why_not="a prefix-tuning adapter has no weights to merge into the model"),
]}


def method_of(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown train.method '{name}'; valid: {', '.join(METHODS)}")
    return METHODS[name]

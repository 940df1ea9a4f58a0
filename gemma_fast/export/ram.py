"""The CPU RAM the exports need (--merge, --gguf and its round trip), checked before training and by the export stage,
and the export stage run in a fresh process after training.

Why a fresh process: Unsloth patches the Gemma classes themselves (GemmaForCausalLM.forward, GemmaDecoderLayer.forward,
...), so a CPU forward in the training process reaches its Triton kernels, which have no CPU path; a new Python that
never imports Unsloth runs stock transformers. Why a RAM check first: the merge holds the whole base in RAM, the GGUF
export merges in float32, and its round trip holds two float32 copies at once (the merged reference and the GGUF read
back), about 66 GiB for gemma-7b. A Colab kernel killed for memory after an hour of training says nothing; this says
the number before the hour starts, with the command that exports the finished run on a bigger machine.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from ..errors import UserError
from ..families import family_of_config
from ..models.loader import load_config, resolve_model, text_only

GIB = 2**30
PROCESS = 2 * GIB  # the export process itself: Python, torch, transformers, the tokenizer, safetensors buffers
MEMINFO = Path("/proc/meminfo")


def available_ram(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable in bytes (what the kernel can hand out without swapping), or None where it cannot be read."""
    try:
        for line in meminfo.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def base_parameters(spec: str) -> int:
    """The base model's parameter count, built from its config on the meta device (no weights, no memory); a
    multimodal checkpoint counts its language model, the part that is loaded, merged and exported."""
    from transformers import AutoModelForCausalLM

    config = load_config(spec, resolve_model(spec))
    config = text_only(config, family_of_config(config, f"model '{spec}'")) or config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def merge_bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def needed(params: int, merge: bool, merge_dtype: torch.dtype, gguf: bool, roundtrip: int) -> dict[str, int]:
    """Peak RAM of each export step, in bytes (they run one after the other, so the peak is the largest)."""
    steps = {}
    if merge:
        steps["--merge"] = params * merge_bytes(merge_dtype) + PROCESS
    if gguf:  # float32 merge; the round trip adds the GGUF read back in float32 beside the merged reference
        steps["--gguf"] = params * 4 * (2 if roundtrip > 0 else 1) + PROCESS
    return steps


def export_command(recipe_path: Path, run_dir: Path, merge: bool, gguf: str, roundtrip: int,
                   merge_dtype: torch.dtype = torch.float32, to: str = "", out: Path | None = None,
                   overrides: list[str] = ()) -> list[str]:
    """The export stage's command for a finished run (what train() runs after training, and what a user runs later):
    `python -m gemma_fast.cli.export`, which is `gemma-fast export`."""
    command = [sys.executable, "-m", "gemma_fast.cli.export", "--recipe", str(recipe_path), "--run", str(run_dir)]
    command += [arg for item in overrides for arg in ("--set", item)] + (["--out", str(out)] if out is not None else [])
    if merge:
        command += ["--merge"] + (["--merge-dtype", "bfloat16"] if merge_dtype == torch.bfloat16 else [])
    if gguf:
        command += ["--gguf", gguf]
    if to:
        command += ["--to", to]
    if gguf or to:
        command += ["--roundtrip", str(roundtrip)]
    return command


def check_export_ram(spec: str, merge: bool, gguf: str, roundtrip: int, merge_dtype: torch.dtype, later: list[str],
                     available: int | None = None, before_training: bool = True) -> int | None:
    """Refuse, naming the numbers, when the exports need more RAM than is available; `later` is the export stage's
    command for a bigger machine. Returns the estimated peak in bytes (None: nothing to export)."""
    if not merge and not gguf:
        return None
    params = base_parameters(spec)
    steps = needed(params, merge, merge_dtype, bool(gguf), roundtrip)
    peak = max(steps.values())
    available = available_ram() if available is None else available
    if available is None or peak <= available:
        return peak
    worst = max(steps, key=steps.get)
    lighter = ""
    if gguf and roundtrip > 0:
        lighter = f"; --roundtrip 0 (no check of the files) needs about {needed(params, merge, merge_dtype, True, 0)['--gguf'] / GIB:.0f} GiB"
    raise UserError(
        f"{worst} needs about {peak / GIB:.0f} GiB of CPU RAM for {params / 1e9:.2f} B parameters "
        f"({_how(worst, merge_dtype, roundtrip)}), and this machine has {available / GIB:.1f} GiB available "
        f"(MemAvailable); {'nothing was trained. Train without it, then' if before_training else 'nothing was exported;'} "
        f"export on a machine with more RAM: {shlex.join(later)}{lighter}")


def _how(step: str, merge_dtype: torch.dtype, roundtrip: int) -> str:
    if step == "--merge":
        return f"the base merged in {str(merge_dtype).removeprefix('torch.')}"
    return "a float32 merge" + (" plus the round trip's second float32 copy" if roundtrip > 0 else "")


def run_export_process(command: list[str], run_dir: Path) -> None:
    """Run the exports in a fresh Python (its output streams through); a failure is one line with the retry command."""
    import gemma_fast

    root = str(Path(gemma_fast.__file__).resolve().parents[1])  # the child imports this same gemma_fast
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    code = subprocess.run(command, env=env).returncode
    if code != 0:
        raise UserError(f"the exports failed in their own process (exit {code}; its error is above); the trained run in "
                        f"{run_dir} is complete: retry them with {shlex.join(command)}")

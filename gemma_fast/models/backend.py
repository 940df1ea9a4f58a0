"""Which backend and dtype a run uses, decided once, before transformers, peft or trl are imported.

`auto` is Unsloth wherever it imports (its CPU backend included, from 2026.10.9), else transformers + peft.
Unsloth patches transformers, peft and trl as it is imported, so it must be imported first: resolve_backend
imports it, and nothing in gemma_fast imports those three at module level before a plan is made.
bf16 only where the GPU computes it natively (compute capability 8.0+): torch.cuda.is_bf16_supported() also
says True on a T4 or V100, through slow emulation.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import torch

from ..errors import UserError

BACKENDS = ("auto", "unsloth", "hf")
_unsloth_failure: list[str] = []  # why `import unsloth` failed, remembered: a second try would fail the same way


def import_unsloth() -> str | None:
    """Import Unsloth once; None when it is imported, else one line saying why it is not."""
    if "unsloth" in sys.modules:
        return None
    if _unsloth_failure:
        return _unsloth_failure[0]
    if importlib.util.find_spec("unsloth") is None:
        _unsloth_failure.append("Unsloth is not installed")
        return _unsloth_failure[0]
    try:
        import unsloth  # noqa: F401  (its patches are the point)
    except Exception as exc:  # ImportError, NotImplementedError ("needs a GPU" before 2026.10.9), a torchvision mismatch...
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _unsloth_failure.append(f"Unsloth failed to import ({type(exc).__name__}: {first})")
        return _unsloth_failure[0]
    return None


def resolve_backend(requested: str, unsloth_imports: bool | None = None, cuda: bool = False) -> tuple[str, list[str]]:
    """("unsloth" | "hf", notes). `unsloth_imports` None means: try the import now (tests pass True/False)."""
    if requested not in BACKENDS:
        raise UserError(f"unknown backend '{requested}'; valid: {', '.join(BACKENDS)}")
    if requested == "hf":
        return "hf", []
    failure = import_unsloth() if unsloth_imports is None else (None if unsloth_imports else "Unsloth is not installed")
    if failure is None:
        return "unsloth", []
    if requested == "unsloth":
        raise UserError(f"backend=unsloth: {failure}; pip install -r requirements-gpu.txt, or set backend=auto or hf")
    if failure != "Unsloth is not installed":
        return "hf", [f"{failure}; this run uses transformers + peft instead"]
    if cuda:
        return "hf", ["Unsloth is not installed, so this GPU run uses transformers + peft (pip install -r requirements-gpu.txt)"]
    return "hf", []


def native_bf16(capability: tuple[int, int] | None = None) -> bool:
    """bf16 in hardware: Ampere (8.0) and newer. T4 (7.5) and V100 (7.0) only emulate it."""
    if capability is None:
        if not torch.cuda.is_available():
            return False
        capability = torch.cuda.get_device_capability()
    return tuple(capability) >= (8, 0)


def select_dtype(backend: str, cuda: bool, bf16_native: bool) -> torch.dtype:
    """The dtype asked for at load. Gemma's activations overflow fp16, so on T4/V100 the plain path trains in fp32;
    Unsloth gets fp16: it trains Gemma 1/2 in fp16, and for Gemma 3/3n/4 its trainer turns AMP off and trains in
    float32 ("forced float32"; train_summary.json records unsloth_forced_float32)."""
    if not cuda:
        return torch.float32
    if bf16_native:
        return torch.bfloat16
    return torch.float16 if backend == "unsloth" else torch.float32


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively


def cpu_bf16_native(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (Intel AMX or AVX512-BF16). Elsewhere bf16 is emulated: slower."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def cpu_precision(bf16_native: bool | None = None) -> str:
    """How a CPU run on the transformers + peft path computes: "float32" unless GEMMA_FAST_CPU_PRECISION=bf16-autocast
    (float32 weights, bf16 matmuls), which needs a CPU with native bf16. Decided by measurement (docs/benchmarks.md,
    2-core Xeon with AMX, padding-free batches): over the quickstart run float32 trains 1.18x faster than autocast;
    on Kaggle docs shapes autocast is 1.05x faster. Short rows pay autocast's casts for little bf16 matmul work."""
    forced = os.environ.get("GEMMA_FAST_CPU_PRECISION", "") or "float32"
    if forced not in ("float32", "bf16-autocast"):
        raise UserError(f"GEMMA_FAST_CPU_PRECISION={forced}: valid values are float32 and bf16-autocast")
    if forced == "bf16-autocast" and not (cpu_bf16_native() if bf16_native is None else bf16_native):
        raise UserError("GEMMA_FAST_CPU_PRECISION=bf16-autocast: this CPU has no native bf16 (amx_bf16 or avx512_bf16), "
                        "so bf16 would be emulated and slower; use float32")
    return forced


def model_dtype(model) -> torch.dtype:
    """The dtype the model really computes in, whatever was asked for (Unsloth may change it)."""
    return model.get_input_embeddings().weight.dtype


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))  # set by accelerate / torchrun for each process


def check_gpu_setup(training: bool = True, on_cpu: bool = False) -> None:
    """Refuse to fall back to the CPU silently when a GPU is there but this torch cannot use it, and refuse
    several GPUs without a launcher (TRL does not support nn.DataParallel). Work that stays on the CPU (merging)
    is never refused for the GPUs it does not use; stages that are not training (evaluate, chat, robustness) are
    not DDP-aware, so they are told to pick one GPU rather than to use accelerate."""
    if on_cpu:
        return
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if count > 1 and "LOCAL_RANK" not in os.environ:
            if training:
                raise UserError(f"{count} GPUs are visible: run with `accelerate launch --num_processes {count} "
                                "scripts/train_qlora.py ...`, or pick one with CUDA_VISIBLE_DEVICES=0")
            raise UserError(f"{count} GPUs are visible and this stage uses one (it is not multi-process aware: two "
                            "processes would write the same files): run it with CUDA_VISIBLE_DEVICES=0")
        return
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not shutil.which("nvidia-smi"):
        return  # no GPU, or the user hid it on purpose
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return
    if listed.startswith("GPU"):
        raise UserError(f"nvidia-smi lists {listed.splitlines()[0]!r}, but torch {torch.__version__} (CUDA {torch.version.cuda}) "
                        "cannot use it: usually a driver older than this torch build needs (CUDA 13 builds need driver 580+). "
                        "Install a torch built for your driver (README, GPU install), or set CUDA_VISIBLE_DEVICES= to train on the CPU")

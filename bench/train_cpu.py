#!/usr/bin/env python3
"""CPU training throughput and peak memory: LoRA on the embedded Gemma 3 270M, quickstart data.

Each configuration runs in its own process (peak RSS is per process), N optimizer steps of batch 8.
Usage: .venv/bin/python bench/train_cpu.py [--steps 10]
Prints a table and writes bench/results/train_cpu.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402
CONFIGS = {  # name -> recipe overrides
    "lora r=16, all linear": [],
    "lora r=16, all linear, gradient checkpointing": ["train.gradient_checkpointing=true"],
    "lora r=64, all linear": ["lora.r=64", "lora.alpha=128"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    py, work = sys.executable, Path(tempfile.mkdtemp(prefix="train_bench_"))
    subprocess.run([py, "scripts/prepare_data.py", "--recipe", "quickstart", "--out", str(work / "data")], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    results = []
    for name, overrides in CONFIGS.items():
        out = work / f"run{len(results)}"
        sets = [f"data.dir={work / 'data'}", f"train.max_steps={args.steps}", "train.batch_size=8", *overrides]
        cmd = [py, "scripts/train_qlora.py", "--recipe", "quickstart", "--out", str(out)] + [a for s in sets for a in ("--set", s)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((out / "train_summary.json").read_text())
        results.append({"config": name, "steps": summary["steps"], "tokens_per_s": summary["tokens_per_s"],
                        "peak_memory_mb": summary["peak_memory_mb"], "train_seconds": summary["train_seconds"],
                        "trainable_parameters": summary["trainable_parameters"]})
        print(f"{name:48s} {summary['tokens_per_s']:7.1f} tok/s  peak {summary['peak_memory_mb']:8.0f} MB", flush=True)
    save("train_cpu", stamp(model="embedded:gemma-3-270m (float32)", batch_size=8, results=results))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Times each stage of the quickstart pipeline (what `make demo` runs), after install.

Usage: .venv/bin/python bench/demo_pipeline.py [--cold]
  --cold  use an empty model cache, so the one-time GGUF -> safetensors conversion is included
Writes bench/results/demo_pipeline.json and prints a table.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402
RUN = "runs/quickstart/bench"
STAGES = [
    ("prepare", ["scripts/prepare_data.py", "--recipe", "quickstart"]),
    ("train", ["scripts/train_qlora.py", "--recipe", "quickstart", "--out", RUN, "--overwrite"]),
    ("evaluate", ["scripts/evaluate.py", "--recipe", "quickstart", "--adapter", RUN, "--compare", "base"]),
]


def main() -> None:
    cold = "--cold" in sys.argv[1:]
    env = dict(os.environ)
    if cold:
        env["GEMMA_FAST_CACHE"] = tempfile.mkdtemp(prefix="gemma_fast_cold_")
    seconds = {}
    for name, cmd in STAGES:
        start = time.perf_counter()
        subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name:9s} {seconds[name]:7.1f} s", flush=True)
    seconds["total"] = round(sum(seconds.values()), 1)
    print(f"{'total':9s} {seconds['total']:7.1f} s")
    result = stamp(**{
        "model_cache": "cold" if cold else "warm", "seconds": seconds,
        "metrics": {model: {k: round(v["overall"][k]["mean"], 4) for k in ("answer_loss", "perplexity", "rougeL")}
                    for model, v in json.loads((ROOT / RUN / "eval" / "metrics.json").read_text())["models"].items()},
    })
    save(f"demo_pipeline_{result['model_cache']}", result)


if __name__ == "__main__":
    main()

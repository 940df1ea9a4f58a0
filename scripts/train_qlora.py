#!/usr/bin/env python3
"""Fine-tune a Gemma model with LoRA (QLoRA on a CUDA GPU) on a prepared recipe; writes runs/<recipe>/<run>/.

Uses Unsloth's kernels when a CUDA GPU and Unsloth are available (backend=auto), else transformers + peft + TRL.
Examples:
  python scripts/train_qlora.py --recipe quickstart --out runs/quickstart/demo
  python scripts/train_qlora.py --recipe kaggle_docs --set train.max_steps=20 --set model=embedded:gemma-3-270m
"""

import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not scripts/

from gemma_fast import cli  # noqa: E402


def main() -> None:
    args = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:])).parse_args()
    recipe = cli.recipe_from_args(args)
    from gemma_fast.report import console, table
    from gemma_fast.train import train

    out_dir = Path(args.out) if args.out else Path("runs") / recipe.name / time.strftime("%Y%m%d-%H%M%S")
    summary = train(recipe, out_dir, cli.console)
    keys = ["backend", "method", "dtype", "train_records", "steps", "first_loss", "final_loss", "tokens_per_s", "peak_memory_mb", "train_seconds"]
    console.print(table(f"trained {recipe.name} -> {out_dir}", ["", "value"], [(k, summary[k]) for k in keys]))


if __name__ == "__main__":
    cli.run(main)

#!/usr/bin/env python3
"""Evaluate a model on a prepared split: answer-token loss, perplexity, ROUGE-L; base vs fine-tuned side by side.

Writes predictions.jsonl, metrics.json and metrics.png to --out (default: <adapter run>/eval).
Examples:
  python scripts/evaluate.py --recipe quickstart --adapter runs/quickstart/demo
  python scripts/evaluate.py --recipe quickstart            # the base model alone
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not scripts/ (this file would shadow the evaluate library)

from gemma_fast import cli  # noqa: E402


def main() -> None:
    p = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--adapter", default=None, metavar="DIR", help="a training run folder or its adapter/ folder")
    args = p.parse_args()
    recipe = cli.recipe_from_args(args)
    from gemma_fast.evaluation import evaluate
    from gemma_fast.report import console, table

    adapter = Path(args.adapter) if args.adapter else None
    out_dir = Path(args.out) if args.out else (adapter / "eval" if adapter else Path("runs") / recipe.name / "base-eval")
    summary = evaluate(recipe, adapter, out_dir)
    names = list(next(iter(summary["metrics"].values())))
    rows = [(model, *(m[n] for n in names)) for model, m in summary["metrics"].items()]
    console.print(table(f"{recipe.name}: {summary['examples']} {summary['split']} examples -> {out_dir}", ["model", *names], rows))


if __name__ == "__main__":
    cli.run(main)

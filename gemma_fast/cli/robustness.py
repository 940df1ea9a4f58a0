"""Robustness suite: how much do perturbed questions (language, noise, wording, context) cost a model?

Runs the same model and metrics as evaluate.py on the clean test split and on each perturbed copy, with paired
95% bootstrap intervals for every delta, and a robustness score (mean relative drop of robustness.metric).
Writes robustness.json, report.md and robustness.png to --out (default: <adapter run>/robustness).
Examples:
  python scripts/robustness.py --list
  python scripts/robustness.py --recipe quickstart --adapter runs/quickstart/demo
  python scripts/robustness.py --recipe chinese_poetry --adapter runs/chinese_poetry/r1 --perturb s2t --perturb typos:0.1+casing
"""

import sys
from pathlib import Path

from gemma_fast.cli import common as cli


def main() -> None:
    if "--list" in sys.argv[1:]:
        from gemma_fast.evaluation.perturb import REGISTRY
        from gemma_fast.report import console, table

        rows = [(p.name, "" if p.default_rate is None else p.default_rate, p.description) for p in REGISTRY.values()]
        console.print(table("perturbations (compose with +, set a rate with name:p)", ["name", "default rate", "what it does"], rows))
        return
    p = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--list", action="store_true", help="list the perturbations and exit")
    cli.model_source(p)
    cli.overwrite_flag(p, "the robustness report")
    p.add_argument("--perturb", action="append", default=[], metavar="SPEC", help="a perturbation spec (repeatable); default: the recipe's list")
    args = p.parse_args()
    recipe = cli.recipe_from_args(args)
    from gemma_fast.evaluation.report import console, robustness_rows, table
    from gemma_fast.evaluation.robustness import run

    adapter, merged = (Path(x) if x else None for x in (args.adapter, args.model))
    out_dir = Path(args.out) if args.out else recipe.default_out("robustness", adapter or merged)
    summary = run(recipe, out_dir, adapter, merged, args.perturb or None, overwrite=args.overwrite)
    score = summary["robustness_score"]["mean_relative_drop"]
    console.print(table(f"{recipe.name}: robustness on {summary['examples']} examples -> {out_dir}",
                        ["perturbation", summary["metric"], "Δ vs clean [95% CI]", "relative drop"], robustness_rows(summary)))
    console.print(f"robustness score (mean relative drop in {summary['metric']}): {100 * (score or 0):.1f}%")


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()

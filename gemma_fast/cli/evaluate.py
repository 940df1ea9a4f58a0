"""Evaluate a model on a prepared split with offline, language-aware metrics and 95% bootstrap intervals.

Metrics: answer-token loss, perplexity, token accuracy, BLEU, chrF, ROUGE-1/2/L, METEOR, BERTScore (English),
exact match, yes/no accuracy; per language; with --compare base, a paired comparison against the base model.
Writes predictions.jsonl, metrics.json, report.md and metrics.png to --out (default: <adapter run>/eval).
Generation is batched and resumable: rerunning after a crash skips the questions already answered.
Examples:
  python scripts/evaluate.py --recipe quickstart --adapter runs/quickstart/demo --compare base
  python scripts/evaluate.py --recipe quickstart --model runs/quickstart/demo/merged --compare base
  python scripts/evaluate.py --recipe quickstart                                # the base model alone
  python scripts/evaluate.py --recipe quickstart --predictions my_preds.jsonl   # score {id, prediction} lines
"""

from pathlib import Path

from gemma_fast.cli import common as cli


def main() -> None:
    p = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:]))
    source = cli.model_source(p)
    source.add_argument("--predictions", default=None, metavar="FILE", help="score a JSONL of {id, prediction}; no model runs")
    p.add_argument("--compare", choices=["base"], default=None, help="also run the recipe's base model on the same prompts")
    cli.overwrite_flag(p, "the evaluation")
    args = p.parse_args()
    recipe = cli.recipe_from_args(args)
    from gemma_fast.evaluation.run import evaluate, score_file
    from gemma_fast.evaluation.metrics import headline_names
    from gemma_fast.evaluation.report import console, metric_rows, table

    adapter, merged = (Path(x) if x else None for x in (args.adapter, args.model))
    out_dir = Path(args.out) if args.out else recipe.default_out("eval", adapter or merged)
    if args.predictions:
        summary = score_file(recipe, Path(args.predictions), out_dir, overwrite=args.overwrite)
    else:
        summary = evaluate(recipe, out_dir, adapter, merged, compare_base=bool(args.compare), overwrite=args.overwrite)
    header = ["metric", *summary["models"]] + (["fine-tuned − base"] if summary["comparison"] else [])
    console.print(table(f"{recipe.name}: {summary['examples']} {summary['split']} examples, mean [95% CI] -> {out_dir}",
                        header, metric_rows(summary, headline_names())))


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()

"""Prepare a recipe's dataset: load, clean, de-duplicate, filter and split into data/<recipe>/.

Writes {train,val,test}.jsonl in one schema {id, instruction, input, output, lang, source}, prep_report.json
(records in, kept per split, drops by reason, token lengths, test duplicates dropped, test passages also in
training, context dropout, mixed-in records) and the resolved recipe.yaml.
Examples:
  python scripts/prepare_data.py --recipe quickstart
  python scripts/prepare_data.py --recipe kaggle_docs \
      --set data.source=../shared/data/kaggle_docs/kaggle_docs_QA_v3.json \
      --set data.test_source=../shared/data/kaggle_docs/kaggle_docs_QA_v2.json
  python scripts/prepare_data.py --recipe chinese_poetry --set data.on_bad_record=skip
"""

from pathlib import Path

from gemma_fast.cli import common as cli


def main() -> None:
    p = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:]))
    cli.overwrite_flag(p, "the splits")
    args = p.parse_args()
    recipe = cli.recipe_from_args(args)
    from gemma_fast.data.pipeline import SPLITS, prepare
    from gemma_fast.report import console, table

    out_dir = Path(args.out) if args.out else recipe.default_out("prepare")
    with cli.console.status(f"preparing {recipe.data.source}"):
        report = prepare(recipe, out_dir, overwrite=args.overwrite)
    rows = []
    for name in SPLITS:
        tokens = report["tokens"][name] or {}
        langs = ", ".join(f"{k}={v}" for k, v in report["languages"][name].items())
        rows.append((name, report["kept"][name], tokens.get("mean", "-"), tokens.get("p95", "-"), langs))
    console.print(table(f"{recipe.name}: {report['records_in']} records in -> {out_dir}",
                        ["split", "records", "mean tokens", "p95 tokens", "languages"], rows))
    if report["dropped"]:
        console.print(table("dropped", ["reason", "records"], sorted(report["dropped"].items())))
    for line in notes(report):
        console.print(line)
    console.print(f"report: {out_dir / 'prep_report.json'}")


def notes(report: dict) -> list[str]:
    """One line per thing worth a look in prep_report.json."""
    lines = []
    overlaps = report["overlaps_test"]
    if overlaps["count"]:
        shown = list(overlaps["ids"])[:3]
        more = ", …" if overlaps["count"] > len(shown) else ""
        lines.append(f"dropped as test duplicates: {overlaps['count']} ({', '.join(shown)}{more}; ids in the report)")
    inside = report["test_passages_in_train"]
    if inside["count"]:
        lines.append(f"test records whose passage is also in training: {inside['count']} of {report['kept']['test']} "
                     f"({inside['equal']} equal, {inside['contained']} inside a longer one; kept, examples in the report)")
    if report["context_dropout"]["train"]:
        lines.append(f"context dropout: {report['context_dropout']['train']} train records shown without their passage "
                     "(kept in dropped_context)")
    mix = report["mix"]
    if mix:
        short = f", fewer than the {mix['wanted']} asked for" if mix["train"] < mix["wanted"] else ""
        lines.append(f"mixed in from {mix['source']}: {mix['train']} train records ({mix['train_share']:.0%}{short})")
    return lines


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()

#!/usr/bin/env python3
"""Prepare a recipe's dataset: load, validate, split into data/<recipe>/{train,val,test}.jsonl + prep_report.json.

Examples:
  python scripts/prepare_data.py --recipe quickstart
  python scripts/prepare_data.py --recipe kaggle_docs --set data.source=../shared/data/kaggle_docs/kaggle_docs_QA_v3.json
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not scripts/ (scripts/evaluate.py would shadow the evaluate library)

from gemma_fast import cli  # noqa: E402


def main() -> None:
    args = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:])).parse_args()
    recipe = cli.recipe_from_args(args)
    from gemma_fast.data import prepare
    from gemma_fast.report import console, table

    out_dir = Path(args.out) if args.out else recipe.data_dir
    recipe.data.dir = str(out_dir)
    report = prepare(recipe, out_dir)
    rows = [(name, n, ", ".join(f"{k}={v}" for k, v in report["languages"][name].items())) for name, n in report["splits"].items()]
    console.print(table(f"prepared {report['source']} -> {out_dir}", ["split", "records", "languages"], rows))
    console.print(f"records in: {report['records_in']}; report: {out_dir / 'prep_report.json'}")


if __name__ == "__main__":
    cli.run(main)

#!/usr/bin/env python3
"""Preparation throughput: a 15,000-record Dolly-shaped synthetic file through the dolly recipe's whole pipeline
(adapter, cleaning, exact + normalised de-duplication, token-length filter with the embedded Gemma tokenizer,
seeded subset, split, writing). The tokenizer is loaded before the clock starts.

Usage: .venv/bin/python bench/prepare_throughput.py [--records 15000]
Prints a table and writes bench/results/prepare_throughput.json.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402

WORDS = ("the model data answer question kaggle gemma notebook competition dataset training loss adapter "
         "token context response category summary python file score leaderboard submission kernel").split()


def synthetic_dolly(n: int, seed: int = 0) -> list[dict]:
    """Lengths roughly like Dolly 15k: short instructions, optional context, answers of a few sentences."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    cats = ["open_qa", "closed_qa", "summarization", "brainstorming", "information_extraction"]
    return [{"instruction": text(5, 20), "context": text(20, 120) if rng.random() < 0.3 else "",
             "response": text(10, 90), "category": rng.choice(cats)} for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=15_000)
    args = parser.parse_args()
    from gemma_fast.data.pipeline import prepare
    from gemma_fast.models.loader import load_tokenizer
    from gemma_fast.recipe import load_recipe

    work = Path(tempfile.mkdtemp(prefix="prep_bench_"))
    source = work / "dolly_synthetic.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in synthetic_dolly(args.records)), encoding="utf-8")
    recipe = load_recipe("dolly", [f"data.source={source}", "model=embedded:gemma-3-270m"])
    tokenizer = load_tokenizer(recipe.model, recipe.prompt.system)[1]  # excluded from the timing: the prompt format
    start = time.perf_counter()
    report = prepare(recipe, work / "out", tokenizer)
    seconds = time.perf_counter() - start
    result = stamp(records=args.records, seconds=round(seconds, 2), records_per_s=round(args.records / seconds),
                   kept=report["kept"], dropped=report["dropped"])
    print(json.dumps(result, indent=2))
    save("prepare_throughput", result)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Evaluation's generation on each runtime, side by side in one process: a run's adapter on transformers (batched, as
`evaluate --adapter RUN` generates today) against the run's GGUF files on llama.cpp (one prompt at a time).

Both through generation.py's one interface, with the run's eval settings (greedy; --max-new-tokens overrides); the
prompts are the run's eval split (the quickstart test split for a quickstart run, via evaluation.load_eval_records)
and the first N Kaggle docs v2 test records (with context) when shared/data is present. Before each runtime is timed
it answers two prompts untimed (first-shape allocations). Reports questions/s, answer tokens/s (the answers'
re-tokenised length) and the share of answers identical to transformers', per prompt set; load average before and
after each timing, because this machine is shared.
Usage: .venv/bin/python bench/eval_runtimes.py --run RUN [--types q8_0,f16] [--kaggle 48] [--max-new-tokens N]
Run it where the run's data was prepared (its recipe's data.dir). Prints a table; writes bench/results/eval_runtimes.json.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import load_average, save, shared_file, stamp  # noqa: E402
KAGGLE_TEST = shared_file("data", "kaggle_docs", "kaggle_docs_QA_v2.json")


def prompt_sets(recipe, n_kaggle: int) -> dict[str, list[dict]]:
    from gemma_fast.evaluation.run import load_eval_records
    from gemma_fast.io import read_json

    sets = {f"{recipe.name} {recipe.eval.split}": load_eval_records(recipe)}
    if n_kaggle and KAGGLE_TEST.is_file():
        rows = read_json(KAGGLE_TEST)[:n_kaggle]
        sets[f"kaggle v2 (first {len(rows)})"] = [{"id": f"k{i}", "instruction": r["instruction"], "input": r.get("input") or "",
                                                   "output": r["output"]} for i, r in enumerate(rows)]
    return sets


def timed(generator, records: list[dict], settings) -> dict:
    from gemma_fast.prompts import Segment

    fmt = generator.prompts
    prompts = [fmt.record_prompt(r) for r in records]
    generator.generate(prompts[:2], settings)  # warm-up, untimed
    before = load_average()
    start = time.perf_counter()
    answers = generator.generate(prompts, settings)
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) for ids in fmt.encode_many([[Segment(a, False)] for a in answers]))
    return {"questions": len(prompts), "seconds": round(seconds, 1), "questions_per_s": round(len(prompts) / seconds, 3),
            "answer_tokens": tokens, "answer_tokens_per_s": round(tokens / seconds, 1), "load_before": before, "load_after": load_average(),
            "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a training run folder with adapter/ and gguf/model-<type>.gguf")
    parser.add_argument("--types", default="q8_0,f16", help="GGUF types to run on llama.cpp")
    parser.add_argument("--kaggle", type=int, default=48, help="Kaggle docs v2 test prompts (0: none)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval.max_new_tokens")
    args = parser.parse_args()
    run = Path(args.run)
    from rich.console import Console

    from gemma_fast.evaluation.run import candidates, prefer_unsloth_first
    from gemma_fast.inference.generation import RUNTIMES, GenerationSettings, Weights
    from gemma_fast.recipe import load_recipe
    from gemma_fast.report import table

    console = Console(stderr=True)
    recipe = load_recipe(str(run / "recipe.yaml"), [f"eval.max_new_tokens={args.max_new_tokens}"] if args.max_new_tokens else [])
    prefer_unsloth_first(recipe)
    settings = GenerationSettings.from_eval(recipe.eval, recipe.seed)
    sets = prompt_sets(recipe, args.kaggle)
    ggufs = {kind: run / "gguf" / f"model-{kind}.gguf" for kind in args.types.split(",") if kind}
    missing = [str(p) for p in ggufs.values() if not p.is_file()]
    if missing:
        sys.exit(f"eval_runtimes: no {', '.join(missing)}: export it first (train_qlora.py --export-only --gguf TYPE)")
    start_load, results = load_average(), {}

    def measure(label: str, open_generator) -> None:
        started = time.perf_counter()
        generator = open_generator()
        load_s = round(time.perf_counter() - started, 1)
        results[label] = {"runtime": generator.runtime, "name": generator.name, "load_s": load_s,
                          **({"backend": generator.backend} if hasattr(generator, "backend") else {}),
                          "sets": {name: timed(generator, records, settings) for name, records in sets.items()}}
        for name, r in results[label]["sets"].items():
            console.print(f"{label:24s} {name:24s} {r['questions_per_s']:6.3f} questions/s  load {r['load_before']} -> {r['load_after']}")

    cand = candidates(recipe, run, None, compare_base=False)[-1]  # the adapter, loaded as evaluation loads it
    measure("transformers (adapter)", lambda: cand.generator)
    cand.release()
    for kind, path in ggufs.items():
        measure(f"llama.cpp ({kind})", lambda: RUNTIMES["llama.cpp"](Weights(gguf=path, system=recipe.prompt.system)))

    reference = results["transformers (adapter)"]["sets"]
    rows = []
    for label, result in results.items():
        for name, r in result["sets"].items():
            same = sum(a == b for a, b in zip(r["answers"], reference[name]["answers"]))
            r["identical_to_transformers"] = same
            rows.append([label, name, str(r["questions"]), f"{r['seconds']:.1f}", f"{r['questions_per_s']:.3f}",
                         f"{r['answer_tokens_per_s']:.1f}", f"{same}/{r['questions']} ({same / r['questions']:.0%})",
                         f"{result['load_s']:.1f}", f"{r['load_before'][0]} -> {r['load_after'][0]}"])
    Console().print(table(f"Evaluation generation by runtime: {recipe.model} + {run.name}, greedy, {settings.max_new_tokens} new tokens",
                          ["runtime", "prompts", "n", "seconds", "questions/s", "answer tokens/s", "identical to transformers",
                           "load s", "load avg"], rows))
    import torch

    save("eval_runtimes", stamp(device=f"CPU, {os.cpu_count()} cores", run=str(run), model=recipe.model, torch_threads=torch.get_num_threads(),
                                max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size, batch_tokens=settings.batch_tokens,
                                load_avg_start=start_load, load_avg_end=load_average(), results=results))


if __name__ == "__main__":
    main()

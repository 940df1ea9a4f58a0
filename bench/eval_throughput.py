#!/usr/bin/env python3
"""Evaluation generation throughput: one question at a time (what the seed project did) vs the batched path.

Same prompts, same greedy decoding and max_new_tokens at every batch size; prompts are the Kaggle docs v2 test
questions when ../shared/data is present (their real length distribution), else the quickstart test split.
Usage: .venv/bin/python bench/eval_throughput.py [--prompts 48] [--batch-sizes 1,8,16] [--max-new-tokens 64]
         [--model embedded:gemma-3-270m]
Prints a table and writes bench/results/eval_throughput.json. On a GPU the same script measures the GPU.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402
KAGGLE_TEST = ROOT.parent / "shared" / "data" / "kaggle_docs" / "kaggle_docs_QA_v2.json"


def load_prompts(n: int) -> tuple[list[str], str]:
    from gemma_fast.io import read_json, read_jsonl
    from gemma_fast.prompts import record_prompt
    from gemma_fast.sources import ASSETS

    if KAGGLE_TEST.is_file():
        rows, source = read_json(KAGGLE_TEST), "kaggle_docs_QA_v2 (first N)"
    else:
        rows, source = read_jsonl(ASSETS / "quickstart_docs_qa.jsonl"), "quickstart (first N)"
    return [record_prompt(r) for r in rows[:n]], source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", default="embedded:gemma-3-270m")
    args = parser.parse_args()
    import torch

    from gemma_fast.generate import generate_batched
    from gemma_fast.models import load_model

    loaded = load_model(args.model, "auto")
    prompts, source = load_prompts(args.prompts)
    generate_batched(loaded.model, loaded.tokenizer, prompts[:2], 2, 4)  # warm-up: first-call allocations stay out
    results = []
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        answers = generate_batched(loaded.model, loaded.tokenizer, prompts, bs, args.max_new_tokens)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        new_tokens = sum(len(loaded.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        results.append({"batch_size": bs, "seconds": round(seconds, 2), "questions_per_s": round(len(prompts) / seconds, 3),
                        "answer_tokens_per_s": round(new_tokens / seconds, 1)})
        print(f"batch {bs:3d}: {results[-1]['questions_per_s']:7.3f} questions/s  {results[-1]['answer_tokens_per_s']:7.1f} answer tokens/s", flush=True)
    for r in results:
        r["speedup_vs_batch_1"] = round(r["questions_per_s"] / results[0]["questions_per_s"], 2)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    save("eval_throughput", stamp(device=device, model=args.model, backend=loaded.backend, dtype=str(loaded.dtype),
                                  prompts=len(prompts), prompt_source=source, max_new_tokens=args.max_new_tokens, results=results))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Evaluation generation throughput: one question at a time (what the seed project did) vs the batched path.

Same prompts, same greedy decoding and max_new_tokens at every batch size; prompts are the Kaggle docs v2 test
questions when shared/data is present (inside the repository, where a device call carries it, else beside it: their
real length distribution), else the quickstart test split; the result names which.
Before each batch size is timed, one full batch generates the full max_new_tokens, so first-shape allocations (and
any compilation for that shape) stay out of the timing. Answer tokens are counted from the generated ids.
Usage: .venv/bin/python bench/eval_throughput.py [--prompts 48] [--batch-sizes 1,8,16] [--max-new-tokens 64]
         [--model embedded:gemma-3-270m | FOLDER] [--backend auto|unsloth|hf] [--load-in-4bit]
FOLDER may be any model folder, e.g. train_throughput.py's random-weight gemma-7b (its stand-in tokenizer is smaller
than the model's vocabulary: random weights generate ids it cannot spell, which decode to nothing; the timing and
token counts come from the ids) or gemma_fast.testing.tiny.save_tiny_model's tiny Gemma, on a GPU machine without internet.
Prints a table and writes bench/results/eval_throughput.json. On a GPU the same script measures the GPU.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, shared_file, stamp  # noqa: E402
KAGGLE_TEST = shared_file("data", "kaggle_docs", "kaggle_docs_QA_v2.json")


def load_prompts(n: int, prompts_format) -> tuple[list, str]:
    """The first n Kaggle v2 test prompts (else quickstart's), written by the model's prompts.PromptFormat."""
    from gemma_fast.io import read_json, read_jsonl
    from gemma_fast.data.sources import ASSETS

    if KAGGLE_TEST.is_file():
        rows, source = read_json(KAGGLE_TEST), "kaggle_docs_QA_v2 (first N)"
    else:
        rows, source = read_jsonl(ASSETS / "quickstart_docs_qa.jsonl"), "quickstart (first N)"
    return [prompts_format.record_prompt(r) for r in rows[:n]], source


def count_new_tokens(new_ids, stop_ids: list[int]) -> int:
    """Generated tokens, each row up to and including its first stop token. `generate` pads a row only after its
    stop token, so this leaves padding out (testing `!= pad` would also drop the stop itself where pad == eos)."""
    import torch

    stops = torch.isin(new_ids, torch.tensor(stop_ids, device=new_ids.device))
    return int((stops.cumsum(1) - stops.long() == 0).sum())


class TokenCounter:
    """Wraps `model.generate` so that every call adds the tokens it generated to `self.tokens`."""

    def __init__(self, model, stop_ids: list[int]):
        self.generate, self.stop_ids, self.tokens = model.generate, stop_ids, 0
        model.generate = self

    def __call__(self, input_ids, **kwargs):
        out = self.generate(input_ids=input_ids, **kwargs)
        self.tokens += count_new_tokens(out[:, input_ids.shape[1]:], self.stop_ids)
        return out


def warm_up(generator, counter: TokenCounter, prompts: list, settings) -> int:
    """One full batch of the longest prompts, generating the full max_new_tokens (no early stop), so the timed run
    meets no new shape. Returns the tokens it generated and leaves the counter at 0."""
    config = generator.model.generation_config
    counter.tokens, config.min_new_tokens = 0, settings.max_new_tokens
    try:
        longest = sorted(prompts, key=lambda p: len(p.text))[-settings.batch_size:]
        generator.generate(longest, settings)
    finally:
        config.min_new_tokens = None
    tokens, counter.tokens = counter.tokens, 0
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", default="embedded:gemma-3-270m")
    parser.add_argument("--backend", default="auto", choices=("auto", "unsloth", "hf"))
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4 weights, as a QLoRA run is evaluated (CUDA)")
    args = parser.parse_args()
    import torch

    from gemma_fast.inference.generation import GenerationSettings, TransformersGenerator
    from gemma_fast.models.loader import load_model

    loaded = load_model(args.model, args.backend, load_in_4bit=args.load_in_4bit)
    generator = TransformersGenerator(loaded.model, loaded.tokenizer, loaded.prompts, args.model, loaded.backend)
    prompts, source = load_prompts(args.prompts, loaded.prompts)
    counter = TokenCounter(loaded.model, loaded.prompts.stop_ids)
    results = []
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        settings = GenerationSettings(args.max_new_tokens, batch_size=bs)  # greedy
        warmup_tokens = warm_up(generator, counter, prompts, settings)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        generator.generate(prompts, settings)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        results.append({"batch_size": bs, "seconds": round(seconds, 2), "questions_per_s": round(len(prompts) / seconds, 3),
                        "answer_tokens": counter.tokens, "answer_tokens_per_s": round(counter.tokens / seconds, 1),
                        "warmup_tokens": warmup_tokens})
        print(f"batch {bs:3d}: {results[-1]['questions_per_s']:7.3f} questions/s  {results[-1]['answer_tokens_per_s']:7.1f} answer tokens/s", flush=True)
    for r in results:
        r["speedup_vs_batch_1"] = round(r["questions_per_s"] / results[0]["questions_per_s"], 2)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    save("eval_throughput", stamp(device=device, model=args.model, backend=loaded.backend, dtype=str(loaded.dtype),
                                  load_in_4bit=args.load_in_4bit,
                                  prompts=len(prompts), prompt_source=source, max_new_tokens=args.max_new_tokens, results=results))


if __name__ == "__main__":
    main()

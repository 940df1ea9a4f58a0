#!/usr/bin/env python3
"""Peak memory of evaluation's answer-token loss (loss, perplexity, token accuracy) on Kaggle-docs-length inputs.

The embedded Gemma 3 270M (float32), the --batch Kaggle docs v3 records with the longest prompts (context
included) that leave at least 24 answer tokens' room, each encoded at --length tokens (truncated there), one answer_token_stats call. Peak memory of that call =
the process's peak RSS after it minus its RSS before it (model loaded, one small warm-up call done). The full-logits
computation it replaced would hold batch × length × 262,144 float32 logits (8.6 GB at 16 × 512) several times over;
it is not run here (it does not fit in this machine's 24 GiB).

Usage: .venv/bin/python bench/eval_memory.py [--batch 16] [--length 512]
Prints the numbers and writes bench/results/eval_memory.json.
"""

import argparse
import json
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "kaggle_docs" / "kaggle_docs_QA_v3.json"


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args()
    from gemma_fast.training.loss import answer_token_stats
    from gemma_fast.models.loader import load_model

    raw = json.loads(DATA.read_text(encoding="utf-8"))
    records = [{"id": str(i), "instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]} for i, r in enumerate(raw)]
    loaded = load_model("embedded:gemma-3-270m", "hf")
    fmt = loaded.prompts
    prompt_lengths = [len(ids) for ids in fmt.encode_many([fmt.record_prompt(r) for r in records])]
    # the longest prompts that still leave room for some answer: every batch row is (near) --length tokens
    chosen = [r for n, r in sorted(zip(prompt_lengths, records), key=lambda x: -x[0]) if n <= args.length - 24][: args.batch]
    lengths = [len(fmt.example(r, args.length)["input_ids"]) for r in chosen]
    answer_tokens = sum(sum(fmt.example(r, args.length)["completion_mask"]) for r in chosen)
    answer_token_stats(loaded.model, fmt, chosen[:1], args.length, batch_size=1)  # warm-up
    before = rss()
    stats = answer_token_stats(loaded.model, fmt, chosen, args.length, batch_size=args.batch)
    extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    vocab = loaded.model.config.get_text_config().vocab_size
    width = max(lengths)
    result = {
        "batch": len(chosen), "padded_length": width, "answer_tokens": answer_tokens, "vocab": vocab,
        "peak_extra_mb": round(extra / 2**20, 1),
        "one_answer_position_of_logits_mb": round(vocab * 4 / 2**20, 2),
        "one_batch_row_of_logits_mb": round(width * vocab * 4 / 2**20, 1),
        "full_batch_logits_mb": round(len(chosen) * width * vocab * 4 / 2**20, 1),
        "mean_answer_loss": round(sum(s["loss_sum"] for s in stats) / max(sum(s["n_tokens"] for s in stats), 1), 4),
    }
    for key, value in result.items():
        print(f"{key:36s} {value}")
    save("eval_memory", stamp(model="embedded:gemma-3-270m (float32)", command=" ".join(sys.argv), **result))


if __name__ == "__main__":
    main()

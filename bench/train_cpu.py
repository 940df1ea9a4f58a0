#!/usr/bin/env python3
"""CPU training, side by side: plain TRL SFTTrainer vs gemma_fast's path, same data, same seed, separate processes.

- `trl`: what a user writes by hand: AutoModelForCausalLM (float32) + peft LoraConfig + TRL SFTTrainer with
  completion_only_loss=True, the recipe's hyperparameters, on the same tokenized records ({input_ids,
  completion_mask} from gemma_fast's prompt builder, so both see identical tokens). TRL 1.16's fused LM head scores
  every position on a CPU (it compacts to the labelled ones only on Triton devices).
- `gemma_fast`: scripts/train_qlora.py as a user runs it: padding-free batches with attention per example
  (varlen.py), head and loss at answer positions only (loss.py), float32 on a CPU (train_summary.json records
  batches, loss_path and cpu_precision).
- `gemma_fast_bf16`: the same with GEMMA_FAST_CPU_PRECISION=bf16-autocast (the bf16 decision's measurement).

LoRA dropout draws its masks on tensors of another shape once batches are padding-free, so with dropout the two
paths' curves differ by dropout noise; `--set lora.dropout=0` shows how closely the computations themselves agree.

Shapes: `quickstart` (the quickstart recipe: ~55-token records, batch 8) and `kaggle_docs` (Kaggle docs QA v3 from
../shared/data, a context passage before each question, max_seq_length 512, batch 8; LoRA r=16 as quickstart,
no accumulation, so a step is one batch). tokens/s = non-padding input tokens / wall time of trainer.train().

Usage: .venv/bin/python bench/train_cpu.py [--shapes quickstart,kaggle_docs] [--paths trl,gemma_fast] [--steps 12,6]
       [--set KEY=VALUE ...]   (recipe overrides for every path, e.g. --set lora.dropout=0)
Prints tokens/s, the ratio and both loss curves per shape; writes bench/results/train_cpu.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import load_average, save, stamp  # noqa: E402

KAGGLE = ROOT.parent / "shared" / "data" / "kaggle_docs"
SHAPES = {  # name -> (recipe, prepare overrides, train overrides)
    "quickstart": ("quickstart", [], []),
    "kaggle_docs": ("kaggle_docs",
                    [f"data.source={KAGGLE / 'kaggle_docs_QA_v3.json'}", f"data.test_source={KAGGLE / 'kaggle_docs_QA_v2.json'}",
                     "model=embedded:gemma-3-270m"],
                    ["model=embedded:gemma-3-270m", "train.method=lora", "lora.r=16", "lora.alpha=32", "lora.dropout=0.05",
                     "train.grad_accum=1", "train.gradient_checkpointing=false", "train.optimizer=adamw_torch"]),
}


def trl_worker(recipe_name: str, sets: list[str], out: Path) -> None:
    """Plain TRL, by hand. Only the data comes from gemma_fast (the same token ids as the other path)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    from gemma_fast.data.pipeline import load_split
    from gemma_fast.models.loader import load_tokenizer, resolve_model
    from gemma_fast.recipe import load_recipe
    from gemma_fast.training.run import tokenize_split

    recipe = load_recipe(recipe_name, sets)
    t, lora = recipe.train, recipe.lora
    path = resolve_model(recipe.model)
    tokenizer, prompts = load_tokenizer(recipe.model, recipe.prompt.system)
    train_ds = tokenize_split(prompts, load_split(recipe.data_dir, "train"), t.max_seq_length)
    set_seed(recipe.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.targets(prompts.family),
                                             task_type="CAUSAL_LM"))
    args = SFTConfig(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, num_train_epochs=t.epochs, max_steps=t.max_steps, optim="adamw_torch",
        logging_steps=t.logging_steps, save_strategy="no", seed=recipe.seed, data_seed=recipe.seed, use_cpu=True,
        completion_only_loss=True, max_length=t.max_seq_length, include_num_input_tokens_seen="non_padding",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, gradient_checkpointing=t.gradient_checkpointing,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer)
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    (out / "summary.json").write_text(json.dumps({
        "steps": result.global_step, "train_seconds": round(wall, 1), "tokens": trainer.state.num_input_tokens_seen,
        "tokens_per_s": round(trainer.state.num_input_tokens_seen / wall, 1), "losses": losses, "cpu_precision": "float32",
    }))


def run_path(path: str, recipe: str, sets: list[str], out: Path) -> dict:
    py = sys.executable
    flags = [a for s in sets for a in ("--set", s)]
    if path == "trl":
        subprocess.run([py, __file__, "--worker", recipe, "--out", str(out), *flags], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return json.loads((out / "summary.json").read_text())
    env = dict(os.environ, GEMMA_FAST_CPU_PRECISION="bf16-autocast" if path == "gemma_fast_bf16" else "float32")
    subprocess.run([py, "scripts/train_qlora.py", "--recipe", recipe, "--out", str(out), *flags], cwd=ROOT, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    summary = json.loads((out / "train_summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    tokens = round(summary["tokens_per_s"] * summary["train_seconds"])
    return {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "tokens": tokens, "tokens_per_s": summary["tokens_per_s"],
            "losses": [r["loss"] for r in rows if "loss" in r], "cpu_precision": summary.get("cpu_precision"),
            "loss_path": summary.get("loss_path")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="quickstart,kaggle_docs")
    parser.add_argument("--paths", default="trl,gemma_fast", help="among trl, gemma_fast, gemma_fast_bf16")
    parser.add_argument("--steps", default="12,6", help="optimizer steps per shape, in --shapes order")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for every path")
    args = parser.parse_args()
    if args.worker:
        return trl_worker(args.worker, args.set, Path(args.out))
    shapes, paths = args.shapes.split(","), args.paths.split(",")
    steps = dict(zip(shapes, [int(s) for s in args.steps.split(",")]))
    work = Path(tempfile.mkdtemp(prefix="train_cpu_"))
    results = {}
    for shape in shapes:
        recipe, prep_sets, train_sets = SHAPES[shape]
        if shape == "kaggle_docs" and not KAGGLE.is_dir():
            print(f"{shape}: skipped, {KAGGLE} is absent")
            continue
        data = work / shape / "data"
        subprocess.run([sys.executable, "scripts/prepare_data.py", "--recipe", recipe, "--out", str(data),
                        *[a for s in prep_sets for a in ("--set", s)]], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        sets = [f"data.dir={data}", f"train.max_steps={steps[shape]}", "train.logging_steps=1", "train.eval_steps=0", *train_sets,
                *args.set]
        results[shape] = {}
        for path in paths:
            load_before = load_average()[0]
            r = run_path(path, recipe, sets, work / shape / path)
            r["load_average_before"], r["load_average_after"] = load_before, load_average()[0]
            results[shape][path] = r
            print(f"{shape:12s} {path:16s} {r['tokens_per_s']:7.1f} tok/s  {r['train_seconds']:6.1f} s for {r['steps']} steps "
                  f"({r['tokens']} tokens, precision {r['cpu_precision']}, load {load_before} -> {r['load_average_after']})", flush=True)
        if "trl" in results[shape]:
            base = results[shape]["trl"]
            for path, r in results[shape].items():
                if path == "trl":
                    continue
                r["speedup_vs_trl"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
                diffs = [abs(a - b) for a, b in zip(r["losses"], base["losses"])]
                r["loss_max_abs_diff_vs_trl"] = round(max(diffs), 4) if diffs else None
                print(f"  {path}: {r['speedup_vs_trl']}x the tokens/s of plain TRL; loss curves differ by at most "
                      f"{r['loss_max_abs_diff_vs_trl']} (nats)")
            print("  step  " + "  ".join(f"{p:>16s}" for p in results[shape]))
            for i in range(max(len(r["losses"]) for r in results[shape].values())):
                print(f"  {i + 1:4d}  " + "  ".join(f"{r['losses'][i]:16.4f}" if i < len(r["losses"]) else " " * 16
                                                     for r in results[shape].values()))
    save("train_cpu", stamp(model="embedded:gemma-3-270m, LoRA r=16 all linear, batch 8", command=" ".join(sys.argv),
                            results=results))


if __name__ == "__main__":
    main()

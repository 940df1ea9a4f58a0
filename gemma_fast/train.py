"""SFTTrainer glue: adapters (Unsloth's on GPU, peft's elsewhere), pre-tokenized answer-only data, progress, logs."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import PrinterCallback, TrainerCallback

from .data import load_split
from .errors import NotYetImplemented, UserError
from .io import write_json
from .models import load_model
from .prompts import encode_example
from .recipe import Recipe
from .report import plot_loss

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_reserved() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class ProgressAndMetrics(TrainerCallback):
    """A rich bar with loss, tokens/s and ETA; every log line also appended to metrics.jsonl as it happens."""

    def __init__(self, metrics_path: Path):
        self.metrics_path = metrics_path
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.task = None
        self.start = 0.0
        self.rows: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.start = time.perf_counter()
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, loss="-", tps="-")

    def on_step_end(self, args, state, control, **kwargs):
        if self.task is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self.start
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        row["tokens_per_s"] = round(state.num_input_tokens_seen / elapsed, 1) if elapsed else 0.0
        row["peak_memory_mb"] = round(peak_memory_mb(), 1)
        self.rows.append(row)
        with self.metrics_path.open("a", encoding="utf-8") as handle:  # append-only log: partial runs keep their lines
            handle.write(json.dumps(row) + "\n")
        if self.task is not None and "loss" in row:
            self.progress.update(self.task, loss=f"{row['loss']:.3f}", tps=f"{row['tokens_per_s']:.0f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.task is not None:
            self.progress.stop()


def tokenize_split(tokenizer, records: list[dict], max_length: int):
    from datasets import Dataset

    return Dataset.from_list([encode_example(tokenizer, r, max_length) for r in records])


def attach_adapter(loaded, recipe: Recipe):
    lora = recipe.lora
    targets = ALL_LINEAR if lora.target_modules == ["all-linear"] else lora.target_modules
    if loaded.backend == "unsloth":
        from unsloth import FastLanguageModel  # GPU only

        return FastLanguageModel.get_peft_model(
            loaded.model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
            bias="none", use_gradient_checkpointing="unsloth", random_state=recipe.seed,
        )
    from peft import LoraConfig, get_peft_model

    if recipe.train.method == "qlora":
        from peft import prepare_model_for_kbit_training

        loaded.model = prepare_model_for_kbit_training(loaded.model, use_gradient_checkpointing=recipe.train.gradient_checkpointing)
    try:
        return get_peft_model(loaded.model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                       target_modules=targets, task_type="CAUSAL_LM"))
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise UserError(f"lora.target_modules={lora.target_modules}: {str(exc).splitlines()[0]}") from None


def effective_method(recipe: Recipe, cuda: bool) -> str:
    if recipe.train.method == "prefix":
        raise NotYetImplemented("train.method=prefix is not implemented yet (issue #4); use lora or qlora")
    if recipe.train.method == "qlora" and not cuda:
        return "lora"
    return recipe.train.method


def train(recipe: Recipe, out_dir: Path, console) -> dict:
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    method = effective_method(recipe, cuda)
    if method != recipe.train.method:
        console.print("[yellow]qlora needs a CUDA GPU for 4-bit weights; none found, so this run trains LoRA in float32.[/]")
    train_records = load_split(recipe.data_dir, "train")
    if not train_records:
        raise UserError(f"{recipe.data_dir / 'train.jsonl'} is empty: no training data")
    val_records = load_split(recipe.data_dir, "val") if recipe.train.eval_steps > 0 else []
    loaded = load_model(recipe.model, recipe.backend, recipe.train.max_seq_length, load_in_4bit=method == "qlora")
    model = attach_adapter(loaded, recipe)
    train_ds = tokenize_split(loaded.tokenizer, train_records, recipe.train.max_seq_length)
    val_ds = tokenize_split(loaded.tokenizer, val_records, recipe.train.max_seq_length) if val_records else None

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    t = recipe.train
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, num_train_epochs=t.epochs, max_steps=t.max_steps, optim=t.optimizer,
        logging_steps=t.logging_steps, eval_strategy="steps" if val_ds is not None else "no", eval_steps=t.eval_steps or None,
        per_device_eval_batch_size=t.batch_size, save_strategy="no", seed=recipe.seed, data_seed=recipe.seed,
        bf16=loaded.dtype == torch.bfloat16, fp16=loaded.dtype == torch.float16, use_cpu=not cuda,
        completion_only_loss=True, max_length=t.max_seq_length, include_num_input_tokens_seen="non_padding",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        # only when on: the name is deprecated in transformers 5.23 but its replacement is absent from 5.17 (GPU pin)
        **({"gradient_checkpointing": True} if t.gradient_checkpointing and loaded.backend != "unsloth" else {}),
    )
    callback = ProgressAndMetrics(metrics_path)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                         processing_class=loaded.tokenizer, callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; the rich bar and metrics.jsonl replace it
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start

    model.save_pretrained(out_dir / "adapter")
    loaded.tokenizer.save_pretrained(out_dir / "adapter")
    recipe.save(out_dir / "recipe.yaml")
    if callback.rows:
        plot_loss(callback.rows, out_dir / "loss.png")
    losses = [r["loss"] for r in callback.rows if "loss" in r]
    summary = {
        "recipe": recipe.name, "model": recipe.model, "backend": loaded.backend, "method": method,
        "dtype": str(loaded.dtype).removeprefix("torch."), "adapter": str(out_dir / "adapter"),
        "train_records": len(train_records), "steps": result.global_step, "train_seconds": round(wall, 1),
        "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
        "tokens_per_s": round(trainer.state.num_input_tokens_seen / wall, 1) if wall else None,
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }
    write_json(out_dir / "train_summary.json", summary)
    return summary

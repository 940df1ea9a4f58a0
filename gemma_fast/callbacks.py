"""Trainer callbacks: a rich progress bar with metrics.jsonl, Ctrl-C to checkpoint, and the recipe written once
training has begun. Imported by train() only after the backend is chosen (transformers must follow Unsloth)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from .recipe import Recipe


def peak_memory_mb() -> float:
    import resource

    import torch

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
        self.tokens_at_start = 0
        self.rows: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.start, self.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, loss="-", tps="-")

    def on_step_end(self, args, state, control, **kwargs):
        if self.task is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self.start
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        row["tokens_per_s"] = round((state.num_input_tokens_seen - self.tokens_at_start) / elapsed, 1) if elapsed else 0.0
        row["peak_memory_mb"] = round(peak_memory_mb(), 1)
        self.rows.append(row)
        with self.metrics_path.open("a", encoding="utf-8") as handle:  # append-only: partial and resumed runs keep their lines
            handle.write(json.dumps(row) + "\n")
        if self.task is not None and "loss" in row:
            self.progress.update(self.task, loss=f"{row['loss']:.3f}", tps=f"{row['tokens_per_s']:.0f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.task is not None:
            self.progress.stop()


class SaveAndStopOnCtrlC(TrainerCallback):
    """The first Ctrl-C asks for a checkpoint at the end of the current step, then a clean stop; a second aborts."""

    def __init__(self, console):
        self.requested = False
        self.console = console
        self.previous = None

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)
        self.console.print("[yellow]Ctrl-C: saving a checkpoint after this step (press again to abort)[/]")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class SaveRecipeOnTrainBegin(TrainerCallback):
    """recipe.yaml is written once training has started, i.e. after a --resume has loaded its checkpoint: a resume
    that fails never rewrites the recipe of the run it could not continue."""

    def __init__(self, ran: Recipe, path: Path, notes: list[str]):
        self.ran, self.path, self.notes = ran, path, notes

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.ran.save(self.path, self.notes)

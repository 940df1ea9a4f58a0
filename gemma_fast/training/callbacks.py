"""Trainer callbacks: a rich progress bar with metrics.jsonl, Ctrl-C or SIGTERM to checkpoint, and the recipe written once
training has begun. Imported by train() only after the backend is chosen (transformers must follow Unsloth)."""

from __future__ import annotations

import logging
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from ..recipe import Recipe

log = logging.getLogger(__name__)


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


def resume_command(output_dir: Path) -> str:
    """The command line that continues this run: this one with --resume (and --out, when the default was used),
    without --overwrite."""
    argv = [a for a in sys.argv if a != "--overwrite"]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(Path(output_dir).parent)]
    if "--resume" not in argv:
        argv.append("--resume")
    program = ["python", argv[0]] if argv[0].endswith(".py") else argv[0].split()  # a script, or "gemma-fast train"
    return shlex.join([*program, *argv[1:]])


class SaveAndStopOnCtrlC(TrainerCallback):
    """The first Ctrl-C or SIGTERM (kill, timeout, docker stop, a cluster's pre-emption) asks for a checkpoint at the
    end of the current step, then a clean stop: leaving the `with` block raises Interrupted with the checkpoint and
    the command that resumes (exit 130 for Ctrl-C, 143 for SIGTERM). A second signal aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: str | None = None  # "Ctrl-C" or "SIGTERM" once one came
        self.signum = 0
        self.previous: dict = {}
        self.output_dir: str | None = None
        self.step = 0

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, exc_type, exc, tb):
        self._restore()
        if self.requested and exc_type is None and self.output_dir:
            raise self.stopped()

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame):
        self.signum, self.requested = signum, "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        self._restore()  # a second signal goes to the previous handlers: abort
        log.warning(f"{self.requested}: saving a checkpoint after this step (again to abort)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
            self.output_dir, self.step = args.output_dir, state.global_step

    def stopped(self):
        """The Interrupted error that ends a stopped run: where its checkpoint is and how to continue."""
        from ..errors import Interrupted

        checkpoint = Path(self.output_dir) / f"checkpoint-{self.step}"  # what Trainer saved at this step's end
        error = Interrupted(f"stopped by {self.requested} at step {self.step}: checkpoint saved in {checkpoint}; "
                            f"continue with --resume: {resume_command(Path(self.output_dir))}")
        error.exit_code = 128 + self.signum
        return error


class SaveRecipeOnTrainBegin(TrainerCallback):
    """recipe.yaml is written once training has started, i.e. after a --resume has loaded its checkpoint: a resume
    that fails never rewrites the recipe of the run it could not continue."""

    def __init__(self, ran: Recipe, path: Path, notes: list[str]):
        self.ran, self.path, self.notes = ran, path, notes

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.ran.save(self.path, self.notes)

"""Guards against silent training failure: the run stops, or says so, instead of printing a loss while learning nothing.

The failures Gemma users report most (shared/reviews/gemma4_and_field.md §3.2): garbage loss 12-16 from KV sharing
under use_cache=False or gradient checkpointing, a label mask shifted against the template, NaN or exploding
gradients, and zero gradients while the loss prints. Three checks, each recorded in train_summary.json ("guards"):

1. first batch: before the first update, the training forward's answer loss on the first micro-batch equals the
   evaluation path's answer loss (loss.answer_token_stats: labels rebuilt from the records, the model in eval mode
   with the cache on, padded batches, the plain attention) of the still-untouched model on the same records; a
   difference above the tolerance stops the run naming both numbers;
2. gradients: the norm of the trainable gradients is finite at every optimizer step (under fp16's GradScaler a
   non-finite step is skipped by the scaler and counted; 10 in a row stop the run);
3. movement: by the end the adapter's weights moved (the largest change, and the share of tensors that changed).
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError

FLOAT32_TOLERANCE = 1e-3  # nats: float32 forwards of the two paths agree to ~1e-6 (tests/unit/test_loss.py)
HALF_TOLERANCE = 0.02  # relative, for 16-bit compute: different kernels round differently (not measured on a GPU)
SKIPPED_IN_A_ROW = 10  # fp16: GradScaler skips a step with inf/nan gradients while it calibrates; this many is a failure


class TrainingFailed(UserError):
    """A guard found training broken; the message names what was measured."""


def tolerance(reference: float, dtype: torch.dtype) -> float:
    return FLOAT32_TOLERANCE if dtype == torch.float32 else max(FLOAT32_TOLERANCE, HALF_TOLERANCE * abs(reference))


# ---------------------------------------------------------------- 1. the first batch, two ways


def _examples(inputs: dict) -> list[list[int]]:
    """The token ids of each example in a training batch: padding-free rows split where position_ids restart,
    padded rows cut by their attention mask."""
    from .varlen import boundaries

    ids = inputs["input_ids"]
    if ids.size(0) == 1 and "position_ids" in inputs and "attention_mask" not in inputs:
        row = ids[0].tolist()
        bounds = boundaries(None, inputs["position_ids"], len(row))
        return [row[s:e] for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    mask = inputs.get("attention_mask")
    return [r[m.bool()].tolist() if mask is not None else r.tolist() for r, m in zip(ids, mask if mask is not None else ids)]


class FirstBatchCheck:
    """Compares the first training micro-batch's loss with the evaluation path's, on the untouched model."""

    def __init__(self, prompts, records: list[dict], max_length: int, dtype: torch.dtype, attention: str | None):
        self.prompts, self.max_length, self.dtype, self.attention = prompts, max_length, dtype, attention
        self.by_ids = {tuple(prompts.example(r, max_length)["input_ids"]): r for r in records}
        self.result: dict | None = None

    def check(self, model, inputs: dict, training_loss: float) -> None:
        from .loss import _unwrap, answer_token_stats

        examples = _examples(inputs)
        records = [self.by_ids.get(tuple(e)) for e in examples]
        if not examples or any(r is None for r in records):  # packed rows cut examples apart: nothing to match
            self.result = {"checked": False, "why": "the first batch's examples are not whole records (train.packing)"}
            return
        base = _unwrap(model)
        previous = base.config._attn_implementation
        was_training = model.training
        try:
            if self.attention and previous != self.attention:
                base.set_attn_implementation(self.attention)  # the evaluation path's attention, not the varlen one
            stats = answer_token_stats(model, self.prompts, records, self.max_length, batch_size=len(records), use_cache=True)
        finally:
            if self.attention and previous != self.attention:
                base.set_attn_implementation(previous)
            model.train(was_training)
        tokens = sum(s["n_tokens"] for s in stats)
        reference = sum(s["loss_sum"] for s in stats) / max(tokens, 1)
        allowed = tolerance(reference, self.dtype)
        self.result = {"checked": True, "records": len(records), "answer_tokens": tokens, "training_loss": round(training_loss, 6),
                       "evaluation_loss": round(reference, 6), "difference": round(abs(training_loss - reference), 6),
                       "tolerance": allowed}
        if not math.isfinite(training_loss) or abs(training_loss - reference) > allowed:
            raise TrainingFailed(
                f"first batch: the training forward's answer loss is {training_loss:.4f} but the evaluation path gives "
                f"{reference:.4f} on the same {len(records)} records before any update (allowed difference {allowed:g}): "
                "training would not learn what evaluation measures (a mask shifted against the template, or a forward "
                "that breaks without the cache, e.g. Gemma 4/3n KV sharing under gradient checkpointing); nothing was saved")


def guarded(trainer_class, first_batch: FirstBatchCheck):
    """`trainer_class` whose first training compute_loss also runs the first-batch check."""

    class Guarded(trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            if first_batch.result is None and model.training and self.state.global_step == 0:
                loss = out[0] if return_outputs else out
                labels = inputs.get("labels")
                count = int((labels[:, 1:] != -100).sum()) if labels is not None else 0
                # the returned loss is sum / num_items_in_batch under accumulation, else the micro-batch's mean; with
                # several processes num_items_in_batch counts them all and the loss is multiplied by their number
                # (Trainer / AnswerOnlySFTTrainer: average_tokens_across_devices), which the mean here takes back out
                mean = float(loss.detach()) * (float(num_items_in_batch) / count if num_items_in_batch and count else 1.0)
                if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                    mean /= max(self.accelerator.num_processes // self.get_tp_size(), 1)
                first_batch.check(model, inputs, mean)
            return out

    Guarded.__name__ = f"Guarded{trainer_class.__name__}"
    return Guarded


# ---------------------------------------------------------------- 2. gradients, 3. movement


def gradient_norm(model) -> float:
    grads = [p.grad.detach().float() for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


class GradientAndMovement:
    """A TrainerCallback (built by `callback()`, so this module imports no transformers): the gradient norm at
    every optimizer step, and the adapter's weights before and after."""

    def __init__(self):
        self.steps = self.skipped = self.in_a_row = 0
        self.max_norm = 0.0
        self.start: dict[str, torch.Tensor] = {}

    def begin(self, model) -> None:
        self.start = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def step(self, model, fp16: bool, step: int) -> None:
        norm = gradient_norm(model)
        self.steps += 1
        if math.isfinite(norm):
            self.max_norm, self.in_a_row = max(self.max_norm, norm), 0
            return
        if fp16:  # GradScaler skips this step and lowers its scale
            self.skipped += 1
            self.in_a_row += 1
            if self.in_a_row < SKIPPED_IN_A_ROW:
                return
        raise TrainingFailed(f"step {step + 1}: the gradient norm is {norm} "
                             f"{f'({self.in_a_row} steps in a row) ' if fp16 else ''}(NaN or inf gradients: lower train.lr, "
                             "keep train.max_grad_norm > 0, or use the float32 path); the run stopped before this update")

    def movement(self, model) -> dict:
        moved, largest = 0, 0.0
        current = dict(model.named_parameters())
        for name, before in self.start.items():
            change = float((current[name].detach().float() - before).abs().max()) if name in current else 0.0
            largest = max(largest, change)
            moved += change > 0
        return {"tensors": len(self.start), "moved": moved, "max_abs_change": largest}

    def summary(self, model) -> dict:
        return {"gradients": {"steps": self.steps, "finite": self.steps - self.skipped, "skipped_by_fp16_scaler": self.skipped,
                              "max_norm_after_clipping": round(self.max_norm, 6)},
                "movement": self.movement(model)}

    def callback(self, fp16: bool):
        from transformers import TrainerCallback

        guard = self

        class Guard(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                guard.begin(model)

            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                guard.step(model, fp16, state.global_step)

        return Guard()


def check_moved(guards: dict) -> str | None:
    """Fail a run whose adapter never moved because every gradient was zero; a run whose gradients were there but
    whose learning rate was 0 at every step (a warmup as long as the run) gets a note instead (returned)."""
    movement, gradients = guards["movement"], guards["gradients"]
    if not movement["tensors"] or movement["moved"]:
        return None
    if gradients["max_norm_after_clipping"] > 0:
        return (f"the adapter did not move in {gradients['steps']} step(s) although its gradients were non-zero: the "
                "learning rate was 0 at every update (train.warmup_ratio covers the whole run); train longer")
    raise TrainingFailed(f"the adapter did not move: none of its {movement['tensors']} trainable tensors changed and every "
                         "gradient was zero (zero gradients while the loss printed); the adapter and train_summary.json are "
                         "saved for inspection, but this run learned nothing")

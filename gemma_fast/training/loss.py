"""Answer-only loss without full-vocabulary logits: the output projection runs only where a label is.

Gemma's vocabulary is 262,144 tokens; in Gemma 3 270M the output projection is 168M of the 268M parameters.
The loss (answer tokens only) needs the logits at answer positions alone, so:

1. `answer_positions` runs the model (PEFT included) with `logits_to_keep=1`, so the head projects one position
   per row, and a forward hook on the decoder keeps its last hidden state; it returns the hidden states at the
   positions whose next-token label is not -100 (N × H), those labels, and each one's row.
2. `head_cross_entropy` projects them through the head in chunks of rows (Gemma 2's final logit soft-capping
   included), in float32 per chunk, and returns the summed cross-entropy. Peak memory is a few chunks of logits,
   not batch × sequence × vocabulary. The gradients (hidden states, and the head's weight only if it is trained)
   are computed in the same pass and scaled in backward: three matmuls per chunk, as plain autograd needs.
3. `answer_only_trainer()` is SFTTrainer with that loss, normalised like TRL's: sum / num_items_in_batch under
   gradient accumulation, sum / answer-token count otherwise. Used on the transformers + peft backend only;
   Unsloth keeps its own fused loss. `answer_stats` is the same path for evaluation (loss, token accuracy).

Prefix tuning works too: PEFT puts the prefix in the attention cache, the decoder's hidden states are still the
sequence's own. Nothing here imports transformers, peft or trl at module level (Unsloth must come first).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import torch

from ..batching import token_batches
from ..families import family_for

IGNORE_INDEX = -100
# float32 logits per chunk: 256 rows of Gemma's 262,144-token vocabulary. Each chunk streams the head's weight
# (671 MB in float32 for Gemma 3 270M) from memory twice, so on a CPU small chunks cost more than they save.
CHUNK_BYTES = 256 * 2**20
LOSS_PATH = "answer-positions"  # what train_summary.json records for this path


def chunk_rows(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (4 * vocab_size))


def _matmul_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """The head's matmul runs in the autocast dtype when autocast is on (as the model's own head would), else in
    the weight's dtype (no float32 copy of a bf16 head). Everything after the matmul is float32."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def _chunked_pass(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float | None,
                  grad_hidden: bool = False, grad_weight: bool = False, per_token: bool = False, chunk: int | None = None):
    """One pass over the rows in chunks. Returns (loss_sum, argmax hit count, per-token losses | None, per-token argmax
    hits | None, d loss_sum / d hidden | None, d loss_sum / d weight | None); sums and gradients in float32."""
    n = hidden.size(0)
    chunk = chunk or chunk_rows(weight.size(0))
    dtype = _matmul_dtype(hidden.device, weight)
    with torch.autocast(hidden.device.type, enabled=False):
        h, w = hidden.detach().to(dtype), weight.detach().to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        n_hits = torch.zeros((), dtype=torch.long, device=hidden.device)
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device) if per_token else None
        hits = torch.empty(n, dtype=torch.bool, device=hidden.device) if per_token else None
        d_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if grad_hidden else None
        d_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grad_weight else None
        for start in range(0, n, chunk):
            hc, tc = h[start : start + chunk], targets[start : start + chunk]
            z = (hc @ w.T).float()  # (rows, vocab), the only vocabulary-sized buffer besides the softcap slope
            slope = None
            if softcap:  # z = c * tanh(x / c); dz/dx = 1 - (z / c)^2
                z.div_(softcap).tanh_()
                if grad_hidden or grad_weight:
                    slope = z.square().neg_().add_(1)
                z.mul_(softcap)
            lse = torch.logsumexp(z, dim=-1)
            chunk_loss = lse - z.gather(1, tc[:, None]).squeeze(1)
            total += chunk_loss.sum()
            chunk_hits = z.argmax(dim=-1) == tc  # softcapping is monotonic: the same argmax as the raw logits
            n_hits += chunk_hits.sum()
            if per_token:
                losses[start : start + chunk], hits[start : start + chunk] = chunk_loss, chunk_hits
            if grad_hidden or grad_weight:
                g = z.sub_(lse[:, None]).exp_()  # softmax, in place
                g[torch.arange(g.size(0), device=g.device), tc] -= 1
                if slope is not None:
                    g.mul_(slope)
                g = g.to(dtype)
                if grad_hidden:
                    d_h[start : start + chunk] = g @ w
                if grad_weight:
                    d_w += (g.T @ hc).float()
            del z, slope
    return total, n_hits, losses, hits, d_h, d_w


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, chunk):
        total, n_hits, _, _, d_h, d_w = _chunked_pass(hidden, weight, targets, softcap, grad_hidden=ctx.needs_input_grad[0],
                                                      grad_weight=ctx.needs_input_grad[1], chunk=chunk)
        ctx.save_for_backward(*(t for t in (d_h, d_w) if t is not None))
        ctx.has = (d_h is not None, d_w is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.mark_non_differentiable(n_hits)
        return total, n_hits

    @staticmethod
    def backward(ctx, grad_out, _grad_hits):
        saved = list(ctx.saved_tensors)
        d_h = (saved.pop(0) * grad_out).to(ctx.dtypes[0]) if ctx.has[0] else None
        d_w = (saved.pop(0) * grad_out).to(ctx.dtypes[1]) if ctx.has[1] else None
        return d_h, d_w, None, None, None


def head_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float | None = None,
                       chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy of `targets` (N) under logits softcap(hidden (N × H) @ weight.T), how many targets are the
    argmax). The sum is float32 and differentiable in `hidden` and (when it requires grad) `weight`; no more than
    `chunk` rows of logits exist at a time."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _HeadCrossEntropy.apply(hidden, weight, targets, softcap, chunk)
    return _chunked_pass(hidden, weight, targets, softcap, chunk=chunk)[:2]


# ---------------------------------------------------------------- the model side


def _unwrap(model):
    """The transformers model under PEFT (and accelerate's wrappers)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_of(model) -> tuple[torch.Tensor, float | None]:
    """The output projection's weight and the final logit soft-capping (Gemma 2: 30.0; Gemma 1 and 3: None)."""
    base = _unwrap(model)
    head = base.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("answer-position loss: an output projection with a bias is not supported (Gemma has none)")
    weight = head.weight
    if hasattr(weight, "full_tensor"):  # FSDP2 leaves the head sharded (a DTensor) after the forward: gather it whole
        weight = weight.full_tensor()
    return weight, getattr(base.config.get_text_config(), "final_logit_softcapping", None)


def supports(model) -> bool:
    """Whether this model can take the answer-position path: a decoder to hook and a plain bias-free head."""
    try:
        base = _unwrap(model)
        head = base.get_output_embeddings()
        return base.get_decoder() is not None and head is not None and getattr(head, "bias", None) is None
    except (AttributeError, NotImplementedError, ValueError):
        return False


class NoHiddenStates(RuntimeError):
    """The decoder's forward hook did not fire: a patched forward (e.g. Unsloth's) bypasses the module call."""


@contextmanager
def _capture_last_hidden(model):
    captured: dict = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    handle = _unwrap(model).get_decoder().register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def answer_positions(model, labels: torch.Tensor, use_cache: bool = False, **inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run `model(**inputs)` with the head on one position only; return the final hidden states at the positions
    whose next token is labelled (N × H), those next tokens (N) and their rows (N). `labels` are unshifted, as a
    causal LM takes them: position t predicts labels[t + 1]."""
    keep: int | torch.Tensor = 1
    if family_for(_unwrap(model).config.model_type).decoder_slices:  # an index keeps every layer on the whole sequence
        keep = torch.tensor([labels.size(1) - 1], device=labels.device)
    with _capture_last_hidden(model) as captured:
        model(**inputs, logits_to_keep=keep, use_cache=use_cache)
    if "h" not in captured:
        raise NoHiddenStates("the decoder's forward hook did not fire; the answer-position path cannot run on this model")
    hidden = captured["h"]
    if hidden.size(1) != labels.size(1):  # prompt tuning prepends virtual tokens to the sequence
        raise ValueError(f"decoder returned {hidden.size(1)} positions for {labels.size(1)} labels")
    shifted = labels[:, 1:].to(hidden.device)
    mask = shifted != IGNORE_INDEX
    rows = torch.arange(labels.size(0), device=hidden.device)[:, None].expand_as(shifted)[mask]
    return hidden[:, :-1][mask], shifted[mask], rows


def answer_loss_sum(model, labels: torch.Tensor, **inputs) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(summed cross-entropy over the labelled positions, how many there are, how many are the argmax): the
    training quantity."""
    hidden, targets, _ = answer_positions(model, labels, **inputs)
    weight, softcap = head_of(model)
    loss_sum, n_hits = head_cross_entropy(hidden.to(weight.device), weight, targets.to(weight.device), softcap)
    return loss_sum, targets.numel(), n_hits


@torch.no_grad()
def answer_stats(model, labels: torch.Tensor, use_cache: bool = False, **inputs) -> dict[str, torch.Tensor]:
    """Per row: summed cross-entropy over its labelled positions, their count, and how many the greedy (argmax)
    choice gets right. Memory grows with the number of answer tokens, not with sequence × vocabulary."""
    hidden, targets, rows = answer_positions(model, labels, use_cache=use_cache, **inputs)
    weight, softcap = head_of(model)
    _, _, losses, hits, _, _ = _chunked_pass(hidden.to(weight.device), weight, targets.to(weight.device), softcap, per_token=True)
    n_rows = labels.size(0)
    rows = rows.to(weight.device)
    zeros = torch.zeros(n_rows, dtype=torch.float64, device=weight.device)
    return {"loss_sum": zeros.index_add(0, rows, losses.double()),
            "n_tokens": zeros.index_add(0, rows, torch.ones_like(losses, dtype=torch.float64)).long(),
            "n_correct": zeros.index_add(0, rows, hits.double()).long()}


# ---------------------------------------------------------------- the trainer


@lru_cache(maxsize=1)
def answer_only_trainer():
    """SFTTrainer whose loss is computed on the answer positions only. Built on first call, so importing this module
    imports no trl (Unsloth must be imported before it)."""
    from trl import SFTTrainer

    class AnswerOnlySFTTrainer(SFTTrainer):
        """The loss TRL computes (sum of answer-token cross-entropy / num_items_in_batch, or / the micro-batch's
        answer-token count without accumulation), with the head applied to answer positions only. Every other
        loss configuration (label smoothing, DFT, a compute_loss_func, MoE aux loss, pre-shifted labels, logits
        asked for) goes to TRL's own compute_loss."""

        loss_path = LOSS_PATH

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            plain = (return_outputs or "shift_labels" in inputs or "labels" not in inputs or self.compute_loss_func is not None
                     or self.label_smoother is not None or self.args.loss_type != "nll" or self.aux_loss_enabled)
            if plain or not supports(model):
                return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
            loss_sum, count, n_hits = answer_loss_sum(model, inputs["labels"], **model_inputs)
            denominator = count if num_items_in_batch is None else num_items_in_batch
            loss = loss_sum / torch.as_tensor(denominator, device=loss_sum.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:  # as Trainer / TRL do
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            # TRL's log entries: token accuracy and the token counter. (Its `entropy` entry would need the whole
            # softmax once more per position; it is not logged on this path.)
            valid = self.accelerator.gather_for_metrics(torch.as_tensor(count, device=loss.device)).sum()
            correct = self.accelerator.gather_for_metrics(n_hits.to(loss.device)).sum()
            self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
            if mode == "train":
                if "attention_mask" in inputs:
                    seen = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                else:
                    seen = inputs["input_ids"].numel()
                self._total_train_tokens += seen // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return AnswerOnlySFTTrainer


# ---------------------------------------------------------------- evaluation: answer-token stats per record


def _padded_batch(pad_id: int, batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and labels (-100 off the answer), right-padded: positions stay aligned with training."""
    width = max(len(e["input_ids"]) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, e in enumerate(batch):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor([t if m else -100 for t, m in zip(e["input_ids"], e["completion_mask"])])
    return ids, attention, labels


def full_logits_stats(model, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """The same numbers from the full batch × sequence × vocabulary logits: the reference the tests compare with,
    and the fallback for a model whose decoder cannot be hooked (loss.supports)."""
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
    token_loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(shift_labels.shape)
    mask = shift_labels != -100
    correct = (shift_logits.argmax(-1) == shift_labels) & mask
    return [{"loss_sum": token_loss[row][mask[row]].sum().item(), "n_tokens": int(mask[row].sum().item()),
             "n_correct": int(correct[row].sum().item())} for row in range(ids.size(0))]


@torch.no_grad()
def answer_token_stats(model, prompts, records: list[dict], max_length: int, batch_size: int = 8,
                       use_cache: bool = False, batch_tokens: int | None = None) -> list[dict]:
    """Per record, in the order given: summed cross-entropy over the answer + end-of-turn tokens, their count, and how
    many of them the model's greedy next-token choice gets right. Uses the same examples as training (`prompts`: the
    model's prompts.PromptFormat). Batches hold at most `batch_size` examples and, with `batch_tokens`, at most that
    many padded tokens (batching.token_batches, shortest first).

    The output projection runs on the answer positions only, in chunks (gemma_fast.loss): memory grows with the
    answer tokens, not with batch × sequence × vocabulary (8.6 GB of float32 logits for 16 × 512 tokens of Gemma)."""
    model.eval()
    device = next(model.parameters()).device
    gathered = supports(model)
    encoded = [prompts.example(r, max_length) for r in records]
    out: list[dict] = [{}] * len(encoded)
    for idx in token_batches([len(e["input_ids"]) for e in encoded], batch_size, batch_tokens):
        ids, attention, labels = _padded_batch(prompts.pad_id, [encoded[i] for i in idx])
        rows: list[dict] | None = None
        if gathered:
            try:
                stats = answer_stats(model, labels.to(device), use_cache=use_cache, input_ids=ids.to(device),
                                     attention_mask=attention.to(device))
                rows = [{"loss_sum": s, "n_tokens": n, "n_correct": c} for s, n, c in
                        zip(stats["loss_sum"].tolist(), stats["n_tokens"].tolist(), stats["n_correct"].tolist())]
            except NoHiddenStates:  # a forward that bypasses the decoder module: full logits, as before
                gathered = False
        if rows is None:
            rows = full_logits_stats(model, ids, attention, labels)
        for i, row in zip(idx, rows):
            out[i] = row
    return out

"""Pre-flight for `train_qlora.py --plan`: what would run, and will it fit, without loading a single weight.

`preflight(recipe, gpu)` resolves the run plan exactly as training would (backend, method, dtype, optimizer and
every fallback note), reads the model's shape from its config.json built on the meta device (architecture.py), and
estimates peak memory per component in bytes for the training step and for the evaluation after it (eval_plan.py),
each with a verdict. The method, its sources and its checks are in docs/memory_estimate.md. Nothing here imports
unsloth.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..models.architecture import Arch, Layer, resolve_arch
from ..errors import UserError
from .eval_plan import EvalSetup, eval_estimate
from ..families import FAMILIES, LANGUAGE_MODEL_LINEAR, Family
from ..training.loss import chunk_rows
from ..methods import method_of
from .memory import (BYTES, FRAGMENTATION, GIB, Component, Estimate, adapter_params, keeps_scores, runtime_component, targeted, weight_bytes)
from ..recipe import Recipe, apply_override

# ---------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class Device:
    name: str
    label: str
    memory_gib: float  # what the process can see: torch's total_memory, not the marketing figure
    capability: tuple[int, int] | None  # CUDA compute capability; None for the CPU
    kind: str = "cuda"

    @property
    def bf16(self) -> bool:
        """Native bf16 only (sm80+): T4/V100 emulate it, which is slow and trips SFTConfig(bf16=True) under Unsloth."""
        return self.capability is not None and self.capability >= (8, 0)


# Memory: torch.cuda.get_device_properties(0).total_memory, the "Max memory" line Unsloth's notebooks print
# (e.g. "GPU = Tesla T4. Max memory = 14.741 GB"); it is below the board's nominal size because the driver keeps
# some. Capabilities: NVIDIA's CUDA GPU list (developer.nvidia.com/cuda-gpus).
GPUS = {
    "t4": Device("t4", "NVIDIA T4 16 GB (Colab free tier)", 14.7, (7, 5)),
    "v100": Device("v100", "NVIDIA V100 16 GB", 15.8, (7, 0)),
    "l4": Device("l4", "NVIDIA L4 24 GB", 22.2, (8, 9)),
    "a100-40gb": Device("a100-40gb", "NVIDIA A100 40 GB", 39.6, (8, 0)),
    "a100-80gb": Device("a100-80gb", "NVIDIA A100 80 GB", 79.2, (8, 0)),
    "h100": Device("h100", "NVIDIA H100 80 GB", 79.2, (9, 0)),
}


def gpu_device(name: str) -> Device:
    key = name.strip().lower()
    if key not in GPUS:
        raise UserError(f"unknown GPU '{name}'; valid: {', '.join(GPUS)}")
    return GPUS[key]


def local_device() -> Device:
    """The machine this runs on: its CUDA GPU if torch sees one, else the CPU and its RAM."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Device("cuda:0", props.name, round(props.total_memory / GIB, 1), (props.major, props.minor))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Device("cpu", f"CPU, {os.cpu_count()} cores", round(ram / GIB, 1), None, kind="cpu")


# ---------------------------------------------------------------- the training estimate

OFFLOAD_BUFFERS = 2  # hidden states Unsloth's offloaded checkpointing keeps on the GPU while copying
# Unsloth's cross-entropy (unsloth_zoo/fused_losses/chunked_logprob.py, fused_linear.py): labelled rows in chunks of
# float32 logits and their gradient (8 bytes per logit) within min(UNSLOTH_LOGPROB_CHUNK_GB = 2 GiB, half the free
# memory), the free memory read once, at the first step (unsloth_zoo/tiled_mlp.py _default_target_gb)
UNSLOTH_CE_CHUNK = 2 * GIB
UNSLOTH_CE_BYTES_PER_LOGIT = 8


@dataclass(frozen=True)
class Setup:
    """Everything the training estimate depends on, resolved from a recipe, its plan and the device."""

    arch: Arch
    device: str  # cuda | cpu
    backend: str  # unsloth | hf
    method: str  # lora | qlora | prefix
    dtype: str  # the compute dtype of activations: float32 | float16 | bfloat16
    optimizer: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: str  # off | on | offloaded
    lora_r: int = 16
    lora_targets: tuple[str, ...] = LANGUAGE_MODEL_LINEAR
    lora_dropout: float = 0.0
    prefix_tokens: int = 16
    weights_dtype: str = ""  # the 16-bit weights' dtype when it differs from `dtype` (Unsloth's float32 path: float16)
    below_ampere: bool = False  # a CUDA GPU without native bf16 (T4, V100)
    memory_bytes: int = 0  # the device's memory (Unsloth sizes its loss chunks by what is free); 0: unknown

    @property
    def elem(self) -> int:
        return BYTES[self.dtype]

    @property
    def weight_elem(self) -> int:
        return BYTES[self.weights_dtype or self.dtype]

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


def trainable_params(s: Setup) -> int:
    return adapter_params(s.arch, s.method, s.lora_targets, s.lora_r, s.prefix_tokens)


def optimizer_state_bytes(optimizer: str) -> int:
    """Bytes of optimizer state per trainable parameter: AdamW keeps two fp32 moments; 8-bit variants one byte each."""
    name = optimizer.lower()
    if "8bit" in name:
        return 2
    if "sgd" in name or "adafactor" in name or "lion" in name:
        return 4
    return 8


def base_weight_bytes(s: Setup) -> tuple[int, str]:
    """bitsandbytes quantises the linear layers only; on the hf path peft's prepare_model_for_kbit_training then casts
    every 16-bit parameter left (embeddings, the tied head, experts, norms) to float32."""
    rest_elem = 4 if s.backend == "hf" else s.weight_elem
    return weight_bytes(s.arch, method_of(s.method).weights_4bit, s.weight_elem, rest_elem)


def layer_activation_bytes_per_token(s: Setup, layer: Layer) -> int:
    """Bytes autograd keeps per token for one decoder layer (see the doc for the tally).

    Same bookkeeping as Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
    Models", sec. 4.1), redone for a frozen Gemma block with LoRA: frozen linears keep no input for a weight
    gradient, but the nonlinearities, RMSNorms (which upcast to fp32), attention and LoRA's dropout do.
    """
    e, h = s.elem, s.arch.hidden
    norms = layer.norms * h * (e + 4)  # each RMSNorm keeps its input and an fp32 copy
    norm_out = 2 * h * e  # the normed inputs of the attention and MLP projections
    attention = (2 * layer.q_width + 2 * layer.kv_width) * e  # q, k after RoPE, v, output (a KV-shared layer: q only)
    mlp = 4 * layer.mlp_width * e  # gate, up, gelu(gate), and their product (down_proj's input)
    experts = layer.top_k * (4 * layer.expert_width + h) * e  # each routed copy of the token through its experts
    ple = 3 * (s.arch.per_layer_input // s.arch.n_layers) * e  # the per-layer input gate, product and projection
    lora = 0
    if method_of(s.method).peft_type == "LORA" and s.lora_dropout > 0:  # peft applies dropout per module: a copy of its input + mask
        lora = sum(lin.in_features for lin in layer.linears if targeted(lin.name, s.lora_targets)) * (e + 1)
    scores = 0
    if keeps_scores(s.arch.family, s.backend, s.device, s.below_ampere, layer):
        scores = 2 * layer.heads * s.seq_len * e  # S x S scores and probabilities per head, kept for backward
    return norms + norm_out + attention + mlp + experts + ple + lora + scores


def activation_bytes(s: Setup) -> tuple[int, str]:
    per_layer = [layer_activation_bytes_per_token(s, layer) * s.tokens for layer in s.arch.layers]
    n = s.arch.n_layers
    hidden = s.arch.hidden * s.elem * s.tokens  # one hidden state, e.g. a checkpointed layer input
    embed = s.arch.hidden * (s.elem + 4) * s.tokens + 2 * s.arch.per_layer_input * s.elem * s.tokens  # + Gemma 4's PLE inputs
    scored = sum(1 for layer in s.arch.layers if keeps_scores(s.arch.family, s.backend, s.device, s.below_ampere, layer))
    note = f"; S x S scores kept on {scored} of {n} layers" if scored else ""
    if s.gradient_checkpointing == "offloaded":
        return max(per_layer) + OFFLOAD_BUFFERS * hidden + embed, f"one layer recomputed at a time; layer inputs offloaded to CPU RAM (Unsloth){note}"
    if s.gradient_checkpointing == "on":
        return max(per_layer) + n * hidden + embed, f"{n} checkpointed layer inputs + one layer recomputed{note}"
    return sum(per_layer) + embed, f"all {n} layers' activations kept for backward{note}"


def loss_bytes(s: Setup, in_use: int = 0) -> tuple[int, str]:
    """The loss path that runs: Unsloth's chunked cross-entropy on the Unsloth backend (its chunk sized by the memory
    free at the first step, when `in_use` bytes are taken); gemma_fast's answer-position head (loss.py) on the
    transformers + peft backend. Neither materialises the full logits."""
    a, t = s.arch, s.tokens  # every position may be labelled: the answer-token count is bounded by the tokens
    full = f"full logits would be {full_logits_bytes(s) / GIB:.1f} GiB"
    if s.backend == "unsloth":
        chunk = min(t * a.vocab * UNSLOTH_CE_BYTES_PER_LOGIT, UNSLOTH_CE_CHUNK)
        if s.memory_bytes:
            chunk = min(chunk, max(0, (s.memory_bytes - in_use) // 2))
        return chunk + t * a.hidden * 4, (f"Unsloth's chunked cross-entropy: {chunk / GIB:.2f} GiB of logits per chunk "
                                          f"(<= 2 GiB, <= half the free memory) + the fp32 hidden-state gradient ({full})")
    rows = min(t, chunk_rows(a.vocab))
    # float32 logits, logsumexp's temporary of the same size (+ the softcap's slope)
    chunk = rows * a.vocab * 4 * (3 if a.final_softcap else 2)
    if s.elem != 4:
        chunk += rows * a.vocab * s.elem  # the softmax gradient cast back to the matmul dtype
    gathered = t * a.hidden * (s.elem + 4)  # answer positions' hidden states + their fp32 gradient
    # under autocast the fp32 head that prepare_model_for_kbit_training made is copied to bf16 for every step
    head_copy = a.vocab * a.hidden * s.elem if method_of(s.method).weights_4bit and s.elem != 4 else 0
    detail = f"answer-position head (loss.py): {rows} rows of logits at a time"
    if head_copy:
        detail += f" + a {s.dtype} copy of the fp32 head ({head_copy / GIB:.2f} GiB)"
    return chunk + gathered + head_copy, f"{detail} ({full})"


def full_logits_bytes(s: Setup) -> int:
    """What transformers' own loss would hold: logits, their fp32 upcast (none if already fp32), the saved
    log-softmax and its gradient, plus a final softcapping (tanh keeps input and output)."""
    per = s.elem + (4 if s.elem != 4 else 0) + 4 + 4 + (2 * s.elem if s.arch.final_softcap else 0)
    return s.tokens * s.arch.vocab * per


def estimate(s: Setup) -> Estimate:
    base, base_detail = base_weight_bytes(s)
    n = trainable_params(s)
    opt = optimizer_state_bytes(s.optimizer)
    act, act_detail = activation_bytes(s)
    context = runtime_component(s.device)
    # at the first step, when Unsloth measures free memory: weights, adapter, activations; no grads or optimizer states
    logit, logit_detail = loss_bytes(s, in_use=base + n * 4 + act + context.bytes)
    slack = int(FRAGMENTATION[s.device] * (act + logit))
    parts = [
        Component("base weights", base, base_detail),
        Component("trainable weights + grads", n * 8, f"{n / 1e6:.1f}M params x (4 B fp32 weight + 4 B grad)"),
        Component("optimizer states", n * opt, f"{s.optimizer}: {opt} B per trainable param"),
        Component("activations", act, act_detail),
        Component("logits + loss", logit, logit_detail),
        Component("allocator slack", slack, f"{FRAGMENTATION[s.device]:.0%} of activations + logits"),
        context,
    ]
    return Estimate(parts, spillable=n * opt if "paged" in s.optimizer else 0)


# ---------------------------------------------------------------- recipe -> plan -> setup


def plan_dtypes(backend: str, device: Device, family: Family) -> tuple[str, str, str | None]:
    """(compute dtype, weights dtype, note). bf16 only where the GPU has it natively; on an fp16-only GPU Unsloth
    trains Gemma 3, 3n and 4 on its float32 path (families.Family.fp16_gpu_path)."""
    from ..models.loader import select_dtype

    asked = str(select_dtype(backend, device.kind == "cuda", device.bf16)).removeprefix("torch.")
    if backend == "unsloth" and asked == "float16" and family.fp16_gpu_path == "float32":
        return "float32", "float16", (f"{family.label} on a GPU without bf16: Unsloth loads it in bfloat16, casts the weights to "
                                      "float16 and trains in float32 with autocast off (FORCE_FLOAT32); activations are "
                                      "priced at 4 bytes")
    return asked, asked, None


def _prep_tokens(report: Path) -> dict[str, dict]:
    """prep_report.json's token-length stats per split; a malformed file is one clear line naming the field."""
    def bad(field_name: str, found) -> UserError:
        return UserError(f"{report}: {field_name} {found}; run prepare_data.py again to rewrite it")

    try:
        raw = json.loads(report.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{report}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise bad("is not valid JSON:", str(exc).splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise bad("is not a JSON object: found a", type(raw).__name__)
    tokens = raw.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise bad("tokens must be an object of per-split length stats, found", json.dumps(tokens)[:60])
    out = {}
    for split, stats in tokens.items():
        if stats is None:
            continue
        if not isinstance(stats, dict):
            raise bad(f"tokens.{split} must be an object, found", json.dumps(stats)[:60])
        for key in ("mean", "max"):
            value = stats.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == math.inf:
                raise bad(f"tokens.{split}.{key} must be a non-negative number, found", json.dumps(value)[:60])
        out[split] = stats
    return out


def _data_stats(recipe: Recipe) -> tuple[int | None, dict[str, dict]]:
    """Training records and per-split token-length stats of the prepared data, when prepare_data.py has run."""
    folder = recipe.data_dir
    records = None
    if (folder / "train.jsonl").is_file():
        with (folder / "train.jsonl").open(encoding="utf-8", errors="replace") as handle:
            records = sum(1 for line in handle if line.strip())
    report = folder / "prep_report.json"
    return records, _prep_tokens(report) if report.is_file() else {}


def _plan(recipe: Recipe, device: Device):
    """train.plan_run as the run would call it, except that Unsloth is never imported: a named GPU is planned as
    the Colab/Kaggle setup the README installs (Unsloth there); this machine by whether Unsloth is installed.
    Returns the plan and the backend evaluation would load with (prefix tuning trains on hf whatever it asks)."""
    import importlib.util

    from ..models.backend import resolve_backend
    from ..training.run import plan_run

    has_unsloth = device.name in GPUS or importlib.util.find_spec("unsloth") is not None
    plan = plan_run(recipe, cuda=device.kind == "cuda", has_unsloth=has_unsloth)
    return plan, resolve_backend(recipe.backend, unsloth_imports=has_unsloth, cuda=device.kind == "cuda")[0]


def _setup(recipe: Recipe, device: Device, arch: Arch, seq_len: int):
    plan, _ = _plan(recipe, device)
    t, lora = recipe.train, recipe.lora
    if not t.gradient_checkpointing:
        checkpointing = "off"
    else:  # as training.run.attach_adapter: Unsloth's own offloaded checkpointing, else transformers'
        checkpointing = "offloaded" if plan.backend == "unsloth" else "on"
    family = FAMILIES[arch.family]
    dtype, weights_dtype, _ = plan_dtypes(plan.backend, device, family)
    setup = Setup(arch, device.kind, plan.backend, plan.method, dtype, plan.optimizer, t.batch_size, seq_len, checkpointing,
                  lora.r, tuple(lora.targets(family)), lora.dropout, recipe.prefix.num_virtual_tokens,
                  weights_dtype=weights_dtype, below_ampere=device.kind == "cuda" and not device.bf16,
                  memory_bytes=int(device.memory_gib * GIB) if device.kind == "cuda" else 0)
    return plan, setup


def _peak_seq_len(recipe: Recipe, tokens: dict[str, dict]) -> tuple[int, str]:
    t, train = recipe.train, tokens.get("train")
    if t.packing:
        return t.max_seq_length, "train.max_seq_length (packing fills every row)"
    if train and train.get("max"):
        return min(t.max_seq_length, int(train["max"])), "longest prepared training example (batches pad to their longest)"
    return t.max_seq_length, "train.max_seq_length (upper bound; prepare the data for its real lengths)"


def _steps(recipe: Recipe, records: int | None) -> tuple[int | None, str]:
    t = recipe.train
    if t.max_steps > 0:
        return t.max_steps, "train.max_steps"
    if records is None:
        return None, f"unknown until prepare_data.py writes {recipe.data_dir / 'train.jsonl'}"
    per_epoch = max(1, math.ceil(math.ceil(records / t.batch_size) / t.grad_accum))  # as transformers' Trainer counts
    return math.ceil(t.epochs * per_epoch), f"{t.epochs:g} epochs x {per_epoch} steps ({records} records)"


# ---------------------------------------------------------------- the evaluation after training


def _eval_lengths(recipe: Recipe, tokens: dict[str, dict]) -> tuple[int, int, str]:
    """(longest prompt, longest prompt + answer, where from): the prepared split's stats, else the upper bound."""
    t, split = recipe.train.max_seq_length, recipe.eval.split
    stats = tokens.get(split)
    if recipe.rag.index:
        return t, t, "train.max_seq_length (rag.index adds passages the prepared lengths do not include)"
    if stats and stats.get("max"):
        longest = int(stats["max"])
        return longest, min(longest, t), (f"longest prepared {split} example, {longest} tokens (prompt + answer: an upper "
                                           f"bound on the prompt; prep_report.json)")
    return t, t, "train.max_seq_length (upper bound; prepare the data for its real lengths)"


def eval_setup(recipe: Recipe, device: Device, arch: Arch, tokens: dict[str, dict]) -> tuple[EvalSetup, str]:
    """evaluate.py after this run: the base loaded in 4-bit where the run trained qlora on CUDA, the adapter on it."""
    plan, backend = _plan(recipe, device)
    family = FAMILIES[arch.family]
    dtype, weights_dtype, _ = plan_dtypes(backend, device, family)
    max_prompt, max_example, source = _eval_lengths(recipe, tokens)
    ev = recipe.eval
    n_adapter = adapter_params(arch, plan.method, tuple(recipe.lora.targets(family)), recipe.lora.r,
                               recipe.prefix.num_virtual_tokens)
    return EvalSetup(arch, device.kind, backend, method_of(plan.method).weights_4bit, BYTES[weights_dtype], BYTES[dtype], n_adapter,
                     ev.batch_size, ev.batch_tokens, max_prompt, max_example, ev.max_new_tokens, ev.answer_stats,
                     below_ampere=device.kind == "cuda" and not device.bf16), source


# ---------------------------------------------------------------- verdict and suggestions

TIGHT = 0.92  # above this share of the device's memory, allocator spikes can still OOM


def verdict(est: Estimate, device: Device) -> str:
    """fits / tight / does not fit. Paged optimizer states (bitsandbytes unified memory) move to CPU RAM when the GPU
    runs out instead of raising OOM, so a run that fits without them is tight (slower), not a failure."""
    limit = device.memory_gib * GIB
    if est.total <= TIGHT * limit:
        return "fits"
    return "tight" if est.total - est.spillable <= limit else "does not fit"


@dataclass
class Suggestion:
    overrides: list[str]
    total_gib: float
    verdict: str

    def text(self) -> str:
        return " ".join(f"--set {o}" for o in self.overrides)


def _candidates(recipe: Recipe, setup: Setup, device: Device) -> list[list[str]]:
    """Single changes, least intrusive first; each keeps the effective batch where it touches the batch."""
    t, out = recipe.train, []
    if setup.gradient_checkpointing == "off" and method_of(setup.method).checkpointing:
        out.append(["train.gradient_checkpointing=true"])
    if device.kind == "cuda" and setup.method == "lora":  # the method whose 4-bit variant (qlora) saves memory
        out.append(["train.method=qlora"])
    if device.kind == "cuda" and "8bit" not in setup.optimizer:
        out.append(["train.optimizer=adamw_8bit"])
    batch = t.batch_size
    while batch > 1:
        batch //= 2
        out.append([f"train.batch_size={batch}", f"train.grad_accum={t.grad_accum * t.batch_size // batch}"])
    if method_of(setup.method).peft_type == "LORA":
        r = recipe.lora.r
        while r > 8:
            r //= 2
            out.append([f"lora.r={r}", f"lora.alpha={max(1, recipe.lora.alpha * r // recipe.lora.r)}"])
    seq = t.max_seq_length
    while seq > 256:
        seq //= 2
        out.append([f"train.max_seq_length={seq}"])
    return out


def suggestions(recipe: Recipe, device: Device, arch: Arch, limit: int = 4) -> list[Suggestion]:
    """Changes that make the estimate fit, each checked by re-running the estimate on the changed recipe.

    The first fitting option of each kind (checkpointing, 4-bit, 8-bit optimizer, batch, rank, length); if no
    single change fits, the changes are combined greedily in that order until one does.
    """
    _, tokens = _data_stats(recipe)
    _, base = _setup(recipe, device, arch, _peak_seq_len(recipe, tokens)[0])
    found: list[Suggestion] = []
    kinds: set[str] = set()

    def trial(overrides: list[str]) -> Suggestion | None:
        changed = copy.deepcopy(recipe)
        try:
            for item in overrides:
                apply_override(changed, item)
            _, s = _setup(changed, device, arch, _peak_seq_len(changed, tokens)[0])
        except UserError:
            return None
        est = estimate(s)
        return Suggestion(overrides, round(est.gib(), 1), verdict(est, device))

    for overrides in _candidates(recipe, base, device):
        kind = overrides[0].split("=")[0]
        if kind in kinds:
            continue
        result = trial(overrides)
        if result and result.verdict == "fits":
            found.append(result)
            kinds.add(kind)
    if not found:  # combine greedily: keep every change that lowers the estimate, stop when it fits
        combined: list[str] = []
        best = estimate(base).total
        for overrides in _candidates(recipe, base, device):
            keys = {o.split("=")[0] for o in overrides}
            trial_set = [o for o in combined if o.split("=")[0] not in keys] + overrides
            result = trial(trial_set)
            if result and result.total_gib * GIB < best:
                combined, best = trial_set, result.total_gib * GIB
                if result.verdict == "fits":
                    found.append(result)
                    break
    return found[:limit]


def eval_suggestions(recipe: Recipe, device: Device, arch: Arch, tokens: dict[str, dict]) -> list[Suggestion]:
    """The largest eval.batch_tokens (halving) whose evaluation estimate fits; none when even one prompt alone does not."""
    es, _ = eval_setup(recipe, device, arch, tokens)
    budget = es.batch_tokens // 2
    while budget >= 1:
        est = eval_estimate(dataclasses.replace(es, batch_tokens=budget))
        if verdict(est, device) == "fits":
            return [Suggestion([f"eval.batch_tokens={budget}"], round(est.gib(), 1), "fits")]
        if budget <= es.width:  # a single row already: smaller budgets change nothing
            break
        budget //= 2
    return []


# ---------------------------------------------------------------- the public API


@dataclass
class Preflight:
    recipe: str
    model: str
    arch: Arch
    device: Device
    backend: str
    method: str
    dtype: str
    weights_dtype: str
    optimizer: str
    gradient_checkpointing: str
    notes: list[str]
    batch_size: int
    grad_accum: int
    seq_len: int
    seq_len_source: str
    steps: int | None
    steps_source: str
    tokens_per_step: int
    tokens_source: str
    estimate: Estimate
    verdict: str
    eval: EvalSetup
    eval_lengths_source: str
    eval_estimate: Estimate
    eval_verdict: str
    suggestions: list[Suggestion] = field(default_factory=list)
    eval_suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def to_dict(self) -> dict:
        def memory(est: Estimate, verdict_: str) -> dict:
            return {"components": [{"name": c.name, "gib": round(c.bytes / GIB, 3), "bytes": c.bytes, "detail": c.detail}
                                   for c in est.components],
                    "total_gib": round(est.gib(), 2), "device_gib": self.device.memory_gib, "verdict": verdict_}

        e = self.eval
        return {
            "recipe": self.recipe, "model": self.model, "architecture": self.arch.summary(),
            "device": {"name": self.device.name, "label": self.device.label, "memory_gib": self.device.memory_gib,
                       "compute_capability": ".".join(map(str, self.device.capability)) if self.device.capability else None,
                       "native_bf16": self.device.bf16},
            "plan": {"backend": self.backend, "method": self.method, "dtype": self.dtype, "weights_dtype": self.weights_dtype,
                     "optimizer": self.optimizer, "gradient_checkpointing": self.gradient_checkpointing, "notes": self.notes},
            "batch": {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "effective": self.effective_batch,
                      "seq_len_for_peak": self.seq_len, "seq_len_source": self.seq_len_source,
                      "steps": self.steps, "steps_source": self.steps_source,
                      "tokens_per_step": self.tokens_per_step, "tokens_source": self.tokens_source},
            "memory": memory(self.estimate, self.verdict),
            "suggestions": [{"set": s.overrides, "total_gib": s.total_gib, "verdict": s.verdict} for s in self.suggestions],
            "evaluation": {"backend": e.backend, "four_bit": e.four_bit, "batch_size": e.batch_size, "batch_tokens": e.batch_tokens,
                           "max_prompt": e.max_prompt, "max_example": e.max_example, "lengths_source": self.eval_lengths_source,
                           "max_new_tokens": e.new_tokens, "decode_buffer": e.decode_buffer,
                           "memory": memory(self.eval_estimate, self.eval_verdict),
                           "suggestions": [{"set": s.overrides, "total_gib": s.total_gib, "verdict": s.verdict}
                                           for s in self.eval_suggestions]},
        }


def preflight(recipe: Recipe, gpu: str | None = None) -> Preflight:
    """What `train_qlora.py` would run for this recipe on `gpu` (a GPUS name; None: this machine), and the peak memory of
    its training step and of the evaluation after it."""
    device = gpu_device(gpu) if gpu else local_device()
    arch = resolve_arch(recipe.model)
    records, tokens = _data_stats(recipe)
    seq_len, seq_source = _peak_seq_len(recipe, tokens)
    plan, setup = _setup(recipe, device, arch, seq_len)
    notes = list(plan.notes)
    dtype_note = plan_dtypes(setup.backend, device, FAMILIES[arch.family])[2]
    if dtype_note:
        notes.append(dtype_note)
    if "paged" in setup.optimizer:
        notes.append(f"{setup.optimizer} pages its states to CPU RAM when the GPU is full (slower, no OOM); "
                     "they are counted on the GPU, and a run that fits only without them is 'tight'")
    t = recipe.train
    steps, steps_source = _steps(recipe, records)
    effective = t.batch_size * t.grad_accum
    train = tokens.get("train")
    if train and train.get("mean") and not t.packing:
        tokens_per_step, tokens_source = int(effective * train["mean"]), f"{effective} x mean {train['mean']} tokens (prep_report.json)"
    else:
        tokens_per_step, tokens_source = effective * t.max_seq_length, f"{effective} x {t.max_seq_length} (upper bound)"
    est = estimate(setup)
    es, lengths_source = eval_setup(recipe, device, arch, tokens)
    eval_est = eval_estimate(es)
    result = Preflight(recipe.name, recipe.model, arch, device, setup.backend, setup.method, setup.dtype,
                       setup.weights_dtype or setup.dtype, setup.optimizer, setup.gradient_checkpointing, notes, t.batch_size,
                       t.grad_accum, seq_len, seq_source, steps, steps_source, tokens_per_step, tokens_source, est,
                       verdict(est, device), es, lengths_source, eval_est, verdict(eval_est, device))
    if result.verdict != "fits":
        result.suggestions = suggestions(recipe, device, arch)
    if result.eval_verdict != "fits":
        result.eval_suggestions = eval_suggestions(recipe, device, arch, tokens)
    return result


def render(pf: Preflight):
    """A rich renderable: the plan, the two memory tables (training, evaluation), their verdicts and the changes that
    would make them fit."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    plan = Table(title=f"plan: {pf.recipe} on {pf.device.label}", show_header=False, title_justify="left")
    plan.add_column(style="bold")
    plan.add_column()
    p, e = pf.arch.params, pf.eval
    dtype = pf.dtype if pf.weights_dtype == pf.dtype else f"{pf.dtype} (weights in {pf.weights_dtype})"
    rows = [
        ("model", f"{pf.model} ({FAMILIES[pf.arch.family].label}, {p.total / 1e9:.2f}B params, language model; {pf.arch.source})"),
        ("backend / method", f"{pf.backend} / {pf.method}"),
        ("dtype", dtype), ("optimizer", pf.optimizer), ("gradient checkpointing", pf.gradient_checkpointing),
        ("batch", f"{pf.batch_size} x {pf.grad_accum} accumulation = {pf.effective_batch} per step"),
        ("sequence length (peak)", f"{pf.seq_len}: {pf.seq_len_source}"),
        ("steps", f"{pf.steps if pf.steps is not None else '?'}: {pf.steps_source}"),
        ("tokens per step", f"{pf.tokens_per_step:,}: {pf.tokens_source}"),
        ("evaluation", f"{e.backend}, {'4-bit base + adapter' if e.four_bit else 'base + adapter'}; batches of <= {e.batch_size} "
                       f"prompts and <= {e.batch_tokens:,} tokens; prompts <= {e.max_prompt} tokens: {pf.eval_lengths_source}"),
    ]
    for key, value in rows:
        plan.add_row(key, value)
    for note in pf.notes:
        plan.add_row("[yellow]note[/]", note)
    parts: list = [plan]
    for title, est, verdict_, fixes in (("training step", pf.estimate, pf.verdict, pf.suggestions),
                                         ("evaluation (evaluate.py after this run)", pf.eval_estimate, pf.eval_verdict, pf.eval_suggestions)):
        mem = Table(title=f"estimated peak memory: {title}", title_justify="left")
        mem.add_column("component")
        mem.add_column("GiB", justify="right")
        mem.add_column("how")
        for c in est.components:
            mem.add_row(c.name, f"{c.bytes / GIB:.2f}", c.detail)
        mem.add_row("[bold]total[/]", f"[bold]{est.gib():.1f}[/]", f"of {pf.device.memory_gib} GiB on {pf.device.name}")
        colour = {"fits": "green", "tight": "yellow", "does not fit": "red"}[verdict_]
        parts += [mem, Text.from_markup(f"[bold {colour}]{title}: {verdict_}[/]: estimate {est.gib():.1f} GiB of "
                                        f"{pf.device.memory_gib} GiB (an estimate: within about ±25 % of published and "
                                        "measured peaks, docs/memory_estimate.md)")]
        parts += [Text(f"  try {s.text()}  -> {s.total_gib} GiB ({s.verdict})") for s in fixes]
        if verdict_ != "fits" and not fixes:
            parts.append(Text("  no single change found that fits; try a smaller model or a larger GPU"))
    return Group(*parts)

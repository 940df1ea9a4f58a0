"""Pre-flight for `train_qlora.py --plan`: what would run, and will it fit, without loading a single weight.

`preflight(recipe, gpu)` resolves the run plan exactly as training would (backend, method, dtype, optimizer and
every fallback note), reads the model's architecture (a built-in table, a local config.json, or the embedded
model's cached config.json), and estimates peak memory per component in bytes. The method, its sources
and its check against measured figures are in docs/memory_estimate.md. Nothing here imports unsloth.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .paths import EMBEDDED_MODELS, EMBEDDED_PREFIX, cache_root, looks_like_hub_id
from .families import FAMILIES, LANGUAGE_MODEL_LINEAR
from .recipe import Recipe, apply_override

GIB = 2**30

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


# ---------------------------------------------------------------- architectures


@dataclass(frozen=True)
class Arch:
    name: str
    family: str  # gemma | gemma2 | gemma3 | other
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool = True
    source: str = "built-in table"

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.family in ("gemma2", "gemma3") else 2  # Gemma 2/3 add pre/post-feedforward norms

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder block."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def params(self) -> dict[str, int]:
        """Parameter counts: the quantisable linear layers, and the rest (embeddings, lm_head if untied, norms)."""
        linear = self.layers * sum(a * b for a, b in self.linears().values())
        norms = self.layers * self.norms_per_layer * self.hidden + self.hidden
        if self.family == "gemma3":
            norms += self.layers * 2 * self.head_dim  # q_norm, k_norm
        embedding = self.vocab * self.hidden * (1 if self.tied else 2)
        return {"linear": linear, "embedding": embedding, "norms": norms, "total": linear + embedding + norms}


def _gemma(name, family, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate) -> Arch:
    return Arch(name, family, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate)


# Published config.json values; gemma-2b/7b and gemma-2-2b/9b equal bench/configs/*.json (a test checks),
# gemma-3-270m equals the embedded GGUF's header (checked in docs/memory_estimate.md).
KNOWN_ARCHS = {a.name: a for a in [
    _gemma("gemma-2b", "gemma", 256000, 2048, 18, 8, 1, 256, 16384),
    _gemma("gemma-7b", "gemma", 256000, 3072, 28, 16, 16, 256, 24576),
    _gemma("gemma-2-2b", "gemma2", 256000, 2304, 26, 8, 4, 256, 9216),
    _gemma("gemma-2-9b", "gemma2", 256000, 3584, 42, 16, 8, 256, 14336),
    _gemma("gemma-2-27b", "gemma2", 256000, 4608, 46, 32, 16, 128, 36864),
    _gemma("gemma-3-270m", "gemma3", 262144, 640, 18, 4, 1, 256, 2048),
    _gemma("gemma-3-1b", "gemma3", 262144, 1152, 26, 4, 1, 256, 6912),
]}
_ALIASES = {"gemma-1.1-2b": "gemma-2b", "gemma-1.1-7b": "gemma-7b"}


def _hub_key(spec: str) -> str:
    """google/gemma-7b-it, unsloth/gemma-7b-it-bnb-4bit, ... -> gemma-7b."""
    name = spec.split("/", 1)[1].lower()
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit", "-it", "-pt"):
        name = name.removesuffix(suffix)
    return _ALIASES.get(name, name)


def arch_from_config(cfg: dict, name: str, source: str) -> Arch:
    """An Arch from a transformers config.json (multimodal Gemma 3 keeps the language model under text_config)."""
    text = cfg.get("text_config") or cfg
    model_type = text.get("model_type", cfg.get("model_type", ""))
    family = {"gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3", "gemma3_text": "gemma3"}.get(model_type, "other")
    try:
        heads = text["num_attention_heads"]
        return Arch(name, family, text["vocab_size"], text["hidden_size"], text["num_hidden_layers"], heads,
                    text.get("num_key_value_heads") or heads, text.get("head_dim") or text["hidden_size"] // heads,
                    text["intermediate_size"], bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", True))),
                    source)
    except KeyError as exc:
        raise UserError(f"{source}: config has no {exc.args[0]}; cannot estimate memory for this model") from None


def _embedded_arch(name: str) -> Arch:
    if name not in EMBEDDED_MODELS:
        raise UserError(f"unknown embedded model '{name}'; valid: {', '.join('embedded:' + n for n in EMBEDDED_MODELS)}")
    converted = cache_root() / name / "config.json"
    if converted.is_file():
        return arch_from_config(json.loads(converted.read_text(encoding="utf-8")), name, str(converted))
    # Not converted yet: the table, which equals the GGUF header (arch_from_gguf; parsing it takes 10-25 s here).
    return dataclasses.replace(KNOWN_ARCHS[name], source="built-in table, = its GGUF header")


def arch_from_gguf(path: Path, name: str) -> Arch:
    """Read the architecture from a GGUF header with the gguf library; no tensor is dequantised (but the reader
    indexes every tensor, 10-25 s for the embedded model, so --plan uses the table and tests check it against this)."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def value(key: str):
        fld = reader.fields[key]
        return fld.parts[fld.data[0]].tolist()[0]

    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    return Arch(name, "gemma3" if arch == "gemma3" else "other", len(reader.fields["tokenizer.ggml.tokens"].data),
                value(f"{arch}.embedding_length"), value(f"{arch}.block_count"), value(f"{arch}.attention.head_count"),
                value(f"{arch}.attention.head_count_kv"), value(f"{arch}.attention.key_length"),
                value(f"{arch}.feed_forward_length"), tied, f"GGUF header {path}")


def resolve_arch(spec: str) -> Arch:
    if spec.startswith(EMBEDDED_PREFIX):
        return _embedded_arch(spec[len(EMBEDDED_PREFIX):])
    folder = Path(spec).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            raise UserError(f"model folder {folder} has no config.json; expected a transformers model folder")
        return arch_from_config(json.loads(config.read_text(encoding="utf-8")), folder.name, str(config))
    if looks_like_hub_id(spec) and _hub_key(spec) in KNOWN_ARCHS:
        return dataclasses.replace(KNOWN_ARCHS[_hub_key(spec)], source=f"built-in table ({spec})")
    raise UserError(f"no built-in architecture for model '{spec}' (known: {', '.join(KNOWN_ARCHS)}); download it and "
                    f"pass the folder with --set model=/path/to/folder (--plan reads only its config.json)")


# ---------------------------------------------------------------- the estimate

CUDA_CONTEXT = int(0.5 * GIB)  # CUDA context + cuBLAS/cuDNN workspaces: outside torch's allocator, ~0.3-0.6 GB
# The CPU figures are fitted to this project's measured peak RSS (docs/memory_estimate.md): the imports alone are
# 0.57 GiB; the rest of the fixed part is the tokenizer, the data and the model load. glibc keeps freed blocks of
# every padded batch shape, so the CPU's slack on short-lived tensors is far larger than CUDA's caching allocator's.
CPU_RUNTIME = int(1.85 * GIB)
FRAGMENTATION = {"cuda": 0.10, "cpu": 0.50}  # share of activations + logits
NF4_BYTES = 0.5 + 0.127 / 8  # 4-bit NF4 + double-quantised constants: 0.127 bits/param (QLoRA paper, sec. 3)
TRL_TOKEN_TILE, TRL_VOCAB_TILE = 4096, 32768  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE
OFFLOAD_BUFFERS = 2  # hidden states Unsloth's offloaded checkpointing keeps on the GPU while copying


@dataclass(frozen=True)
class Setup:
    """Everything the estimate depends on, resolved from a recipe, its plan and the device."""

    arch: Arch
    device: str  # cuda | cpu
    backend: str  # unsloth | hf
    method: str  # lora | qlora | prefix
    dtype: str  # float32 | float16 | bfloat16
    optimizer: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: str  # off | on | offloaded
    lora_r: int = 16
    lora_targets: tuple[str, ...] = LANGUAGE_MODEL_LINEAR
    lora_dropout: float = 0.0
    prefix_tokens: int = 16

    @property
    def elem(self) -> int:
        return 4 if self.dtype == "float32" else 2

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


@dataclass
class Component:
    name: str
    bytes: int
    detail: str


@dataclass
class Estimate:
    components: list[Component]
    spillable: int = 0  # bytes a paged optimizer can evict to CPU RAM under pressure

    @property
    def total(self) -> int:
        return sum(c.bytes for c in self.components)

    def gib(self) -> float:
        return self.total / GIB


def trainable_params(s: Setup) -> int:
    if s.method == "prefix":  # a key and a value per virtual token and layer
        return s.prefix_tokens * s.arch.layers * 2 * s.arch.kv_heads * s.arch.head_dim
    shapes = s.arch.linears()
    return s.arch.layers * sum(s.lora_r * (shapes[m][0] + shapes[m][1]) for m in s.lora_targets if m in shapes)


def optimizer_state_bytes(optimizer: str) -> int:
    """Bytes of optimizer state per trainable parameter: AdamW keeps two fp32 moments; 8-bit variants one byte each."""
    name = optimizer.lower()
    if "8bit" in name:
        return 2
    if "sgd" in name or "adafactor" in name or "lion" in name:
        return 4
    return 8


def base_weight_bytes(s: Setup) -> tuple[int, str]:
    p = s.arch.params()
    rest = p["embedding"] + p["norms"]
    if s.method != "qlora":
        return p["total"] * s.elem, f"{p['total'] / 1e9:.2f}B params x {s.elem} B ({s.dtype})"
    # bitsandbytes quantises only the decoder's linear layers; embeddings (and a tied lm_head) stay in 16 bit,
    # and peft's prepare_model_for_kbit_training (hf path) casts them to fp32.
    rest_elem = 4 if s.backend == "hf" else s.elem
    detail = (f"{p['linear'] / 1e9:.2f}B linear params in 4-bit NF4 ({NF4_BYTES:.3f} B each) + "
              f"{rest / 1e9:.2f}B embedding/norm params x {rest_elem} B")
    return int(p["linear"] * NF4_BYTES + rest * rest_elem), detail


def layer_activation_bytes_per_token(s: Setup) -> int:
    """Bytes autograd keeps per token for one decoder block (SDPA/flash attention; see the doc for the tally).

    Same bookkeeping as Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
    Models", sec. 4.1), redone for a frozen Gemma block with LoRA: frozen linears keep no input for a weight
    gradient, but the nonlinearities, RMSNorms (which upcast to fp32), attention and LoRA's dropout do.
    """
    a, e = s.arch, s.elem
    q, kv, i, h = a.heads * a.head_dim, a.kv_heads * a.head_dim, a.intermediate, a.hidden
    norms = a.norms_per_layer * h * (e + 4)  # each RMSNorm keeps its input and an fp32 copy
    norm_out = 2 * h * e  # the normed inputs of the attention and MLP projections
    attention = (2 * q + 2 * kv) * e  # q and k after RoPE, v, and the attention output (flash/SDPA keep no S x S)
    mlp = 4 * i * e  # gate, up, gelu(gate), and their product (down_proj's input)
    lora = 0
    if s.method != "prefix" and s.lora_dropout > 0:  # peft applies dropout per module: a copy of its input + mask
        lora = sum(a.linears()[m][0] for m in s.lora_targets if m in a.linears()) * (e + 1)
    scores = 0
    if s.backend == "unsloth" and a.family == "gemma2":
        # Gemma 2's logit softcapping keeps Unsloth off flash attention: S x S scores and probabilities per head
        scores = 2 * a.heads * s.seq_len * e
    return norms + norm_out + attention + mlp + lora + scores


def activation_bytes(s: Setup) -> tuple[int, str]:
    per_layer = layer_activation_bytes_per_token(s) * s.tokens
    hidden = s.arch.hidden * s.elem * s.tokens  # one hidden state, e.g. a checkpointed layer input
    embed = s.arch.hidden * (s.elem + 4) * s.tokens  # embedding output and the final norm
    if s.gradient_checkpointing == "offloaded":
        return per_layer + OFFLOAD_BUFFERS * hidden + embed, "one block recomputed at a time; layer inputs offloaded to CPU RAM (Unsloth)"
    if s.gradient_checkpointing == "on":
        return per_layer + s.arch.layers * hidden + embed, f"{s.arch.layers} checkpointed layer inputs + one block recomputed"
    return s.arch.layers * per_layer + embed, f"all {s.arch.layers} blocks' activations kept for backward"


def logits_bytes(s: Setup) -> tuple[int, str]:
    """TRL's SFTTrainer (1.15+) patches the LM head (trl.trainer.utils.add_fused_lm_head): log-probabilities come from
    [4096 tokens x 32768 vocab] tiles, so the full batch x seq x vocab logits never exist, on either backend; backward
    re-projects tile by tile into an fp32 gradient of the final hidden states."""
    tile = min(s.tokens, TRL_TOKEN_TILE) * min(s.arch.vocab, TRL_VOCAB_TILE) * s.elem
    per_token = s.tokens * (s.arch.hidden * 4 + 8 * 4)  # fp32 hidden-state gradient + a few fp32 per-token sums
    return tile + per_token, (f"TRL's chunked LM head: a {min(s.tokens, TRL_TOKEN_TILE)} x {min(s.arch.vocab, TRL_VOCAB_TILE)} "
                              f"logit tile + fp32 hidden-state gradient (full logits would be {full_logits_bytes(s) / GIB:.1f} GiB)")


def full_logits_bytes(s: Setup) -> int:
    """What transformers' own loss would hold: logits, their fp32 upcast (none if already fp32), the saved
    log-softmax and its gradient, plus Gemma 2's final softcapping (tanh keeps input and output)."""
    per = s.elem + (4 if s.elem != 4 else 0) + 4 + 4 + (2 * s.elem if s.arch.family == "gemma2" else 0)
    return s.tokens * s.arch.vocab * per


def estimate(s: Setup) -> Estimate:
    base, base_detail = base_weight_bytes(s)
    n = trainable_params(s)
    opt = optimizer_state_bytes(s.optimizer)
    act, act_detail = activation_bytes(s)
    logit, logit_detail = logits_bytes(s)
    slack = int(FRAGMENTATION[s.device] * (act + logit))
    parts = [
        Component("base weights", base, base_detail),
        Component("trainable weights + grads", n * 8, f"{n / 1e6:.1f}M params x (4 B fp32 weight + 4 B grad)"),
        Component("optimizer states", n * opt, f"{s.optimizer}: {opt} B per trainable param"),
        Component("activations", act, act_detail),
        Component("logits + loss", logit, logit_detail),
        Component("allocator slack", slack, f"{FRAGMENTATION[s.device]:.0%} of activations + logits"),
    ]
    if s.device == "cuda":
        parts.append(Component("CUDA context", CUDA_CONTEXT, "driver context, cuBLAS/cuDNN workspaces"))
    else:
        parts.append(Component("process runtime", CPU_RUNTIME, "imports, tokenizer, data, model load: fitted to measured RSS"))
    return Estimate(parts, spillable=n * opt if "paged" in s.optimizer else 0)


# ---------------------------------------------------------------- recipe -> plan -> setup


def _dtype_name(backend: str, device: Device) -> str:
    from .models import select_dtype

    dtype = select_dtype(backend, device.kind == "cuda", device.bf16)  # bf16 only where the GPU has it natively
    return str(dtype).removeprefix("torch.")


def _data_stats(recipe: Recipe) -> tuple[int | None, dict | None]:
    """Training records and token-length stats of the prepared data, when prepare_data.py has run."""
    folder = recipe.data_dir
    records = None
    if (folder / "train.jsonl").is_file():
        with (folder / "train.jsonl").open(encoding="utf-8") as handle:
            records = sum(1 for line in handle if line.strip())
    tokens = None
    report = folder / "prep_report.json"
    if report.is_file():
        try:
            tokens = (json.loads(report.read_text(encoding="utf-8")).get("tokens") or {}).get("train")
        except (json.JSONDecodeError, AttributeError):
            tokens = None
    return records, tokens


def _plan(recipe: Recipe, device: Device):
    """train.plan_run as the run would call it, except that Unsloth is never imported: a named GPU is planned as
    the Colab/Kaggle setup the README installs (Unsloth there); this machine by whether Unsloth is installed."""
    import importlib.util

    from .train import plan_run

    has_unsloth = device.name in GPUS or importlib.util.find_spec("unsloth") is not None
    return plan_run(recipe, cuda=device.kind == "cuda", has_unsloth=has_unsloth)


def _setup(recipe: Recipe, device: Device, arch: Arch, seq_len: int):
    plan = _plan(recipe, device)
    t, lora = recipe.train, recipe.lora
    if not t.gradient_checkpointing:
        checkpointing = "off"
    else:  # as train.attach_adapter: Unsloth's own offloaded checkpointing, else transformers'
        checkpointing = "offloaded" if plan.backend == "unsloth" else "on"
    targets = tuple(lora.targets(FAMILIES.get(arch.family, FAMILIES["gemma"])))
    setup = Setup(arch, device.kind, plan.backend, plan.method, _dtype_name(plan.backend, device), plan.optimizer,
                  t.batch_size, seq_len, checkpointing, lora.r, targets, lora.dropout, recipe.prefix.num_virtual_tokens)
    return plan, setup


def _peak_seq_len(recipe: Recipe, tokens: dict | None) -> tuple[int, str]:
    t = recipe.train
    if t.packing:
        return t.max_seq_length, "train.max_seq_length (packing fills every row)"
    if tokens and tokens.get("max"):
        return min(t.max_seq_length, int(tokens["max"])), "longest prepared training example (batches pad to their longest)"
    return t.max_seq_length, "train.max_seq_length (upper bound; prepare the data for its real lengths)"


def _steps(recipe: Recipe, records: int | None) -> tuple[int | None, str]:
    t = recipe.train
    if t.max_steps > 0:
        return t.max_steps, "train.max_steps"
    if records is None:
        return None, f"unknown until prepare_data.py writes {recipe.data_dir / 'train.jsonl'}"
    per_epoch = max(1, math.ceil(math.ceil(records / t.batch_size) / t.grad_accum))  # as transformers' Trainer counts
    return math.ceil(t.epochs * per_epoch), f"{t.epochs:g} epochs x {per_epoch} steps ({records} records)"


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
    if setup.gradient_checkpointing == "off" and setup.method != "prefix":
        out.append(["train.gradient_checkpointing=true"])
    if device.kind == "cuda" and setup.method == "lora":
        out.append(["train.method=qlora"])
    if device.kind == "cuda" and "8bit" not in setup.optimizer:
        out.append(["train.optimizer=adamw_8bit"])
    batch = t.batch_size
    while batch > 1:
        batch //= 2
        out.append([f"train.batch_size={batch}", f"train.grad_accum={t.grad_accum * t.batch_size // batch}"])
    if setup.method != "prefix":
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
    suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def to_dict(self) -> dict:
        params = self.arch.params()
        return {
            "recipe": self.recipe, "model": self.model,
            "architecture": {**dataclasses.asdict(self.arch), "parameters": params["total"]},
            "device": {"name": self.device.name, "label": self.device.label, "memory_gib": self.device.memory_gib,
                       "compute_capability": ".".join(map(str, self.device.capability)) if self.device.capability else None,
                       "native_bf16": self.device.bf16},
            "plan": {"backend": self.backend, "method": self.method, "dtype": self.dtype, "optimizer": self.optimizer,
                     "gradient_checkpointing": self.gradient_checkpointing, "notes": self.notes},
            "batch": {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "effective": self.effective_batch,
                      "seq_len_for_peak": self.seq_len, "seq_len_source": self.seq_len_source,
                      "steps": self.steps, "steps_source": self.steps_source,
                      "tokens_per_step": self.tokens_per_step, "tokens_source": self.tokens_source},
            "memory": {"components": [{"name": c.name, "gib": round(c.bytes / GIB, 3), "bytes": c.bytes, "detail": c.detail}
                                      for c in self.estimate.components],
                       "total_gib": round(self.estimate.gib(), 2), "device_gib": self.device.memory_gib,
                       "verdict": self.verdict},
            "suggestions": [{"set": s.overrides, "total_gib": s.total_gib, "verdict": s.verdict} for s in self.suggestions],
        }


def preflight(recipe: Recipe, gpu: str | None = None) -> Preflight:
    """What `train_qlora.py` would run for this recipe on `gpu` (a GPUS name; None: this machine), and its peak memory."""
    device = gpu_device(gpu) if gpu else local_device()
    arch = resolve_arch(recipe.model)
    records, tokens = _data_stats(recipe)
    seq_len, seq_source = _peak_seq_len(recipe, tokens)
    plan, setup = _setup(recipe, device, arch, seq_len)
    notes = list(plan.notes)
    if "paged" in setup.optimizer:
        notes.append(f"{setup.optimizer} pages its states to CPU RAM when the GPU is full (slower, no OOM); "
                     "they are counted on the GPU, and a run that fits only without them is 'tight'")
    t = recipe.train
    steps, steps_source = _steps(recipe, records)
    effective = t.batch_size * t.grad_accum
    if tokens and tokens.get("mean") and not t.packing:
        tokens_per_step, tokens_source = int(effective * tokens["mean"]), f"{effective} x mean {tokens['mean']} tokens (prep_report.json)"
    else:
        tokens_per_step, tokens_source = effective * t.max_seq_length, f"{effective} x {t.max_seq_length} (upper bound)"
    est = estimate(setup)
    result = Preflight(recipe.name, recipe.model, arch, device, setup.backend, setup.method, setup.dtype, setup.optimizer,
                       setup.gradient_checkpointing, notes, t.batch_size, t.grad_accum, seq_len, seq_source, steps,
                       steps_source, tokens_per_step, tokens_source, est, verdict(est, device))
    if result.verdict != "fits":
        result.suggestions = suggestions(recipe, device, arch)
    return result


def render(pf: Preflight):
    """A rich renderable: the plan, the memory table, the verdict and the changes that would make it fit."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    plan = Table(title=f"plan: {pf.recipe} on {pf.device.label}", show_header=False, title_justify="left")
    plan.add_column(style="bold")
    plan.add_column()
    params = pf.arch.params()["total"]
    rows = [
        ("model", f"{pf.model} ({pf.arch.family}, {params / 1e9:.2f}B params; {pf.arch.source})"),
        ("backend / method", f"{pf.backend} / {pf.method}"),
        ("dtype", pf.dtype), ("optimizer", pf.optimizer), ("gradient checkpointing", pf.gradient_checkpointing),
        ("batch", f"{pf.batch_size} x {pf.grad_accum} accumulation = {pf.effective_batch} per step"),
        ("sequence length (peak)", f"{pf.seq_len}: {pf.seq_len_source}"),
        ("steps", f"{pf.steps if pf.steps is not None else '?'}: {pf.steps_source}"),
        ("tokens per step", f"{pf.tokens_per_step:,}: {pf.tokens_source}"),
    ]
    for key, value in rows:
        plan.add_row(key, value)
    for note in pf.notes:
        plan.add_row("[yellow]note[/]", note)

    mem = Table(title="estimated peak memory", title_justify="left")
    mem.add_column("component")
    mem.add_column("GiB", justify="right")
    mem.add_column("how")
    for c in pf.estimate.components:
        mem.add_row(c.name, f"{c.bytes / GIB:.2f}", c.detail)
    mem.add_row("[bold]total[/]", f"[bold]{pf.estimate.gib():.1f}[/]", f"of {pf.device.memory_gib} GiB on {pf.device.name}")
    colour = {"fits": "green", "tight": "yellow", "does not fit": "red"}[pf.verdict]
    parts = [plan, mem, Text.from_markup(f"[bold {colour}]{pf.verdict}[/]: estimate {pf.estimate.gib():.1f} GiB "
                                         f"of {pf.device.memory_gib} GiB (an estimate: within about ±25 % of published and measured peaks, docs/memory_estimate.md)")]
    for s in pf.suggestions:
        parts.append(Text(f"  try {s.text()}  -> {s.total_gib} GiB ({s.verdict})"))
    if pf.verdict != "fits" and not pf.suggestions:
        parts.append(Text("  no single change found that fits; try a smaller model or a larger GPU"))
    return Group(*parts)

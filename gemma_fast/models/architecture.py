"""A model's shape without its weights: the language model built from its config.json on the meta device.

`resolve_arch(spec)` finds the config (a local folder's config.json, the embedded model's converted config, or for a
hub id the published config shipped in gemma_fast/assets/model_configs/), builds the language model alone (the text
config of a multimodal checkpoint, as training loads it) under accelerate's `init_empty_weights`, and reads from it
what the memory estimate needs: parameter counts by kind (what 4-bit NF4 shrinks and what it does not) and, per
decoder layer, the attention shape (heads, head dim, KV heads, KV sharing, sliding window), the MLP width, the experts,
and every linear layer's shape. Nothing is hand-kept per architecture: a new Gemma shape is counted as transformers
builds it. No unsloth import; building a 30B model on the meta device takes well under a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..families import family_for
from ..paths import EMBEDDED_MODELS, EMBEDDED_PREFIX, cache_root, looks_like_hub_id

MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "assets" / "model_configs"
SOURCE_KEY = "_source"  # where a shipped config's values come from; transformers keeps it as an inert attribute
HUB_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit", "-unsloth", "-it", "-pt")
ALIASES = {"gemma-1.1-2b": "gemma-2b", "gemma-1.1-7b": "gemma-7b"}
# Sizes the model is built from: where a config gives one (the config class's default fills a missing one, as the
# Hub's terse Gemma 3 text_config relies on), it must be a positive integer (a list of them for per-layer widths).
SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "num_key_value_heads", "head_dim", "global_head_dim", "num_global_key_value_heads")


# ---------------------------------------------------------------- what the estimate reads


@dataclass(frozen=True)
class Linear:
    name: str  # inside its decoder layer ("self_attn.q_proj"), or the full name for one outside the layers
    in_features: int
    out_features: int


@dataclass(frozen=True)
class Layer:
    """One decoder layer as built."""

    heads: int
    head_dim: int
    kv_heads: int  # 0 on a KV-shared layer: it reads an earlier layer's keys and values, projects and caches none
    window: int | None  # sliding window; None for global attention
    mlp_width: int  # the dense MLP's intermediate size (Gemma 4 E2B doubles it on its KV-shared layers)
    norms: int  # hidden-wide RMSNorms (each keeps its input and an fp32 copy for backward)
    linears: tuple[Linear, ...]
    experts: int = 0  # Gemma 4 26B-A4B: experts beside the dense MLP, `top_k` of them per token
    top_k: int = 0
    expert_width: int = 0

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


@dataclass(frozen=True)
class Params:
    total: int
    linear: int  # nn.Linear weights bitsandbytes turns into 4-bit (not the LM head, not the MoE router)
    embedding: int  # token embedding + Gemma 3n/4's per-layer-embedding table + an untied LM head
    per_layer_embedding: int
    experts: int  # 3-D expert tensors: not nn.Linear, so 4-bit loading leaves them in 16 bit

    @property
    def unquantized(self) -> int:
        """What 4-bit NF4 does not shrink: embeddings, experts, norms, router, scales."""
        return self.total - self.linear


@dataclass(frozen=True)
class Arch:
    name: str
    family: str  # families.FAMILIES key
    source: str
    vocab: int
    hidden: int
    layers: tuple[Layer, ...]
    outer_linears: tuple[Linear, ...]  # linear layers outside the decoder layers (the LM head, PLE's projection)
    params: Params
    tied: bool
    per_layer_input: int  # Gemma 3n/4 per-layer inputs: values per token (layers x 256), 0 without
    final_softcap: float | None

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def summary(self) -> dict[str, Any]:
        """The shape in a few numbers (JSON): what --plan prints and to_dict() writes."""
        widths = sorted({(la.head_dim, la.kv_heads) for la in self.layers if la.kv_heads})
        return {"name": self.name, "family": self.family, "source": self.source, "vocab": self.vocab, "hidden": self.hidden,
                "layers": self.n_layers, "heads": self.layers[0].heads, "head_dims": sorted({la.head_dim for la in self.layers}),
                "kv_heads_by_head_dim": [list(w) for w in widths], "kv_shared_layers": sum(1 for la in self.layers if not la.kv_heads),
                "sliding_layers": sum(1 for la in self.layers if la.window), "experts": self.layers[0].experts,
                "tied": self.tied, "per_layer_input": self.per_layer_input,
                "parameters": {"total": self.params.total, "linear_4bit": self.params.linear,
                               "embedding": self.params.embedding, "per_layer_embedding": self.params.per_layer_embedding,
                               "experts": self.params.experts}}


# ---------------------------------------------------------------- finding the config


def shipped_configs() -> dict[str, Path]:
    """Published configs shipped with gemma_fast, by lower-case hub name without org and suffix (gemma-4-e2b)."""
    return {p.stem.lower(): p for p in sorted(MODEL_CONFIGS.glob("*.json"))}


def hub_key(spec: str) -> str:
    """google/gemma-4-E2B-it, unsloth/gemma-4-E2B-it-unsloth-bnb-4bit, ... -> gemma-4-e2b."""
    name = spec.split("/", 1)[-1].lower()
    stripped = True
    while stripped:
        stripped = False
        for suffix in HUB_SUFFIXES:
            if name.endswith(suffix):
                name, stripped = name[: -len(suffix)], True
    return ALIASES.get(name, name)


def config_path(spec: str) -> tuple[Path, str]:
    """The config.json `--plan` reads for a recipe's model (never a download), and the model's short name."""
    if spec.startswith(EMBEDDED_PREFIX):
        name = spec[len(EMBEDDED_PREFIX):]
        if name not in EMBEDDED_MODELS:
            raise UserError(f"unknown embedded model '{name}'; valid: {', '.join(EMBEDDED_PREFIX + n for n in EMBEDDED_MODELS)}")
        converted = cache_root() / name / "config.json"
        return (converted if converted.is_file() else shipped_configs()[name]), name  # not converted yet: = its GGUF header
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(f"model folder {folder} has no config.json; expected a transformers model folder")
        return folder / "config.json", folder.name
    known = shipped_configs()
    if looks_like_hub_id(spec) and hub_key(spec) in known:
        return known[hub_key(spec)], known[hub_key(spec)].stem
    if not looks_like_hub_id(spec):
        raise UserError(f"model '{spec}': no such folder (expected a transformers model folder with a config.json)")
    raise UserError(f"model '{spec}': no local folder of that name and no published config shipped for it (shipped: "
                    f"{', '.join(p.stem for p in known.values())}, as google/NAME, NAME-it, NAME-pt or unsloth/...); "
                    "download it and pass the folder with --set model=/path/to/folder (--plan reads only its config.json)")


# ---------------------------------------------------------------- reading and checking it


def read_config(path: Path) -> dict:
    """The config.json as a dict, its sizes checked: one clear line for anything the estimate could not use."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise UserError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object (a transformers config), found a {type(raw).__name__}")
    text = raw.get("text_config", raw)
    where = "text_config." if text is not raw else ""
    if not isinstance(text, dict):
        raise UserError(f"{path}: text_config must be a JSON object, found {type(text).__name__}")
    if not isinstance(raw.get("model_type"), str):
        raise UserError(f"{path}: model_type is missing or not a string")
    for key in SIZES:
        if text.get(key) is None:  # absent or null: the config class's default
            continue
        values = text[key] if key == "intermediate_size" and isinstance(text[key], list) else [text[key]]
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise UserError(f"{path}: {where}{key} must be a positive integer, found {json.dumps(text[key])[:60]}")
    return raw


def text_config_of(raw: dict, where: str):
    """The transformers config of the language model alone (a multimodal checkpoint's text_config)."""
    from transformers import AutoConfig

    body = {k: v for k, v in raw.items() if k != SOURCE_KEY}
    model_type = body.pop("model_type")
    family_for(model_type, where)  # a non-Gemma model is an error naming the known ones
    try:
        config = AutoConfig.for_model(model_type, **body)
    except Exception as exc:  # an untrusted file: whatever transformers raises on it becomes one line
        raise UserError(f"{where}: transformers cannot read this config ({type(exc).__name__}: {_first_line(exc)})") from None
    return config.get_text_config()


def meta_model(text_config, where: str):
    """The language model with every tensor on the meta device: shapes, no memory."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    try:
        # include_buffers=True builds under torch.device("meta"); the default (parameters only) leaves a tied LM head
        # as a second parameter under transformers 5, which would count the 262k x hidden table twice
        with init_empty_weights(include_buffers=True):
            return AutoModelForCausalLM.from_config(text_config)
    except Exception as exc:  # sizes that pass read_config can still be inconsistent (heads x head_dim, layer_types)
        raise UserError(f"{where}: cannot build the model from its config ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else "no message"


# ---------------------------------------------------------------- the shape, read off the meta model


def arch_from_model(model, name: str, family: str, source: str) -> Arch:
    import torch

    text_config = model.config
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    tied = head is not None and head.weight is embeddings.weight
    hidden = text_config.hidden_size
    layers = tuple(_layer(layer, hidden, getattr(text_config, "top_k_experts", 0) or 0) for layer in decoder.layers)
    layer_prefix = next(n for n, m in model.named_modules() if m is decoder.layers) + "."

    linear = embedding = per_layer = experts = 0
    outer: list[Linear] = []
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if not module_name.startswith(layer_prefix):
                outer.append(Linear(module_name, module.in_features, module.out_features))
            # bitsandbytes replaces exactly nn.Linear, never the output head; Unsloth also keeps MoE routers in 16 bit
            # (unsloth_zoo/peft_utils.py SKIP_QUANTIZATION_MODULES); transformers' own loader would quantize the router's
            # projection (at most 11M params here)
            if type(module) is torch.nn.Linear and module is not head and "router" not in module_name:
                linear += module.weight.numel()
        elif isinstance(module, torch.nn.Embedding):
            embedding += module.weight.numel()
            if module is not embeddings:
                per_layer += module.weight.numel()
    for param_name, param in model.named_parameters():
        if param.dim() == 3 and ".experts." in f".{param_name}":
            experts += param.numel()
    if head is not None and not tied:
        embedding += head.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    ple = getattr(decoder, "embed_tokens_per_layer", None)
    return Arch(name, family, source, text_config.vocab_size, hidden, layers, tuple(outer),
                Params(total, linear, embedding, per_layer, experts), tied, ple.embedding_dim if ple is not None else 0,
                getattr(text_config, "final_logit_softcapping", None))


def _layer(layer, hidden: int, top_k: int) -> Layer:
    import torch

    attn = layer.self_attn
    head_dim = attn.head_dim
    k_proj = getattr(attn, "k_proj", None)
    shared = bool(getattr(attn, "is_kv_shared_layer", False)) or k_proj is None
    linears = tuple(Linear(n, m.in_features, m.out_features) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear))
    norms = sum(1 for m in layer.modules() if "RMSNorm" in type(m).__name__
                and getattr(m, "weight", None) is not None and tuple(m.weight.shape) == (hidden,))
    experts = getattr(layer, "experts", None)
    n_experts, expert_width = 0, 0
    if experts is not None and getattr(experts, "gate_up_proj", None) is not None:
        n_experts, expert_width = experts.gate_up_proj.shape[0], experts.gate_up_proj.shape[1] // 2  # (E, 2 I, H)
    return Layer(heads=attn.q_proj.out_features // head_dim, head_dim=head_dim,
                 kv_heads=0 if shared else k_proj.out_features // head_dim,
                 window=getattr(attn, "sliding_window", None), mlp_width=layer.mlp.gate_proj.out_features, norms=norms,
                 linears=linears, experts=n_experts, top_k=top_k if n_experts else 0, expert_width=expert_width)


@lru_cache(maxsize=32)
def _arch_from_file(path: str, mtime_ns: int, name: str) -> Arch:
    """Cached per file version: --plan's suggestions re-plan the same model many times."""
    raw = read_config(Path(path))
    text_config = text_config_of(raw, path)
    family = family_for(text_config.model_type, path)
    model = meta_model(text_config, path)
    source = f"{Path(path).name} (published config shipped with gemma_fast)" if Path(path).parent == MODEL_CONFIGS else path
    return arch_from_model(model, name, family.name, source)


def resolve_arch(spec: str) -> Arch:
    """The shape of the recipe's model: its config.json built on the meta device."""
    path, name = config_path(spec)
    return _arch_from_file(str(path), path.stat().st_mtime_ns, name)

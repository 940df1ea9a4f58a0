"""The pieces both peak-memory estimates share (training: preflight.py; evaluation: eval_plan.py): the components
and their sum, what the weights, the adapter and a process cost, and which layers keep S x S attention scores.
Formulas and sources: docs/memory_estimate.md. No torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..models.architecture import Arch, Layer
from ..families import FAMILIES
from ..methods import method_of

GIB = 2**30
CUDA_CONTEXT = int(0.5 * GIB)  # CUDA context + cuBLAS/cuDNN workspaces: outside torch's allocator, ~0.3-0.6 GB
# The CPU figures are fitted (least squares) to three of this project's measured peak RSS figures, with the loss
# priced as the path that runs (loss.py's 256-row float32 chunks; docs/memory_estimate.md): the imports alone are
# 0.57 GiB; the rest of the fixed part is the tokenizer, the data and the model load. glibc keeps freed blocks of
# every padded batch shape, so the CPU's slack on short-lived tensors is far larger than CUDA's caching allocator's.
CPU_RUNTIME = int(0.70 * GIB)
FRAGMENTATION = {"cuda": 0.10, "cpu": 0.76}  # share of the short-lived tensors (activations, logits, caches)
NF4_BYTES = 0.5 + 0.127 / 8  # 4-bit NF4 + double-quantised constants: 0.127 bits/param (QLoRA paper, sec. 3)
# FlashAttention-2 takes head dims up to 256; above that (Gemma 4's 512-wide global heads) SDPA with a mask is assumed
# to fall back to its math kernel, which keeps the S x S scores and probabilities for backward on those layers.
FLASH_MAX_HEAD_DIM = 256
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


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


def weight_bytes(arch: Arch, four_bit: bool, elem: int, rest_elem: int | None = None) -> tuple[int, str]:
    """The base model's weights: all at `elem` bytes, or with 4-bit NF4 linear layers and the rest (embeddings incl.
    Gemma 3n/4's per-layer-embedding table, MoE experts, norms, router) at `rest_elem` (default `elem`)."""
    p = arch.params
    if not four_bit:
        return p.total * elem, f"{p.total / 1e9:.2f}B params x {elem} B"
    rest = p.unquantized
    rest_elem = elem if rest_elem is None else rest_elem
    parts = [f"embeddings {p.embedding / 1e9:.2f}B"]
    if p.per_layer_embedding:
        parts.append(f"of which the per-layer-embedding table {p.per_layer_embedding / 1e9:.2f}B")
    if p.experts:
        parts.append(f"MoE experts {p.experts / 1e9:.2f}B (3-D tensors, not nn.Linear)")
    detail = (f"{p.linear / 1e9:.2f}B linear params in 4-bit NF4 ({NF4_BYTES:.3f} B each) + {rest / 1e9:.2f}B that 4-bit "
              f"loading leaves alone ({', '.join(parts)}, norms) x {rest_elem} B")
    return int(p.linear * NF4_BYTES + rest * rest_elem), detail


def targeted(name: str, targets: tuple[str, ...]) -> bool:
    """PEFT's rule for a list of target_modules: the module's name is a target or ends with '.' + a target."""
    return any(name == t or name.endswith("." + t) for t in targets)


def adapter_params(arch: Arch, method: str, targets: tuple[str, ...], r: int, prefix_tokens: int) -> int:
    """Trainable parameters: LoRA's r x (in + out) on every targeted linear layer; prefix tuning's key and value per
    virtual token and layer."""
    if method_of(method).peft_type == "PREFIX_TUNING":
        return prefix_tokens * arch.n_layers * 2 * arch.layers[0].kv_width
    linears = [lin for layer in arch.layers for lin in layer.linears] + list(arch.outer_linears)
    return sum(r * (lin.in_features + lin.out_features) for lin in linears if targeted(lin.name, targets))


def keeps_scores(family: str, backend: str, device: str, below_ampere: bool, layer: Layer) -> bool:
    """Whether attention on this layer materialises S x S scores (eager attention, or SDPA's math kernel)."""
    if FAMILIES[family].eager_attention:  # Gemma 2's attention-logit softcapping: eager on both backends
        return True
    if device != "cuda":
        return False
    if backend == "unsloth" and family == "gemma3n":  # unsloth/models/_utils.py _EAGER_ONLY_PREFIXES
        return True
    if backend == "unsloth" and family == "gemma3" and below_ampere:
        return True  # SDPA disabled for gemma3 (DISABLE_SDPA_MODEL_NAMES); flex attention needs sm80: eager below it
    return layer.head_dim > FLASH_MAX_HEAD_DIM


def runtime_component(device: str) -> Component:
    if device == "cuda":
        return Component("CUDA context", CUDA_CONTEXT, "driver context, cuBLAS/cuDNN workspaces")
    return Component("process runtime", CPU_RUNTIME, "imports, tokenizer, data, model load: fitted to measured RSS")

"""Evaluation's peak memory, for `--plan` (gpu_path_review_2 HIGH 1): the model as evaluate.py loads it, the adapter,
and the largest batch's KV cache, prefill and answer-statistics pass.

Generation and the answer-token pass run one after the other on each batch, so the peak is the weights plus the
larger of the two. The batches are the run's own (batching.token_batches): at most eval.batch_size prompts and
eval.batch_tokens tokens of rows x (longest prompt + max_new_tokens [+ Unsloth's decode buffer]). Method and sources:
docs/memory_estimate.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.architecture import Arch
from ..batching import UNSLOTH_DECODE_BUFFER, largest_batch_tokens
from ..training.loss import chunk_rows
from .memory import FRAGMENTATION, GIB, Component, Estimate, keeps_scores, runtime_component, weight_bytes


@dataclass(frozen=True)
class EvalSetup:
    arch: Arch
    device: str  # cuda | cpu
    backend: str  # unsloth | hf
    four_bit: bool  # evaluate.py loads the base in 4-bit where the run trained qlora on CUDA
    weight_elem: int  # bytes per 16-bit weight as loaded (float16 / bfloat16: 2; float32: 4)
    elem: int  # bytes per activation and KV element
    adapter_params: int
    batch_size: int  # eval.batch_size: prompts per batch, at most
    batch_tokens: int  # eval.batch_tokens
    max_prompt: int  # the longest prompt (an upper bound)
    max_example: int  # the longest prompt + reference answer (the answer-statistics pass)
    new_tokens: int  # eval.max_new_tokens
    answer_stats: bool
    below_ampere: bool = False

    @property
    def decode_buffer(self) -> int:
        return UNSLOTH_DECODE_BUFFER if self.backend == "unsloth" and self.device == "cuda" else 0

    @property
    def width(self) -> int:
        """The widest generation row: prompt + new tokens + decode buffer."""
        return self.max_prompt + self.new_tokens + self.decode_buffer


def kv_bytes_per_token(arch: Arch, elem: int) -> int:
    """Keys and values of one token over every layer that caches its own (KV-shared layers cache none), each layer at
    its own width (Gemma 4: 256-wide sliding heads, 512-wide global heads with fewer KV heads). Sliding layers are
    counted at full length: the prefill computes every position before transformers trims the window."""
    return sum(2 * layer.kv_width * elem for layer in arch.layers if layer.kv_heads)


def _layer_transient(es: EvalSetup, tokens: int, longest: int) -> int:
    """The largest single layer's short-lived tensors for `tokens` positions without grad: q, k, v, attention output,
    the MLP's gate, up and product (experts' too), and S x S scores where attention keeps them."""
    worst = 0
    for layer in es.arch.layers:
        per_token = (2 * layer.q_width + 2 * layer.kv_width + 3 * layer.mlp_width + es.arch.hidden) * es.elem
        per_token += layer.top_k * 3 * layer.expert_width * es.elem
        scores = 0
        if keeps_scores(es.arch.family, es.backend, es.device, es.below_ampere, layer):
            scores = 2 * layer.heads * longest * es.elem * tokens  # scores and probabilities, one layer at a time
        worst = max(worst, per_token * tokens + scores)
    return worst


def generation_bytes(es: EvalSetup) -> list[Component]:
    a = es.arch
    kv_tokens = largest_batch_tokens(es.batch_size, es.batch_tokens, es.width)
    per_token = kv_bytes_per_token(a, es.elem)
    rows = kv_tokens / es.width  # rows of the widest batch
    prefill_tokens = int(rows * es.max_prompt)
    parts = [Component("KV cache, largest batch", kv_tokens * per_token,
                       f"{kv_tokens:,} tokens = rows x (longest prompt {es.max_prompt} + {es.new_tokens} new"
                       + (f" + {es.decode_buffer} Unsloth decode buffer" if es.decode_buffer else "")
                       + f"), within eval.batch_size {es.batch_size} / eval.batch_tokens {es.batch_tokens}; "
                       f"{per_token / 1024:.0f} KiB per token over {sum(1 for la in a.layers if la.kv_heads)} caching layers")]
    if es.decode_buffer:  # Unsloth copies the prefill's K/V into its buffer and keeps them until the step returns
        parts.append(Component("prefill K/V copy", prefill_tokens * per_token, "the prefill's keys and values, alive while "
                                                                               "Unsloth's first decode step fills its buffer"))
    logits = es.batch_size * a.vocab * 4  # one position per row (logits_to_keep=1), upcast to float32
    parts.append(Component("prefill activations", _layer_transient(es, prefill_tokens, es.max_prompt) + logits,
                           f"one layer at a time over {prefill_tokens:,} prompt tokens, + the last position's logits"))
    return parts


def answer_stats_bytes(es: EvalSetup) -> int:
    """loss.answer_token_stats on the largest batch: the decoder's last hidden states (kept by the hook), one layer's
    transients, and the head over the answer positions in chunks (loss.CHUNK_BYTES of float32 logits)."""
    a = es.arch
    tokens = largest_batch_tokens(es.batch_size, es.batch_tokens, es.max_example)
    hidden = tokens * a.hidden * (es.elem + 4)  # hidden states, and the answer positions' gathered copy / float32 sums
    per_layer_inputs = tokens * a.per_layer_input * es.elem
    rows = chunk_rows(a.vocab)
    head = rows * a.vocab * 4 * 2  # float32 logits and logsumexp's temporary (no grad: no softcap slope)
    return hidden + per_layer_inputs + _layer_transient(es, tokens, es.max_example) + head


def eval_estimate(es: EvalSetup) -> Estimate:
    base, base_detail = weight_bytes(es.arch, es.four_bit, es.weight_elem)
    parts = [Component("base weights", base, ("4-bit, as the run trained: " if es.four_bit else "") + base_detail),
             Component("adapter", es.adapter_params * 4, f"{es.adapter_params / 1e6:.1f}M params x 4 B (PEFT keeps it in float32)")]
    generation = generation_bytes(es)
    gen_total = sum(c.bytes for c in generation)
    stats = answer_stats_bytes(es) if es.answer_stats else 0
    if stats > gen_total:  # the two passes run one after the other: the larger counts
        parts.append(Component("answer-stats pass", stats, f"decoder hidden states + one layer + the chunked head over the "
                                                           f"longest examples ({es.max_example} tokens); the larger of the two "
                                                           f"passes on a batch (generation: {gen_total / GIB:.2f} GiB)"))
        transient = stats
    else:
        parts += generation
        if es.answer_stats:
            parts.append(Component("answer-stats pass", 0, f"{stats / GIB:.2f} GiB, below generation's; the two passes run "
                                                           "one after the other: not added"))
        transient = gen_total
    parts.append(Component("allocator slack", int(FRAGMENTATION[es.device] * transient),
                           f"{FRAGMENTATION[es.device]:.0%} of the batch's short-lived memory"))
    parts.append(runtime_component(es.device))
    return Estimate(parts)

"""The Gemma family table: one entry per generation, holding everything that differs between them.

Every stage that needs to know a generation reads it here: the prompt builder (turn markers, system turn, the empty
thought channel, the control tokens text may never forge), loading (text-only classes, eager attention), LoRA
(which modules), the dtype policy on fp16-only GPUs, the padding-free attention (verified or not), FSDP (the layer
class to wrap), GGUF export (architecture, tokenizer route, Ollama template), licences, and the tiny test config.
Adding a generation is one `Family(...)` entry here plus its tiny config (the `tiny` field); nothing else changes.

Facts and sources: transformers 5.23 `models/{gemma,gemma2,gemma3,gemma3n,gemma4}`, the chat templates TRL 1.16
ships (`trl/chat_templates/gemma*.jinja`), Unsloth 2026.10.9 (`FORCE_FLOAT32`, `chat_templates.py`), and
shared/reviews/gemma4_and_field.md. No torch or transformers import here: reading the table is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

# The projections LoRA wraps in every generation: attention and MLP of the language model. Never the LM head, the
# per-layer-embedding projections (Gemma 3n/4), the AltUp/LAuReL blocks (3n), the MoE router or experts (Gemma 4
# 26B-A4B), or the vision/audio towers; a recipe that wants any of those lists module names itself.
LANGUAGE_MODEL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Modules under these names belong to a vision or audio tower (or their projections into the language model).
TOWERS = r".*(vision_tower|audio_tower|embed_vision|embed_audio|multi_modal_projector|vision_model|audio_model).*"

GEMMA_TERMS = ("Gemma Terms of Use", "https://ai.google.dev/gemma/terms")
APACHE_2 = ("Apache-2.0", "https://ai.google.dev/gemma/apache_2")


@dataclass(frozen=True)
class Turns:
    """How a conversation is written: `<start><role>\\n<content><end>\\n` per turn."""

    start: str
    end: str
    user: str = "user"
    model: str = "model"
    system: str = ""  # the role name of a native system turn; "" when the generation has none


@dataclass(frozen=True)
class Family:
    name: str  # gemma | gemma2 | gemma3 | gemma3n | gemma4
    label: str  # for people: "Gemma 4"
    model_types: tuple[str, ...]  # config.model_type values (the multimodal wrapper and its text-only model)
    text_model_type: str  # the language model's own model_type (what text-only loading builds)
    turns: Turns
    # What a system message becomes, as the generation's official chat template does it: "native" (its own turn),
    # "first_user" (prepended to the first user turn + a blank line, Gemma 3/3n), "refused" (Gemma 1/2 raise).
    system_prompt: str
    control_tokens: tuple[str, ...]  # strings that are control tokens of this generation: never from user text
    empty_thought: str = ""  # the empty thought channel some checkpoints generate after (Gemma 4 26B-A4B, 31B)
    eager_attention: bool = False  # SDPA would drop something (Gemma 2's attention-logit softcapping)
    final_softcap: float | None = None  # the published final-logit softcapping (the config's value wins)
    lora_targets: tuple[str, ...] = LANGUAGE_MODEL_LINEAR
    # On a GPU without native bf16 (T4, V100): "float32" where Gemma overflows float16 and Unsloth forces its float32
    # path (FORCE_FLOAT32: gemma3, gemma3n, gemma4); "float16" where Unsloth trains in fp16 (Gemma 1 and 2).
    fp16_gpu_path: str = "float32"
    fsdp_layer: str = ""  # the decoder-layer class FSDP wraps
    gguf_arch: str = ""  # llama.cpp's general.architecture
    gguf_tokenizer: str = "sentencepiece"  # sentencepiece (tokenizer.model) | tokenizer.json (LlamaHfVocab)
    licence: tuple[str, str] = GEMMA_TERMS  # (name, url)
    varlen: bool = True  # padding-free per-example attention checked equal to the padded path (tests/unit/test_varlen.py)
    # The text model drops positions outside an integer logits_to_keep before its KV-shared layers (Gemma 4 under
    # transformers 5.23): the answer-position loss then names its one kept position by index, so every layer runs
    # on the whole sequence.
    decoder_slices: bool = False
    # The runtimes the GGUF round trip can run this generation's files on exactly (roundtrip.py): transformers' GGUF
    # loader does not read Gemma 3n, ik-llama-cpp-python 0.1.5 loads neither 3n nor a KV-shared Gemma 4 and differs
    # from transformers on Gemma 4 (|Δlogit| 0.4-0.6 on tiny models): those files are written, marked unverified.
    gguf_runtimes: tuple[str, ...] = ("transformers", "llama.cpp")
    # The generation's official chat templates as TRL ships them (trl/chat_templates/): the ground truth the prompt
    # builder is tested against, token for token, and the template a GGUF export writes when the base carries none.
    templates: tuple[str, ...] = ()
    tiny: dict[str, Any] = field(default_factory=dict)  # {"config": class name, **kwargs}: the tiny random test model

    @property
    def start_user(self) -> str:
        return f"{self.turns.start}{self.turns.user}\n"

    @property
    def start_model(self) -> str:
        return f"{self.turns.start}{self.turns.model}\n"

    @property
    def end_of_turn(self) -> str:
        return self.turns.end


_GEMMA_1_3_TURNS = Turns("<start_of_turn>", "<end_of_turn>")
_GEMMA_1_3_CONTROL = ("<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")
_IMAGE_CONTROL = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
_AUDIO_CONTROL = ("<start_of_audio>", "<end_of_audio>", "<audio_soft_token>")
_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=16, max_position_embeddings=256)

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family(
        "gemma", "Gemma", ("gemma",), "gemma", _GEMMA_1_3_TURNS, "refused", _GEMMA_1_3_CONTROL,
        fp16_gpu_path="float16", fsdp_layer="GemmaDecoderLayer", gguf_arch="gemma", templates=("gemma.jinja",),
        tiny={"config": "GemmaConfig", **_TINY},
    ),
    Family(
        "gemma2", "Gemma 2", ("gemma2",), "gemma2", _GEMMA_1_3_TURNS, "refused", _GEMMA_1_3_CONTROL,
        eager_attention=True, final_softcap=30.0, fp16_gpu_path="float16", fsdp_layer="Gemma2DecoderLayer", gguf_arch="gemma2",
        templates=("gemma.jinja",),  # Gemma 2 ships Gemma's template unchanged
        tiny={"config": "Gemma2Config", **_TINY, "sliding_window": 64, "query_pre_attn_scalar": 16},
    ),
    Family(
        "gemma3", "Gemma 3", ("gemma3", "gemma3_text"), "gemma3_text", _GEMMA_1_3_TURNS, "first_user",
        _GEMMA_1_3_CONTROL + _IMAGE_CONTROL, fsdp_layer="Gemma3DecoderLayer", gguf_arch="gemma3", templates=("gemma3.jinja",),
        tiny={"config": "Gemma3TextConfig", **_TINY, "sliding_window": 64, "query_pre_attn_scalar": 16},
    ),
    Family(
        "gemma3n", "Gemma 3n", ("gemma3n", "gemma3n_text"), "gemma3n_text", _GEMMA_1_3_TURNS, "first_user",
        _GEMMA_1_3_CONTROL + _IMAGE_CONTROL + _AUDIO_CONTROL, final_softcap=30.0,
        fsdp_layer="Gemma3nTextDecoderLayer", gguf_arch="gemma3n", templates=("gemma3.jinja",),  # 3n writes turns as Gemma 3
        gguf_runtimes=(),
        # E-style: per-layer inputs, AltUp, LAuReL and 2 KV-shared layers of 4 (sliding, full, sliding, full)
        tiny={"config": "Gemma3nTextConfig", **_TINY, "num_hidden_layers": 4, "sliding_window": 16,
              "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
              "hidden_size_per_layer_input": 8, "num_kv_shared_layers": 2, "laurel_rank": 4, "altup_num_inputs": 2,
              "intermediate_size": [64] * 4, "activation_sparsity_pattern": [0.0] * 4},
    ),
    Family(
        "gemma4", "Gemma 4", ("gemma4", "gemma4_text"), "gemma4_text", Turns("<|turn>", "<turn|>", system="system"),
        "native",
        ("<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>",
         "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>',
         "<|image|>", "<|audio|>", "<|video|>", "<|image>", "<image|>", "<|audio>", "<audio|>"),
        empty_thought="<|channel>thought\n<channel|>", final_softcap=30.0, decoder_slices=True, fsdp_layer="Gemma4TextDecoderLayer",
        gguf_arch="gemma4", gguf_tokenizer="tokenizer.json", gguf_runtimes=("transformers",), licence=APACHE_2,
        # the five revisions of google/gemma-4-E2B-it's template: release 4742fe8 (v2), b446025 (v3), 6b7e72c, 905e84b (v4),
        # 8995379 (v5, current; first: what an export writes)
        templates=("gemma4_v5.jinja", "gemma4_v4.jinja", "gemma4.jinja", "gemma4_v3.jinja", "gemma4_v2.jinja"),
        # E-style (E2B/E4B): per-layer embeddings, sliding head_dim 16 and global 32 (256/512 in the real ones),
        # 2 KV-shared layers of 5, final softcap 30. tests build the 31B-style (K = V) and MoE variants from it.
        tiny={"config": "Gemma4TextConfig", **_TINY, "num_hidden_layers": 5, "sliding_window": 16,
              "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"],
              "global_head_dim": 32, "hidden_size_per_layer_input": 8, "num_kv_shared_layers": 2,
              "final_logit_softcapping": 30.0},
    ),
]}


def template_text(name: str) -> str:
    """One of the chat templates TRL ships (trl/chat_templates/NAME), read as a file: nothing is imported."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the chat template {name} comes with trl: pip install -r requirements.txt")
    return (Path(list(spec.submodule_search_locations)[0]) / "chat_templates" / name).read_text(encoding="utf-8")


def known_model_types() -> list[str]:
    return [t for f in FAMILIES.values() for t in f.model_types]


def family_for(model_type: str, where: str = "model") -> Family:
    """The family of a config's model_type; an unknown type is an error naming the known ones, never a silent guess."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise UserError(f"{where}: model_type '{model_type}' is not a Gemma generation gemma_fast knows "
                    f"({', '.join(known_model_types())}); its prompt format, LoRA targets and attention paths are unknown")


def family_of_config(config: Any, where: str = "model") -> Family:
    """The family of a transformers config object or a config.json dict."""
    model_type = config.get("model_type", "") if isinstance(config, dict) else getattr(config, "model_type", "")
    return family_for(str(model_type), where)


def family_of_gguf(architecture: str, where: str = "GGUF") -> Family:
    for family in FAMILIES.values():
        if family.gguf_arch == architecture:
            return family
    raise UserError(f"{where}: general.architecture '{architecture}' is not a Gemma generation gemma_fast knows "
                    f"({', '.join(f.gguf_arch for f in FAMILIES.values())})")


def family_of_tokenizer(tokenizer) -> Family:
    """For a tokenizer alone (no config at hand): Gemma 4 by its turn token, else Gemma 3 (same turns as 1-3n)."""
    vocab = tokenizer.get_vocab()
    return FAMILIES["gemma4"] if "<|turn>" in vocab else FAMILIES["gemma3"]


def wants_empty_thought(family: Family, chat_template: str | None, text_config: Any = None) -> bool:
    """Gemma 4 26B-A4B and 31B generate after an empty thought channel their chat template primes; E2B/E4B do not.
    Decided by the checkpoint's own template, as Unsloth does; without one, by the model: no per-layer embeddings."""
    if not family.empty_thought:
        return False
    if chat_template:  # the template's source spells the newline as \\n inside a Jinja string
        return family.empty_thought in chat_template or family.empty_thought.replace("\n", "\\n") in chat_template
    if text_config is None:
        return False
    return not getattr(text_config, "hidden_size_per_layer_input", 0)

"""Tiny random models of every Gemma generation in the family table, with a BPE tokenizer built in code that carries
the generation's control tokens and its official chat template: offline, in milliseconds, for tests and the
benchmarks' CPU modes."""

from __future__ import annotations

from pathlib import Path

import torch

from ..families import FAMILIES, template_text
from ..models.loader import prepare_tokenizer

TINY_FAMILIES = tuple(FAMILIES)
# Gemma 4's other shapes beside the E-style default (families.py): 31B-style (K = V on the 512-wide global layers,
# no per-layer embeddings, no KV sharing) and 26B-A4B-style (a mixture of experts beside the dense MLP, top-k routing)
VARIANTS = {
    "gemma4-31b": ("gemma4", {"attention_k_eq_v": True, "num_global_key_value_heads": 1, "hidden_size_per_layer_input": 0,
                              "num_kv_shared_layers": 0}),
    "gemma4-moe": ("gemma4", {"enable_moe_block": True, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 16,
                              "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0}),
}
TINY_SHAPES = TINY_FAMILIES + tuple(VARIANTS)  # every family, and Gemma 4's three shapes
_BASE_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
_TINY_CORPUS = [
    "user model system question answer context the a is of to and what how why when which gemma fast recipe",
    "Train a LoRA adapter with train_qlora.py and evaluate it with evaluate.py on the test split.",
    "问答 诗 唐 宋 李白 杜甫 春 风 月 花 山 水 中文 模型 训练",
]


def _specials(family: str) -> list[str]:
    """<pad> <eos> <bos> <unk> at ids 0-3 as in every Gemma, then the generation's turn and control tokens."""
    controls = [t for t in FAMILIES[family].control_tokens if t not in _BASE_SPECIALS]
    if family != "gemma4":  # Gemma 1-3n: the turn tokens first (ids 4, 5), as the tests have always had them
        controls = ["<start_of_turn>", "<end_of_turn>"] + [t for t in controls if t not in ("<start_of_turn>", "<end_of_turn>")]
    return _BASE_SPECIALS + controls


def tiny_tokenizer(family: str = "gemma3"):
    """A byte-level BPE with the generation's special tokens and chat template, trained in milliseconds: any text
    encodes, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=_specials(family), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = template_text(FAMILIES[family].templates[0])
    return prepare_tokenizer(fast)


def tiny_config(family: str, vocab_size: int = 512, **overrides):
    """The family's tiny config (families.Family.tiny), or a VARIANTS shape (e.g. "gemma4-31b"), with `overrides`."""
    import transformers

    if family in VARIANTS:
        family, shape = VARIANTS[family]
        overrides = {**shape, **overrides}
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; valid: {', '.join(TINY_SHAPES)}")
    kwargs = {**FAMILIES[family].tiny, **overrides}
    config_class = getattr(transformers, kwargs.pop("config"))
    if kwargs.get("hidden_size_per_layer_input"):  # the per-layer embedding table: as wide as the vocabulary, not 262k
        kwargs["vocab_size_per_layer_input"] = vocab_size
    return config_class(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=2, **kwargs)


def save_tiny_multimodal(family: str, folder: str | Path, seed: int = 0) -> Path:
    """A tiny multimodal checkpoint of the kind Google publishes (Gemma 4: vision and audio towers around the language
    model; Gemma 3n: the same weight layout with a stand-in tower tensor, since its real MobileNet tower needs timm),
    with the tiny tokenizer: what text-only loading must read without the towers."""
    import transformers
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(family)
    text = tiny_config(family, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    if family == "gemma4":
        vision = transformers.Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 num_key_value_heads=2, head_dim=8)
        audio = transformers.Gemma4AudioConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, output_proj_dims=16,
                                               subsampling_conv_channels=[8, 4])
        config = transformers.Gemma4Config(text_config=text.to_dict(), vision_config=vision.to_dict(), audio_config=audio.to_dict())
        transformers.Gemma4ForConditionalGeneration(config).save_pretrained(folder)
    elif family == "gemma3n":
        language = transformers.AutoModelForCausalLM.from_config(text)
        weights = {"model.language_model." + k.removeprefix("model."): v.contiguous() for k, v in language.state_dict().items()
                   if k.startswith("model.")}
        weights["model.vision_tower.timm_model.conv_stem.conv.weight"] = torch.zeros(4, 3, 3, 3)  # a tower that must not load
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        transformers.Gemma3nConfig(text_config=text.to_dict()).save_pretrained(folder)
    else:
        raise ValueError(f"no tiny multimodal {family!r}; valid: gemma4, gemma3n")
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_model(family: str, folder: str | Path, seed: int = 0, **overrides) -> Path:
    """A random tiny Gemma-family model + tokenizer saved as a normal model folder, usable as `model: <folder>`."""
    from transformers import AutoModelForCausalLM

    from ..prompts import prompt_format

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(VARIANTS[family][0] if family in VARIANTS else family)
    config = tiny_config(family, vocab_size=len(tokenizer), **overrides)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = prompt_format(tokenizer, config).stop_ids
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


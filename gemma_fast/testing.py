"""Tiny random Gemma, Gemma 2 and Gemma 3 models with a BPE tokenizer built in code: offline, in milliseconds, for
tests and the benchmarks' CPU modes."""

from __future__ import annotations

from pathlib import Path

import torch

from .models import prepare_tokenizer, stop_token_ids

TINY_FAMILIES = ("gemma", "gemma2", "gemma3")
_TINY_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
_TINY_CORPUS = [
    "user model question answer context the a is of to and what how why when which gemma fast recipe",
    "Train a LoRA adapter with train_qlora.py and evaluate it with evaluate.py on the test split.",
    "问答 诗 唐 宋 李白 杜甫 春 风 月 花 山 水 中文 模型 训练",
]


def tiny_tokenizer():
    """A byte-level BPE with Gemma's special tokens, trained in milliseconds: any text encodes, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=_TINY_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    return prepare_tokenizer(fast)


def tiny_config(family: str, vocab_size: int = 512):
    common = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    if family == "gemma":
        from transformers import GemmaConfig

        return GemmaConfig(**common)
    if family == "gemma2":
        from transformers import Gemma2Config

        return Gemma2Config(**common, sliding_window=64, query_pre_attn_scalar=16)
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, sliding_window=64, query_pre_attn_scalar=16)
    raise ValueError(f"unknown tiny family {family!r}; valid: {', '.join(TINY_FAMILIES)}")


def save_tiny_model(family: str, folder: str | Path, seed: int = 0) -> Path:
    """A random tiny Gemma-family model + tokenizer saved as a normal model folder, usable as `model: <folder>`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size=len(tokenizer)))
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""A tiny Gemma 3 that llama.cpp's converter and runtimes accept, for the GGUF export tests (about 10 s to build).

Unlike testing.save_tiny_model (a byte-level BPE, which convert_hf_to_gguf rejects), this one has what a hub Gemma
checkpoint has: a SentencePiece `tokenizer.model` (BPE, byte fallback) with <pad>/<eos>/<bos>/<unk> at ids 0-3,
<start_of_turn>/<end_of_turn> as control symbols, user-defined newline and space-run pieces, and tokenizer files
as gguf_tokenizer writes them for the embedded model (space runs not in added_tokens_decoder). head_dim = query_pre_attn_scalar = 256 (as in Gemma 3
270M-12B; GGUF does not store the scalar and readers assume 256), 6 layers (ik_llama crashes when every layer is
sliding-window, i.e. below 6), random norm weights (so the converter's +1 norm shift is exercised) and an untied
output head (tied random embeddings make a random model repeat its last token, so every answer would be blank).
"""

from __future__ import annotations

import json
from pathlib import Path

SPACE = "\u2581"
CONTROL = ["<mask>", "<start_of_turn>", "<end_of_turn>"]  # <mask> at 4 as in Gemma (GemmaTokenizer adds it otherwise)
USER_DEFINED = ["\n", "\n\n", SPACE * 2, SPACE * 3]
_CORPUS = [
    "How do I resume training? Pass --resume with the run folder in --out.",
    "Train a LoRA adapter with train_qlora.py and evaluate it with evaluate.py on the test split.",
    "The recipe sets the model, the data and the training settings; --set overrides one value.",
    "Export the merged model to GGUF with --gguf q8_0 and run it in llama.cpp or Ollama.",
    "What is the capital of France? Paris is the capital of France.",
    "user model question answer context the a is of to and what how why when which gemma fast recipe",
    "问答 诗 唐 宋 李白 杜甫 春 风 月 花 山 水 中文 模型 训练",
]


def train_spm(folder: Path, vocab_size: int = 400) -> Path:
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(_CORPUS * 20) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "sp"), model_type="bpe", vocab_size=vocab_size,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=CONTROL, user_defined_symbols=USER_DEFINED, byte_fallback=True, character_coverage=1.0,
        add_dummy_prefix=False, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=True,
        normalization_rule_name="identity", minloglevel=2,
    )
    text.unlink()
    (folder / "sp.vocab").unlink()
    model = folder / "tokenizer.model"
    (folder / "sp.model").rename(model)
    return model


def save_tiny_gemma3_spm(folder: str | Path, seed: int = 0, layers: int = 6, hidden: int = 64) -> Path:
    """Write a hub-like tiny Gemma 3 folder (config, safetensors, tokenizer.model, tokenizer files); return it."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from .prompts import prompt_format

    folder = Path(folder)
    model_file = train_spm(folder)
    tokenizer = hf_tokenizer(model_file, folder)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=16,
        max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        tie_word_embeddings=False,  # tied random embeddings make the model repeat its last token: answers would be blank
    )
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0, 0.2)
            elif name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                param.normal_(0.0, 0.5)  # logits of order 1-10, so argmax and greedy are not decided by noise
        # Byte-fallback and control pieces (bar <end_of_turn>) get a zero output row, so logit 0 and never the top:
        # answers are readable words that every decoder spells alike, and can still end at <end_of_turn>.
        _, _, types = gguf_vocabulary(model_file)
        end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        for index, kind in enumerate(types):
            if kind in (3, 6) and index != end:
                model.lm_head.weight[index] = 0.0
    model.generation_config.eos_token_id = prompt_format(tokenizer, config).stop_ids
    model.save_pretrained(folder)
    return folder


def gguf_vocabulary(model_file: Path) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types as a correct Gemma GGUF holds them for `model_file` (the reference the export
    tests compare with): <unk> and control symbols CONTROL (3), user-defined pieces USER_DEFINED (4) spelled with
    real spaces (both scored -1000, as in Gemma's GGUFs), byte pieces BYTE (6), the rest NORMAL (1)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        kind = 3 if sp.is_control(i) or sp.is_unknown(i) else 6 if sp.is_byte(i) else 4 if piece in USER_DEFINED else 1
        tokens.append(piece.replace(SPACE, " ") if kind == 4 else piece)
        scores.append(-1000.0 if kind in (3, 4) else sp.get_score(i))
        types.append(kind)
    return tokens, scores, types


def hf_tokenizer(model_file: Path, folder: Path):
    """tokenizer.json + tokenizer_config.json for `model_file`, built the way gguf_tokenizer builds the embedded
    Gemma's (transformers' own route from tokenizer.model needs protobuf, which the project does not install), so
    the space-run pieces are left out of added_tokens_decoder exactly as there; returns the loaded tokenizer."""
    from transformers import AutoTokenizer

    from .gguf_tokenizer import _fast_tokenizer, _tokenizer_config

    tokens, _, types = gguf_vocabulary(model_file)
    meta = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types, "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.bos_token_id": 2,
            "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.padding_token_id": 0}
    fast = _fast_tokenizer(meta)
    fast.save(str(folder / "tokenizer.json"))
    config = _tokenizer_config(meta, fast)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return AutoTokenizer.from_pretrained(folder)

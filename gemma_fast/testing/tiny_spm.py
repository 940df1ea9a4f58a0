"""Tiny Gemma models that llama.cpp's converter and runtimes accept, for the GGUF export tests (about 10 s to build).

Unlike testing.save_tiny_model (a byte-level BPE, which convert_hf_to_gguf rejects), these have what a hub Gemma
checkpoint has: a SentencePiece `tokenizer.model` (BPE, byte fallback) with <pad>/<eos>/<bos>/<unk> at ids 0-3,
the generation's turn and control tokens as control symbols (families.py; Gemma 4's <|turn>, <turn|>, <|channel>...
included), user-defined newline and space-run pieces, and tokenizer files as gguf_tokenizer writes them for the
embedded model (space runs not in added_tokens_decoder; a tokenizer.json of the kind Gemma 4 ships, which the
converter reads through LlamaHfVocab). Gemma 3: head_dim = query_pre_attn_scalar = 256 (as in Gemma 3 270M-12B; GGUF
does not store the scalar and readers assume 256), 6 layers (ik_llama crashes when every layer is sliding-window,
i.e. below 6). Every family: random norm weights (so the converter's norm shifts are exercised) and an untied output
head (tied random embeddings make a random model repeat its last token, so every answer would be blank).
"""

from __future__ import annotations

import json
from pathlib import Path

SPACE = "\u2581"
CONTROL = ["<mask>", "<start_of_turn>", "<end_of_turn>"]  # <mask> at 4 as in Gemma (GemmaTokenizer adds it otherwise)


def control_symbols(family: str) -> list[str]:
    """<mask> at id 4, then the generation's turn and control tokens (families.Family.control_tokens)."""
    from ..families import FAMILIES

    if family == "gemma3":
        return list(CONTROL)
    return ["<mask>"] + [t for t in FAMILIES[family].control_tokens if t not in ("<bos>", "<eos>", "<pad>", "<unk>", "<mask>")]
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


def train_spm(folder: Path, vocab_size: int = 400, control: list[str] | None = None) -> Path:
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(_CORPUS * 20) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "sp"), model_type="bpe", vocab_size=vocab_size,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=control or CONTROL, user_defined_symbols=USER_DEFINED, byte_fallback=True, character_coverage=1.0,
        add_dummy_prefix=False, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=True,
        normalization_rule_name="identity", minloglevel=2,
    )
    text.unlink()
    (folder / "sp.vocab").unlink()
    model = folder / "tokenizer.model"
    (folder / "sp.model").rename(model)
    return model


def spm_config(family: str, vocab_size: int, layers: int = 6, hidden: int = 64):
    """The tiny config of a converter-ready model: Gemma 3 as llama.cpp's readers assume it (head_dim 256 = the query
    scalar), the other generations from their tiny config (testing.tiny_config) made deeper and wider."""
    from .tiny import tiny_config

    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, max_position_embeddings=512,
                  tie_word_embeddings=False)  # tied random embeddings make the model repeat its last token: blank answers
    if family == "gemma3":
        return tiny_config("gemma3", vocab_size, **common, head_dim=256, query_pre_attn_scalar=256, sliding_window=16)
    types = ["sliding_attention", "sliding_attention", "full_attention"] * (layers // 3)
    if family == "gemma3n":  # llama.cpp's converter supports 4 AltUp inputs only; 2 of the 6 layers share K/V
        return tiny_config("gemma3n", vocab_size, **{**common, "intermediate_size": [2 * hidden] * layers}, layer_types=types,
                           altup_num_inputs=4, num_kv_shared_layers=2, activation_sparsity_pattern=[0.0] * layers)
    if family == "gemma4":  # E-style: per-layer embeddings, 2 KV-shared layers, sliding 256 / global 512 head dims
        return tiny_config("gemma4", vocab_size, **common, layer_types=types, head_dim=256, global_head_dim=512)
    return tiny_config(family, vocab_size, **common)


def save_tiny_spm_model(family: str, folder: str | Path, seed: int = 0, layers: int = 6, hidden: int = 64) -> Path:
    """Write a hub-like tiny model folder of `family` (config, safetensors, tokenizer.model, tokenizer files and the
    generation's chat template); return it."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..families import FAMILIES, template_text
    from ..prompts import prompt_format

    folder = Path(folder)
    model_file = train_spm(folder, control=control_symbols(family))
    tokenizer = hf_tokenizer(model_file, folder)
    if family != "gemma3":  # (the Gemma 3 fixture keeps the embedded model's layout: no template of its own)
        tokenizer.chat_template = template_text(FAMILIES[family].templates[0])
        tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = spm_config(family, len(tokenizer), layers, hidden)
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
        end = tokenizer.convert_tokens_to_ids(FAMILIES[family].end_of_turn)
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

    from ..models.gguf_tokenizer import _fast_tokenizer, _tokenizer_config

    tokens, _, types = gguf_vocabulary(model_file)
    meta = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types, "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.bos_token_id": 2,
            "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.padding_token_id": 0}
    fast = _fast_tokenizer(meta)
    fast.save(str(folder / "tokenizer.json"))
    config = _tokenizer_config(meta, fast)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return AutoTokenizer.from_pretrained(folder)


def save_tiny_gemma3_spm(folder: str | Path, seed: int = 0, layers: int = 6, hidden: int = 64) -> Path:
    """The tiny Gemma 3 the export tests have always used."""
    return save_tiny_spm_model("gemma3", folder, seed, layers, hidden)

"""Tokenizer files for a Gemma GGUF, built from the GGUF's own metadata, not by transformers' GGUF converter.

Why: transformers' converter changes between versions. 5.23 converts the embedded Gemma 3 270M correctly;
5.17 (Unsloth's ceiling, what Colab ends up with) drops `<bos>` and splits "user" into "us" + "er". So the
embedded model's tokenizer is built here with `tokenizers` alone, to the same result as 5.23's converter
(`transformers/integrations/gguf/gguf_tokenizer_mapping.py`: `gemma_tokenizer` + `add_gguf_special_tokens`),
and every transformers 5.x loads the written folder the same way.

It also writes `tokenizer.model`, which llama.cpp's `convert_hf_to_gguf.py` needs to export the model back to
GGUF as a sentencepiece ("llama") vocabulary; without it that script guesses a BPE vocabulary and gets it wrong.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from gguf import GGUF_MAGIC, GGUFValueType

_CONTROL, _USER_DEFINED, _UNKNOWN = 3, 4, 2  # token types: llama.cpp's and sentencepiece's numbering agree
_SPACE = "\u2581"  # sentencepiece's visible space, "▁"
_ROLES = ("unk", "bos", "eos", "pad")  # in sentencepiece's TrainerSpec field order
# llama.cpp's tokenizer models of Gemma GGUFs: "llama" (sentencepiece, Gemma 1-3n: spaces written as " ", no merges
# stored) and "gemma4" (from tokenizer.json: spelled as in it, with its BPE merges)
TOKENIZER_MODELS = ("llama", "gemma4")


def write_tokenizer_from_gguf(gguf_path: str | Path, folder: str | Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and tokenizer.model for the Gemma GGUF at `gguf_path`.

    Reads only the GGUF's metadata; takes a few seconds, mostly recovering the BPE merges. Load the result with
    `AutoTokenizer.from_pretrained(folder)` (transformers 5.17 and 5.23 give the same ids).
    """
    meta = _read_metadata(Path(gguf_path))
    model = meta.get("tokenizer.ggml.model")
    if model not in TOKENIZER_MODELS or not meta.get("general.architecture", "").startswith("gemma"):
        raise ValueError(f"{gguf_path}: not a Gemma vocabulary ({meta.get('general.architecture')}, {model})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _fast_tokenizer(meta)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(meta, tokenizer), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if model == "llama":  # a sentencepiece vocabulary (Gemma 1-3n); Gemma 4's comes from tokenizer.json and has none
        (folder / "tokenizer.model").write_bytes(_sentencepiece_model(meta))


# ---------------------------------------------------------------- reading the GGUF


def _read_metadata(path: Path) -> dict:
    """The GGUF's key/value metadata, arrays as lists; tensors are not touched.

    gguf.GGUFReader would parse the same, but takes 15-25 s here: it builds a numpy view for each of the
    262,144 vocabulary strings and then indexes every tensor. This walks the metadata section only.
    """
    blob = np.memmap(path, mode="r", dtype=np.uint8)
    magic, version, _tensors, count = struct.unpack_from("<IIQQ", blob, 0)
    if magic != GGUF_MAGIC or version not in (2, 3):
        raise ValueError(f"{path} is not a GGUF v2/v3 file")
    pos, meta = 24, {}
    for _ in range(count):
        key, pos = _read_string(blob, pos)
        (kind,) = struct.unpack_from("<I", blob, pos)
        meta[key], pos = _read_value(blob, pos + 4, GGUFValueType(kind))
    return meta


_SCALARS = {GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
            GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
            GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d"}


def _read_value(blob, pos: int, kind: GGUFValueType):
    if kind == GGUFValueType.STRING:
        return _read_string(blob, pos)
    if kind != GGUFValueType.ARRAY:
        fmt = "<" + _SCALARS[kind]
        return struct.unpack_from(fmt, blob, pos)[0], pos + struct.calcsize(fmt)
    item, n = struct.unpack_from("<IQ", blob, pos)
    pos, item = pos + 12, GGUFValueType(item)
    if item in _SCALARS:  # scores and token types: one read for the whole array
        fmt = f"<{n}{_SCALARS[item]}"
        return list(struct.unpack_from(fmt, blob, pos)), pos + struct.calcsize(fmt)
    values = []
    for _ in range(n):
        value, pos = _read_value(blob, pos, item)
        values.append(value)
    return values, pos


def _read_string(blob, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", blob, pos)
    return bytes(blob[pos + 8:pos + 8 + n]).decode("utf-8"), pos + 8 + n


# ---------------------------------------------------------------- tokenizer.json


def _hf_spelling(tokens: list[str]) -> list[str]:
    # The GGUF stores runs of spaces as real spaces ("  "); the HF normalizer turns spaces into "▁" before the
    # vocabulary lookup, so those tokens must be spelled "▁▁" to ever match (5.23 does the same).
    return [_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]


def _merges(tokens: list[str]) -> list[tuple[str, str]]:
    """BPE merges recovered from the vocabulary (a Gemma GGUF lists none), ranked as transformers 5.23 ranks
    them: by the merged token's position in the file (not its score, which does not follow merge order), then
    longer left piece first. Same as `generate_merges(vocab, {t: -index})` there."""
    vocab = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for token, index in vocab.items():
        pairs = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        pairs.sort(key=lambda p: (vocab[p[0]], vocab[p[1]]))
        ranked.extend((index, p) for p in pairs)
    ranked.sort(key=lambda r: (-r[0], len(r[1][0]), len(r[1][1])), reverse=True)
    return [p for _, p in ranked]


def _fast_tokenizer(meta: dict):
    """The object transformers 5.23 builds for a Gemma GGUF: GemmaTokenizer's BPE pipeline, control tokens as
    special added tokens, user-defined ones (newline runs, [multimodal], ...) as plain added tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    tokens = _hf_spelling(meta["tokenizer.ggml.tokens"])
    types = meta["tokenizer.ggml.token_type"]
    unk = tokens[meta["tokenizer.ggml.unknown_token_id"]]
    stored = meta.get("tokenizer.ggml.merges")
    merges = [tuple(m.split(" ", 1)) for m in stored] if stored else _merges(tokens)
    tokenizer = Tokenizer(BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token=unk,
                              fuse_unk=True, byte_fallback=True, dropout=None))
    tokenizer.normalizer = normalizers.Replace(" ", _SPACE)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")  # as GemmaTokenizer
    tokenizer.decoder = decoders.Sequence([decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    original = meta["tokenizer.ggml.tokens"]
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                  for t, kind in zip(tokens, types) if kind == _CONTROL])
    # 5.23 adds a user-defined token only when the file spells it as the vocabulary does, i.e. not the space runs.
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False)
                          for t, o, kind in zip(tokens, original, types) if kind == _USER_DEFINED and t == o])
    tokenizer.post_processor = _post_processor(meta, tokens)
    return tokenizer


def _post_processor(meta: dict, tokens: list[str]):
    """Adds <bos> (and <eos>) as the GGUF's add_bos_token / add_eos_token flags say, like TokenizersBackend."""
    from tokenizers import processors

    ends = [(key, tokens[meta[f"tokenizer.ggml.{key}_token_id"]], meta[f"tokenizer.ggml.{key}_token_id"])
            for key, default in (("bos", True), ("eos", False)) if meta.get(f"tokenizer.ggml.add_{key}_token", default)]

    def template(sequence: str, type_id: int) -> list[str]:
        marks = {key: [f"{token}:{type_id}"] for key, token, _ in ends}
        return marks.get("bos", []) + [f"{sequence}:{type_id}"] + marks.get("eos", [])

    return processors.TemplateProcessing(single=template("$A", 0), pair=template("$A", 0) + template("$B", 1),
                                         special_tokens=[(token, index) for _, token, index in ends])


# ---------------------------------------------------------------- tokenizer_config.json


def _tokenizer_config(meta: dict, tokenizer) -> dict:
    """What 5.23's save_pretrained writes, plus the flags and added_tokens_decoder it leaves out.

    GemmaTokenizer is the class both 5.17 and 5.23 load tokenizer.json into (same class source in both).
    added_tokens_decoder is what llama.cpp's convert_hf_to_gguf reads to mark tokens control or user-defined
    and to turn "▁" back into spaces in user-defined ones; transformers 5 no longer writes it.
    """
    tokens = meta["tokenizer.ggml.tokens"]
    config = {"tokenizer_class": "GemmaTokenizer", "backend": "tokenizers",
              "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", True)),
              "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False))}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            config[f"{name}_token"] = tokens[meta[f"tokenizer.ggml.{key}_token_id"]]
    if "<mask>" in tokens:  # GemmaTokenizer's default mask token; 5.23 writes it too
        config["mask_token"] = "<mask>"
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    config["added_tokens_decoder"] = {
        str(index): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                     "single_word": t.single_word, "special": t.special}
        for index, t in sorted(tokenizer.get_added_tokens_decoder().items())
    }
    return config


# ---------------------------------------------------------------- tokenizer.model


def _sentencepiece_model(meta: dict) -> bytes:
    """A sentencepiece ModelProto (BPE, byte fallback) with the GGUF's pieces, scores and types.

    Encoded by hand (a dozen fields of protobuf wire format, in field order, so protobuf itself would write the
    same bytes) so the project needs no protobuf package.
    Two things differ from the GGUF on purpose. <unk> is UNKNOWN, as sentencepiece writes it; llama.cpp's
    converter marks it CONTROL again from added_tokens_decoder, as the GGUF has it. User-defined space runs are
    spelled "▁▁…" as in Google's file. The converter turns them back into spaces only for tokens listed in
    added_tokens_decoder, and these 30 are not: 5.23 does not add them, and adding them would change the ids of
    text holding a literal "▁▁". So an exact GGUF re-export must list them there first (ids 138-167 here).
    """
    tokens, scores, types = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    ids = {k: meta[f"tokenizer.ggml.{key}_token_id"] for k, key in zip(_ROLES, ("unknown", "bos", "eos", "padding"))}
    pieces = b"".join(
        _bytes(1, _bytes(1, token.replace(" ", _SPACE).encode()) + _float(2, score) + _int(3, _UNKNOWN if i == ids["unk"] else kind))
        for i, (token, score, kind) in enumerate(zip(tokens, scores, types)))
    trainer = (_int(3, 2) + _int(4, len(tokens))  # model_type BPE, vocab_size
               + _int(25, 1) + _int(26, 1) + _int(35, 1)  # split_digits, allow_whitespace_only_pieces, byte_fallback
               + b"".join(_int(40 + n, ids[k]) for n, k in enumerate(_ROLES))  # unk_id, bos_id, eos_id, pad_id
               + b"".join(_bytes(45 + n, tokens[ids[k]].encode()) for n, k in enumerate(_ROLES)))  # their pieces
    normalizer = (_bytes(1, b"identity") + _int(3, int(meta.get("tokenizer.ggml.add_space_prefix", False)))
                  + _int(4, 0) + _int(5, 1))  # add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces
    return pieces + _bytes(2, trainer) + _bytes(3, normalizer)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32s are ten-byte two's complement on the wire
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _float(field: int, value: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", value)


def _bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


# ---------------------------------------------------------------- checking a file before a runtime opens it


def gguf_problem(path: Path) -> str | None:
    """Why `path` cannot be a complete GGUF v2/v3 file, or None: an empty file, another format, a header cut off or
    inconsistent, or tensor data shorter than the tensors it announces. Every count is checked against the file's
    size before it is used, so a damaged header costs no memory; the tensor data is not read."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    size = Path(path).stat().st_size
    if size == 0:
        return "is empty"
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != struct.pack("<I", GGUF_MAGIC):
        return f"is not a GGUF file (it starts with {head!r}, not b'GGUF')"
    blob = np.memmap(path, mode="r", dtype=np.uint8)
    fixed = {int(k): struct.calcsize("<" + f) for k, f in _SCALARS.items()}

    def need(pos: int, n: int) -> int:
        if n < 0 or pos + n > size:
            raise EOFError
        return pos + n

    def skip_value(pos: int, kind: int, depth: int = 0) -> int:
        if kind in fixed:
            return need(pos, fixed[kind])
        if kind == GGUFValueType.STRING:
            (n,) = struct.unpack_from("<Q", blob, need(pos, 8) - 8)
            return need(pos + 8, n)
        if kind != GGUFValueType.ARRAY or depth > 3:
            raise ValueError(f"unknown metadata value type {kind}")
        item, n = struct.unpack_from("<IQ", blob, need(pos, 12) - 12)
        pos += 12
        if item in fixed:
            return need(pos, n * fixed[item])
        if n * 8 > size - pos:  # every string or array item takes at least 8 bytes
            raise EOFError
        for _ in range(n):
            pos = skip_value(pos, item, depth + 1)
        return pos

    try:
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, need(4, 20) - 20)
        if version not in (2, 3):
            return f"is GGUF version {version}; only versions 2 and 3 are read"
        if n_kv * 12 + n_tensors * 24 > size:  # the smallest key/value and tensor entries
            return f"is truncated or damaged (its header announces {n_kv:,} metadata entries and {n_tensors:,} tensors)"
        pos, alignment = 24, 32
        for _ in range(n_kv):
            (n,) = struct.unpack_from("<Q", blob, need(pos, 8) - 8)
            key = bytes(blob[pos + 8:need(pos + 8, n)]).decode("utf-8")
            (kind,) = struct.unpack_from("<I", blob, need(pos + 8 + n, 4) - 4)
            start = pos + 12 + n
            pos = skip_value(start, kind)
            if key == "general.alignment" and kind == GGUFValueType.UINT32:
                (alignment,) = struct.unpack_from("<I", blob, start)
        ends = []
        for _ in range(n_tensors):
            (n,) = struct.unpack_from("<Q", blob, need(pos, 8) - 8)
            pos = need(pos + 8, n)
            (n_dims,) = struct.unpack_from("<I", blob, need(pos, 4) - 4)
            if n_dims > 4:
                return "is damaged (a tensor with more than 4 dimensions)"
            dims = struct.unpack_from(f"<{n_dims}Q", blob, need(pos + 4, 8 * n_dims) - 8 * n_dims)
            kind, offset = struct.unpack_from("<IQ", blob, need(pos + 4 + 8 * n_dims, 12) - 12)
            pos += 4 + 8 * n_dims + 12
            if kind not in {t.value for t in GGMLQuantizationType}:
                return f"is damaged (unknown tensor type {kind})"
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            ends.append(offset + int(np.prod(dims, dtype=object)) // block * type_size)
        data = pos + (-pos % max(alignment, 1))
        if data + max(ends, default=0) > size:
            return f"is truncated (its tensors need {data + max(ends, default=0):,} bytes; the file has {size:,})"
    except (EOFError, struct.error):
        return "is truncated (header)"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"is damaged (header: {exc})"
    return None

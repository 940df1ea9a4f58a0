"""gemma_fast.models.gguf_tokenizer against transformers' own GGUF conversion, on the real embedded Gemma 3 270M GGUF.

Only the GGUF's metadata is read; no weight is dequantised. To check the written folder under another
transformers version too (e.g. Unsloth's 5.17), point GGUF_TOKENIZER_OTHER_PYTHON at that venv's python.
"""

import importlib.util
import json
import os
import subprocess

import pytest

from gemma_fast.families import FAMILIES
from gemma_fast.models.loader import check_chat_tokenizer
from tests.gguf_tokenizer_check import CORPUS, PACKAGE, ROOT, encode_all, gguf_path, quickstart_texts

if importlib.util.find_spec(PACKAGE) is None:
    pytest.skip(f"{PACKAGE.replace('_', '-')} is not installed: its GGUF is what these tests convert", allow_module_level=True)

TEXTS = CORPUS + quickstart_texts(200)


@pytest.fixture(scope="module")
def gguf():
    return gguf_path()


@pytest.fixture(scope="module")
def folder(gguf, tmp_path_factory):
    from gemma_fast.models.gguf_tokenizer import write_tokenizer_from_gguf

    folder = tmp_path_factory.mktemp("gguf_tokenizer")
    write_tokenizer_from_gguf(gguf, folder)
    return folder


@pytest.fixture(scope="module")
def ours(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def reference(gguf):
    # The class AutoTokenizer picks for this file, called directly: AutoTokenizer would first parse the whole GGUF
    # with gguf.GGUFReader just to learn the model type (15-35 s here). The conversion code is the same.
    from transformers import GemmaTokenizer

    return GemmaTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def test_same_ids_as_transformers_gguf_conversion(ours, reference):
    """Chat turns, docs, Chinese, code, whitespace runs, emoji, byte fallback, and the quickstart prompts/answers."""
    assert type(ours).__name__ == "GemmaTokenizer"
    mismatched = [text for text, a, b in zip(TEXTS, encode_all(ours, TEXTS), encode_all(reference, TEXTS)) if a != b]
    assert not mismatched, f"{len(mismatched)} of {len(TEXTS)} texts differ, e.g. {mismatched[:3]}"


def test_same_backend_as_transformers_gguf_conversion(ours, reference):
    """Not just the corpus: the whole tokenizer (vocab, merges, added tokens, normalizer, post-processor) is equal."""
    assert ours.backend_tokenizer.to_str() == reference.backend_tokenizer.to_str()


def test_decode_round_trips(ours):
    ids = encode_all(ours, TEXTS)
    assert all(row[0] == ours.bos_token_id for row in ids)
    failed = [text for text, row in zip(TEXTS, ids) if ours.decode(row[1:]) != text]
    assert not failed, failed[:3]


def test_vocab_and_special_tokens(folder, ours, reference):
    assert len(ours) == len(reference) == 262144
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(ours, name) == getattr(reference, name), name
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.unk_token_id) == (2, 1, 0, 3)
    assert ours.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"]) == [105, 106]
    assert ours.get_added_vocab() == reference.get_added_vocab()
    check_chat_tokenizer(ours, FAMILIES["gemma3"])  # <bos>, <start_of_turn>, "user", "\n": what 5.17's own conversion gets wrong
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    # llama.cpp's converter reads this to tell control from user-defined tokens
    assert len(config["added_tokens_decoder"]) == len(reference.get_added_vocab())
    assert config["added_tokens_decoder"]["106"] == {"content": "<end_of_turn>", "lstrip": False, "normalized": False,
                                                      "rstrip": False, "single_word": False, "special": True}


def test_sentencepiece_model_holds_the_gguf_vocabulary(gguf, folder, ours):
    import sentencepiece

    from gemma_fast.models.gguf_tokenizer import _read_metadata

    meta = _read_metadata(gguf)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tokens, scores, types = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    assert sp.vocab_size() == len(tokens)
    assert [sp.id_to_piece(i) for i in range(len(tokens))] == [t.replace(" ", "\u2581") for t in tokens]
    assert [sp.get_score(i) for i in range(len(tokens))] == scores
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (3, 2, 1, 0)
    assert all(sp.is_control(i) == (kind == 3 and i != 3) and sp.is_byte(i) == (kind == 6) for i, kind in enumerate(types))
    # sentencepiece never matches control tokens in text, so compare on the texts without any
    plain = [t for t in TEXTS if "<" not in t and "[multimodal]" not in t]
    assert len(plain) > 100
    assert [[ours.bos_token_id] + row for row in sp.encode(plain)] == encode_all(ours, plain)


def test_same_ids_under_another_transformers_version(reference, tmp_path):
    other = os.environ.get("GGUF_TOKENIZER_OTHER_PYTHON")
    if not other:
        pytest.skip("set GGUF_TOKENIZER_OTHER_PYTHON to a venv's python with another transformers (e.g. 5.17)")
    import transformers

    saved = tmp_path / "reference_ids.json"
    saved.write_text(json.dumps({"transformers": transformers.__version__, "ids": encode_all(reference, TEXTS)}))
    run = subprocess.run([other, str(ROOT / "tests" / "gguf_tokenizer_check.py"), "--compare", str(saved)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]

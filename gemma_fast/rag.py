"""Retrieval-augmented prompts: chunk a corpus, embed it offline, index it with FAISS (through LangChain), and put
the passages a question retrieves into the one prompt builder — the same at training and at evaluation.

Safety: nothing is ever unpickled. FAISS's own `save_local`/`load_local` keep the docstore in index.pkl, and
unpickling runs code (a manifest with recomputed checksums cannot prove who wrote it). So the docstore is stored as
JSON (texts and metadata, in FAISS index order) beside index.faiss, and the LangChain store is rebuilt from the two;
index.pkl is never written or read. The SHA-256s in manifest.json catch damage (not forgery); an index built with
another embedding model than the configured one is refused.
"""

from __future__ import annotations

import csv
import hashlib
import time
from functools import lru_cache
from pathlib import Path

from .errors import UserError
from .io import read_json, write_json, writing
from .outputs import check_out_dir, mark, replace_guard
from .paths import EMBEDDED_ENCODERS, embedded_encoder_dir, looks_like_hub_id
from .recipe import RagConfig, Recipe

MANIFEST = "manifest.json"
INDEX_FILES = ("index.faiss", "docstore.json")
LEGACY_PICKLE = "index.pkl"  # written by older versions; refused, never opened
# Paragraphs, lines, then sentence ends in Chinese and English, then clauses, then anything.
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", "! ", "? ", "，", ", ", " ", ""]


# ---------------------------------------------------------------- corpus


def read_glossary(path: Path) -> dict[str, str]:
    """term -> definition from a JSON object, or a CSV/TSV with two columns (term, definition)."""
    if path.is_dir():
        raise UserError(f"rag.glossary: {path} is a folder, not a file")
    if not path.is_file():
        raise UserError(f"rag.glossary: {path} not found")
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise UserError(f"{path}: a JSON glossary must be an object of term: definition strings")
        return {k.strip(): v.strip() for k, v in data.items() if k.strip()}
    delimiter = "\t" if path.suffix == ".tsv" else ","
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter=delimiter))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    out = {}
    for lineno, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip():
            raise UserError(f"{path}:{lineno}: expected two columns, term and definition")
        out[row[0].strip()] = row[1].strip()
    return out


def corpus_texts(cfg: RagConfig) -> list[tuple[str, str]]:
    """(source, text) for every passage to index: text files whole, distinct json/jsonl field values, glossary entries."""
    from .data.sources import local_paths

    texts: list[tuple[str, str]] = []
    for pattern in cfg.corpus:
        paths = local_paths(pattern)
        if not paths:
            raise UserError(f"rag.corpus: nothing found at {pattern}")
        for path in paths:
            texts.extend(_file_texts(path, cfg.corpus_field))
    if cfg.glossary:
        texts.extend((f"glossary:{term}", f"{term}: {definition}") for term, definition in read_glossary(Path(cfg.glossary)).items())
    seen, unique = set(), []
    for source, text in texts:
        if text.strip() and text not in seen:
            seen.add(text)
            unique.append((source, text))
    if not unique:
        raise UserError("rag: the corpus is empty (set rag.corpus to files or globs, and/or rag.glossary)")
    return unique


def _file_texts(path: Path, field: str) -> list[tuple[str, str]]:
    if path.is_dir():
        raise UserError(f"rag.corpus: {path} is a folder; use a glob such as {path}/*.md")
    if path.suffix in {".json", ".jsonl"}:
        from .io import read_jsonl

        rows = read_jsonl(path) if path.suffix == ".jsonl" else read_json(path)
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a list of records")
        values = [r.get(field) for r in rows if isinstance(r, dict)]
        if not any(isinstance(v, str) and v.strip() for v in values):
            raise UserError(f"{path}: no record has a non-empty '{field}' field (rag.corpus_field)")
        return [(f"{path.name}#{field}", v) for v in values if isinstance(v, str)]
    try:
        return [(path.name, path.read_text(encoding="utf-8"))]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start}); corpus files must be UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None


# ---------------------------------------------------------------- embeddings and index


def encoder_path(name: str) -> str:
    if name in EMBEDDED_ENCODERS:
        return embedded_encoder_dir(name)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if looks_like_hub_id(name):
        return name
    raise UserError(f"rag.embedding_model '{name}' not found: use {', '.join(EMBEDDED_ENCODERS)}, a local folder or a hub id")


@lru_cache(maxsize=2)
def embeddings(name: str):
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(model_name=encoder_path(name), encode_kwargs={"normalize_embeddings": True})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(recipe: Recipe, out_dir: Path, overwrite: bool = False) -> dict:
    """build_index, then point the recipe at the new index (rag.index) and save it beside the index, so training and
    evaluation with that recipe retrieve from it."""
    manifest = build_index(recipe.rag, out_dir, overwrite=overwrite)
    recipe.rag.index = str(out_dir)
    recipe.save(out_dir / "recipe.yaml")
    return manifest


def build_index(cfg: RagConfig, out_dir: Path, overwrite: bool = False) -> dict:
    """Chunk, embed and index the corpus into out_dir (written to a temp folder, then swapped in); returns the manifest.

    An existing out_dir is replaced only with overwrite=True and only if it is an index this project built."""
    import shutil

    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from langchain_core.documents import Document
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    check_out_dir(out_dir, "rag", overwrite)
    if cfg.chunk_overlap >= cfg.chunk_size:  # also checked when the recipe loads
        raise UserError(f"rag.chunk_overlap={cfg.chunk_overlap} must be smaller than rag.chunk_size={cfg.chunk_size}")
    texts = corpus_texts(cfg)
    start = time.perf_counter()
    splitter = RecursiveCharacterTextSplitter(chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap, separators=SEPARATORS,
                                              keep_separator="end")
    docs = []
    for source, text in texts:
        passage_id = hashlib.sha256(text.encode()).hexdigest()[:16]  # which passage a chunk came from (recall@k)
        docs += [Document(page_content=chunk, metadata={"source": source, "passage": passage_id}) for chunk in splitter.split_text(text)]
    store = FAISS.from_documents(docs, embeddings(cfg.embedding_model), distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    out_dir = out_dir.resolve()  # `--out ..` has no usable name for a sibling temp folder
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # a failed write (disk full) or a stop leaves no .partial folder behind
        save_store(store, tmp)
        mark(tmp, "rag")
        manifest = {
            "written_by": "gemma_fast", "embedding_model": cfg.embedding_model, "dimension": store.index.d,
            "chunk_size": cfg.chunk_size, "chunk_overlap": cfg.chunk_overlap, "passages": len(texts), "chunks": len(docs),
            "corpus_sha256": hashlib.sha256("\x00".join(t for _, t in texts).encode()).hexdigest(),
            "files_sha256": {name: _sha256(tmp / name) for name in INDEX_FILES},
            "build_seconds": round(time.perf_counter() - start, 2),
        }
        write_json(tmp / MANIFEST, manifest)
        with replace_guard(out_dir, "rag", overwrite):
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def save_store(store, folder: Path) -> None:
    """index.faiss (faiss' own format) and docstore.json: [{id, text, metadata}] in FAISS index order. No pickle."""
    import faiss

    from .io import write_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    with writing(folder / "index.faiss"):  # faiss reports a full disk as a RuntimeError
        faiss.write_index(store.index, str(folder / "index.faiss"))
    rows = []
    for i in range(store.index.ntotal):
        doc_id = store.index_to_docstore_id[i]
        doc = store.docstore.search(doc_id)
        rows.append({"id": str(doc_id), "text": doc.page_content, "metadata": doc.metadata})
    write_jsonl(folder / "docstore.json", rows)


def load_store(folder: Path, embedding):
    """Rebuild the LangChain FAISS store from index.faiss and docstore.json (never index.pkl)."""
    import faiss
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from langchain_core.documents import Document

    from .io import read_jsonl_numbered

    problem = faiss_problem(folder / "index.faiss")
    if problem:
        raise UserError(f"{folder / 'index.faiss'} {problem}: rebuild it with build_rag.py --overwrite")
    try:
        index = faiss.read_index(str(folder / "index.faiss"))
    except RuntimeError as exc:  # what the header check cannot see
        raise UserError(f"{folder / 'index.faiss'} is unreadable ({str(exc).splitlines()[-1][:160]}): rebuild it with "
                        "build_rag.py --overwrite") from None
    dimension = len(embedding.embed_query("dimension"))
    if index.d != dimension:
        raise UserError(f"{folder / 'index.faiss'} holds {index.d}-dimensional vectors, but its embedding model gives "
                        f"{dimension}: rebuild it with build_rag.py --overwrite")
    rows = read_jsonl_numbered(folder / "docstore.json")
    if len(rows) != index.ntotal:
        raise UserError(f"{folder / 'docstore.json'} has {len(rows)} passages for {index.ntotal} vectors: rebuild the index")
    docs, order, first = {}, {}, {}
    for i, (lineno, row) in enumerate(rows):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("text"), str) or not isinstance(row.get("metadata"), dict):
            raise UserError(f"{folder / 'docstore.json'}:{lineno}: expected {{id, text, metadata}}: rebuild the index")
        if row["id"] in first:  # one passage would stand for two vectors, and the other passage would be lost
            raise UserError(f"{folder / 'docstore.json'}:{lineno}: duplicate id '{row['id'][:80]}' (first on line "
                            f"{first[row['id']]}): rebuild the index")
        first[row["id"]] = lineno
        docs[row["id"]] = Document(page_content=row["text"], metadata=row["metadata"])
        order[i] = row["id"]
    return FAISS(embedding_function=embedding, index=index, docstore=InMemoryDocstore(docs), index_to_docstore_id=order,
                 distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)


FLAT_INDEXES = {b"IxFI": "inner product", b"IxF2": "L2"}  # what save_store writes (faiss' flat indexes)


def faiss_problem(path: Path) -> str | None:
    """Why `path` is not a complete flat FAISS index as save_store writes it, or None; read from its header alone,
    so a tampered vector count (ntotal) is refused before faiss allocates for it. The layout (faiss/impl/index_write.cpp):
    fourcc, d (int32), ntotal (int64), two reserved int64, is_trained (uint8), metric (int32) [+ metric_arg (float32)
    when metric > 1], then the vectors: their count (uint64) and d * ntotal float32."""
    import struct

    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(49)
    if len(head) < 4 or head[:4] not in FLAT_INDEXES:
        return f"is not a flat FAISS index as build_rag.py writes (it starts with {head[:4]!r})"
    if len(head) < 45:
        return "is truncated (header)"
    d, ntotal, _, _, _, metric = struct.unpack_from("<iqqq?i", head, 4)
    pos = 37 + (4 if metric > 1 else 0)
    if len(head) < pos + 8:
        return "is truncated (header)"
    (count,) = struct.unpack_from("<Q", head, pos)
    if d <= 0 or ntotal < 0 or count != d * ntotal:
        return f"is damaged (header: dimension {d}, {ntotal:,} vectors, {count:,} values)"
    if size != pos + 8 + 4 * count:
        return f"does not hold the {ntotal:,} vectors of dimension {d} its header announces ({size:,} bytes, not {pos + 8 + 4 * count:,})"
    return None


def load_index(cfg: RagConfig):
    """The FAISS store at cfg.index, after checking it is ours, intact, and built with the configured encoder."""
    folder = Path(cfg.index)
    if folder.is_file():
        raise UserError(f"rag.index {folder} is a file, not an index folder (build_rag.py writes a folder)")
    if not folder.is_dir():
        raise UserError(f"rag.index {folder} not found: build it with scripts/build_rag.py")
    if (folder / LEGACY_PICKLE).exists():
        raise UserError(f"{folder} holds {LEGACY_PICKLE}, an index format that loads by unpickling (running code); it is "
                        "never opened: rebuild it with build_rag.py --overwrite")
    if not (folder / MANIFEST).is_file():
        raise UserError(f"{folder} has no {MANIFEST}: only indexes written by scripts/build_rag.py are loaded")
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("written_by") != "gemma_fast":
        raise UserError(f"{folder / MANIFEST}: not a gemma_fast manifest")
    checksums = manifest.get("files_sha256")
    if not isinstance(checksums, dict) or not isinstance(manifest.get("embedding_model"), str):
        raise UserError(f"{folder / MANIFEST}: damaged (files_sha256 or embedding_model missing): rebuild it with build_rag.py --overwrite")
    for name in INDEX_FILES:
        if not (folder / name).is_file() or checksums.get(name) != _sha256(folder / name):
            raise UserError(f"{folder / name} is missing or does not match its manifest checksum: rebuild it with build_rag.py --overwrite")
    if manifest["embedding_model"] != cfg.embedding_model:
        raise UserError(f"{folder} was built with embedding model '{manifest['embedding_model']}', "
                        f"but rag.embedding_model is '{cfg.embedding_model}'")
    return load_store(folder, embeddings(cfg.embedding_model))


# ---------------------------------------------------------------- retrieval into prompts


class Retriever:
    """Retrieval from the index at cfg.index, for training, evaluation and chat alike. rag.k is capped at the number
    of passages in the index when it loads (FAISS allocates k results per query: rag.k=10^9 would ask for 12 GB)."""

    def __init__(self, cfg: RagConfig):
        self.cfg = cfg
        self.store = load_index(cfg)
        self.k = min(cfg.k, self.store.index.ntotal)
        self.terms = sorted(read_glossary(Path(cfg.glossary)), key=len, reverse=True) if cfg.trigger == "terms" else []
        if cfg.trigger == "terms" and not self.terms:
            raise UserError("rag.trigger=terms needs rag.glossary with at least one term")

    def triggered(self, question: str) -> bool:
        if self.cfg.trigger == "always":
            return True
        lowered = question.lower()
        return any(term.lower() in lowered for term in self.terms)

    def search(self, question: str) -> list[tuple[str, float, dict]]:
        hits = self.store.similarity_search_with_score(question, k=self.k)
        return [(doc.page_content, float(score), doc.metadata) for doc, score in hits if score >= self.cfg.min_score]

    def passages(self, question: str) -> list[str]:
        return [text for text, _, _ in self.search(question)] if self.triggered(question) else []


def attach_passages(recipe: Recipe, *splits: list[dict]) -> list[list[dict]]:
    """Give each record of each split the passages its question retrieves (record['passages']), which the prompt builder
    then uses. One Retriever for all: the index is read and checksummed once per run."""
    if not recipe.rag.index:
        return list(splits)
    retriever = Retriever(recipe.rag)
    return [[{**r, "passages": retriever.passages(r["instruction"])} for r in records] for records in splits]

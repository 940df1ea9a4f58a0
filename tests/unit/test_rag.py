"""Retrieval: corpus readers, Chinese-aware chunking, the FAISS index and its safety checks, prompts with passages."""

import json

import pytest

from gemma_fast.errors import UserError
from gemma_fast.rag import Retriever, attach_passages, build_index, corpus_texts, load_index
from gemma_fast.recipe import RagConfig, load_recipe

DOCS = {
    "kernels.md": "# Kernels\n\nA Kaggle Notebook (formerly called a kernel) runs code in the browser with free GPUs.",
    "medals.md": "Medals are awarded for competition results: gold, silver and bronze, based on leaderboard rank.",
    "datasets.md": "Datasets can be uploaded as CSV or JSON files and versioned; each version keeps its own files.",
}


@pytest.fixture
def corpus(tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "glossary.json").write_text(json.dumps({"TPU": "Tensor Processing Unit, an accelerator for notebooks."}))
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"input": t, "instruction": "q", "output": "a"}) + "\n"
                                               for t in ["Submissions are scored against a hidden test set.", "Submissions are scored against a hidden test set."]))
    return tmp_path


def config(corpus, **extra):
    return RagConfig(corpus=[str(corpus / "*.md"), str(corpus / "qa.jsonl")], glossary=str(corpus / "glossary.json"),
                     index=str(corpus / "index"), chunk_size=200, chunk_overlap=20, k=1, **extra)


def test_build_writes_a_manifest_and_retrieves_the_right_passage(corpus):
    cfg = config(corpus)
    manifest = build_index(cfg, corpus / "index")
    assert manifest["passages"] == 5  # 3 files, 1 distinct jsonl context (the duplicate is dropped), 1 glossary entry
    assert manifest["dimension"] == 384 and manifest["embedding_model"] == "embedded:all-minilm-l6-v2"
    assert set(manifest["files_sha256"]) == {"index.faiss", "docstore.json"}
    assert not (corpus / "index" / "index.pkl").exists()
    retriever = Retriever(cfg)
    assert "Medals" in retriever.passages("How are gold and silver medals given?")[0]
    assert "hidden test set" in retriever.passages("How is my submission scored?")[0]
    text, score, meta = retriever.search("What does TPU stand for?")[0]
    assert text.startswith("TPU:") and 0 < score <= 1.0001 and meta["source"] == "glossary:TPU"


def test_min_score_and_term_trigger(corpus):
    build_index(config(corpus), corpus / "index")
    assert Retriever(config(corpus, min_score=0.99)).passages("medals?") == []
    terms = Retriever(config(corpus, trigger="terms"))
    assert terms.passages("Which medals exist?") == []  # no glossary term in the question: no retrieval
    assert terms.passages("Can I use a tpu here?")[0].startswith("TPU:")


def test_chinese_text_is_chunked_at_sentence_ends(tmp_path):
    (tmp_path / "poem.txt").write_text("床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 4, encoding="utf-8")
    manifest = build_index(RagConfig(corpus=[str(tmp_path / "poem.txt")], chunk_size=30, chunk_overlap=0), tmp_path / "idx")
    store = load_index(RagConfig(index=str(tmp_path / "idx")))
    chunks = [d.page_content for d in store.docstore._dict.values()]
    assert manifest["chunks"] == len(chunks) > 1 and all(c.endswith("。") for c in chunks)


def test_index_safety_checks(corpus):
    cfg = config(corpus)
    build_index(cfg, corpus / "index")
    with pytest.raises(UserError, match="was built with embedding model 'embedded:all-minilm-l6-v2', but rag.embedding_model is"):
        load_index(RagConfig(index=cfg.index, embedding_model=str(corpus)))
    docstore = corpus / "index" / "docstore.json"
    docstore.write_bytes(docstore.read_bytes() + b"tampered")
    with pytest.raises(UserError, match="does not match its manifest checksum"):
        load_index(cfg)
    (corpus / "index" / "manifest.json").unlink()
    with pytest.raises(UserError, match="has no manifest.json: only indexes written by scripts/build_rag.py are loaded"):
        load_index(cfg)
    with pytest.raises(UserError, match="not found: build it with scripts/build_rag.py"):
        load_index(RagConfig(index=str(corpus / "nowhere")))


def test_bad_corpora_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="the corpus is empty"):
        corpus_texts(RagConfig())
    with pytest.raises(UserError, match="nothing found at"):
        corpus_texts(RagConfig(corpus=[str(tmp_path / "missing/*.md")]))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UserError, match=r"bin\.txt: not valid UTF-8"):
        corpus_texts(RagConfig(corpus=[str(tmp_path / "bin.txt")]))
    (tmp_path / "r.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(UserError, match="no record has a non-empty 'input' field"):
        corpus_texts(RagConfig(corpus=[str(tmp_path / "r.jsonl")]))
    (tmp_path / "g.csv").write_text("only-one-column\n")
    with pytest.raises(UserError, match=r"g\.csv:1: expected two columns"):
        corpus_texts(RagConfig(glossary=str(tmp_path / "g.csv")))
    (tmp_path / "empty.md").write_text("   ")
    with pytest.raises(UserError, match="the corpus is empty"):
        build_index(RagConfig(corpus=[str(tmp_path / "empty.md")]), tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_passages_reach_the_prompt(corpus, tiny_prompts):
    build_index(config(corpus), corpus / "index")
    recipe = load_recipe("quickstart", [f"rag.index={corpus / 'index'}", f"rag.glossary={corpus / 'glossary.json'}", "rag.k=1"])
    ((record,),) = attach_passages(recipe, [{"id": "1", "instruction": "How are medals awarded?", "input": "", "output": "By rank."}])
    prompt = tiny_prompts.record_prompt(record).text
    assert prompt.startswith("<bos><start_of_turn>user\nContext:\nMedals are awarded") and prompt.endswith("How are medals awarded?<end_of_turn>\n<start_of_turn>model\n")


class _Plant:
    """Unpickling this creates a marker file: proof that a pickle was opened."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_never_opened(corpus):
    """Even with a manifest whose checksums were recomputed for the planted file (forgery), index.pkl is refused unread."""
    import hashlib
    import pickle

    cfg = config(corpus)
    build_index(cfg, corpus / "index")
    marker = corpus / "PWNED"
    pkl = corpus / "index" / "index.pkl"
    pkl.write_bytes(pickle.dumps(_Plant(str(marker))))
    manifest_path = corpus / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files_sha256"]["index.pkl"] = hashlib.sha256(pkl.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="rebuild it with build_rag.py --overwrite"):
        load_index(cfg)
    assert not marker.exists()
    pkl.unlink()  # without it, the JSON docstore still loads and nothing reads a pickle
    assert Retriever(cfg).passages("How are gold and silver medals given?")
    assert not marker.exists()


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("embedding_model"), "damaged"),
    (lambda m: m.update(files_sha256=["x"]), "damaged"),
])
def test_a_damaged_manifest_is_a_clear_error(corpus, edit, message):
    cfg = config(corpus)
    build_index(cfg, corpus / "index")
    path = corpus / "index" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=message):
        load_index(cfg)

#!/usr/bin/env python3
"""Retrieval quality and speed on real data: index every distinct context of Kaggle docs QA v3 + v2, then for each
v2 question find where its own gold context ranks. Reports recall@1/3/5 and MRR (over passages: chunks of one
context count once, at their best rank), index build time, and query latency p50/p95.

Usage: .venv/bin/python bench/rag_recall.py [--chunk-size 1000] [--chunk-overlap 100]
Needs ../shared/data/kaggle_docs. Writes bench/results/rag_recall.json.
"""

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402
KAGGLE = ROOT.parent / "shared" / "data" / "kaggle_docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--chunk-overlap", type=int, default=100)
    args = parser.parse_args()
    from gemma_fast.rag import Retriever, build_index, embeddings
    from gemma_fast.recipe import RagConfig

    files = [KAGGLE / "kaggle_docs_QA_v3.json", KAGGLE / "kaggle_docs_QA_v2.json"]
    cfg = RagConfig(corpus=[str(f) for f in files], corpus_field="input", chunk_size=args.chunk_size,
                    chunk_overlap=args.chunk_overlap, k=20, index=str(Path(tempfile.mkdtemp()) / "kaggle"))
    embeddings(cfg.embedding_model)  # encoder load stays out of the build time
    manifest = build_index(cfg, Path(cfg.index))
    retriever = Retriever(cfg)
    questions = json.loads(files[1].read_text(encoding="utf-8"))
    ranks, latencies = [], []
    for q in questions:
        gold = hashlib.sha256(q["input"].encode()).hexdigest()[:16]
        start = time.perf_counter()
        hits = retriever.search(q["instruction"])
        latencies.append((time.perf_counter() - start) * 1000)
        passages = list(dict.fromkeys(meta["passage"] for _, _, meta in hits))  # best rank of each passage
        ranks.append(passages.index(gold) + 1 if gold in passages else None)
    n = len(ranks)
    lat = sorted(latencies)
    result = stamp(**{
        "embedding_model": cfg.embedding_model, "chunk_size": cfg.chunk_size, "chunk_overlap": cfg.chunk_overlap,
        "passages": manifest["passages"], "chunks": manifest["chunks"], "build_seconds": manifest["build_seconds"],
        "questions": n, **{f"recall@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 4) for k in (1, 3, 5)},
        "mrr@20": round(sum(1 / r for r in ranks if r) / n, 4),
        "query_ms_p50": round(statistics.median(lat), 1), "query_ms_p95": round(lat[int(0.95 * (len(lat) - 1))], 1),
    })
    print(json.dumps(result, indent=2))
    save("rag_recall", result)


if __name__ == "__main__":
    main()

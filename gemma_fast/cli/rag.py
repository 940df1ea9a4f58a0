"""Build a FAISS retrieval index (through LangChain) from a recipe's rag settings; writes rag/<name>/.

Corpus (rag.corpus): text or Markdown files, or the distinct values of a field of json/jsonl records
(rag.corpus_field), plus a glossary (rag.glossary: term -> definition). Chunked with LangChain's recursive splitter
(separators that also split Chinese sentences), embedded offline with all-MiniLM-L6-v2 by default, and saved
with manifest.json: embedding model, dimension, chunk settings, corpus and file checksums, chunk count.
Then set rag.index=<that folder> for training and evaluation.
Examples:
  python scripts/build_rag.py --recipe kaggle_docs --set 'rag.corpus=[../shared/data/kaggle_docs/kaggle_docs_QA_v3.json]' --out rag/kaggle
  python scripts/build_rag.py --recipe quickstart --set 'rag.corpus=[README.md, docs/*.md]' --out rag/quickstart
"""

from pathlib import Path

from gemma_fast.cli import common as cli


def main() -> None:
    p = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--overwrite", action="store_true", help="replace an index already in --out (only one build_rag.py wrote)")
    args = p.parse_args()
    recipe = cli.recipe_from_args(args)
    from gemma_fast.rag import build
    from gemma_fast.report import console, table

    out_dir = Path(args.out) if args.out else recipe.default_out("rag")
    with cli.console.status(f"embedding and indexing the corpus of {recipe.name}"):
        manifest = build(recipe, out_dir, overwrite=args.overwrite)
    keys = ["embedding_model", "dimension", "passages", "chunks", "chunk_size", "chunk_overlap", "build_seconds"]
    console.print(table(f"index -> {out_dir}", ["", "value"], [(k, manifest[k]) for k in keys]))
    console.print(f"use it with --set rag.index={out_dir}")


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()

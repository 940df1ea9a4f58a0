#!/usr/bin/env python3
"""Build a FAISS retrieval index (through LangChain) from a recipe's rag settings; writes rag/<name>/.
Same as `gemma-fast rag`; the code is gemma_fast/cli/rag.py."""

from gemma_fast.cli.rag import run

if __name__ == "__main__":
    run()

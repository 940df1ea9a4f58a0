#!/usr/bin/env python3
"""Export a finished training run: merged weights, GGUF files, Ollama Modelfiles, each checked.
Same as `gemma-fast export`; the code is gemma_fast/cli/export.py."""

from gemma_fast.cli.export import run

if __name__ == "__main__":
    run()

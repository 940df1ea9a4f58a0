#!/usr/bin/env python3
"""Prepare a recipe's dataset: load, clean, de-duplicate, filter and split into data/<recipe>/.
Same as `gemma-fast prepare`; the code is gemma_fast/cli/prepare.py."""

from gemma_fast.cli.prepare import run

if __name__ == "__main__":
    run()

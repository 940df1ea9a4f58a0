#!/usr/bin/env python3
"""Evaluate a model on a prepared split with offline, language-aware metrics and 95% bootstrap intervals.
Same as `gemma-fast evaluate`; the code is gemma_fast/cli/evaluate.py."""

from gemma_fast.cli.evaluate import run

if __name__ == "__main__":
    run()

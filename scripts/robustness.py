#!/usr/bin/env python3
"""Robustness suite: how much do perturbed questions (language, noise, wording, context) cost a model?
Same as `gemma-fast robustness`; the code is gemma_fast/cli/robustness.py."""

from gemma_fast.cli.robustness import run

if __name__ == "__main__":
    run()

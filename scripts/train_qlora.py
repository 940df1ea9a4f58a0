#!/usr/bin/env python3
"""Fine-tune a Gemma model (QLoRA, LoRA or prefix tuning) on a prepared recipe; writes runs/<recipe>/<run>/.
Same as `gemma-fast train`; the code is gemma_fast/cli/train.py."""

from gemma_fast.cli.train import run

if __name__ == "__main__":
    run()

#!/usr/bin/env python3
"""Fine-tune a Gemma model (QLoRA, LoRA or prefix tuning) on a prepared recipe; writes runs/<recipe>/<run>/.
Same as `gemma-fast train`; the code is gemma_fast/commands/train_qlora.py."""

from gemma_fast.commands.train_qlora import run

if __name__ == "__main__":
    run()

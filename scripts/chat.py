#!/usr/bin/env python3
"""Chat with a model: a base, a fine-tuned run (adapter), a merged folder or a GGUF, through the training prompt builder.
Same as `gemma-fast chat`; the code is gemma_fast/cli/chat.py."""

from gemma_fast.cli.chat import run

if __name__ == "__main__":
    run()

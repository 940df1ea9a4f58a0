#!/usr/bin/env python3
"""Print library versions, CUDA, the driver and GPUs for a bug report.
Same as `gemma-fast env`; the code is gemma_fast/cli/env.py."""

from gemma_fast.cli.env import run

if __name__ == "__main__":
    run()

#!/usr/bin/env python3
"""Measure how much perturbed questions (language, noise, wording, context) cost a model. Not implemented yet (issue #7): exits with an error rather than producing fake output."""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not scripts/

from gemma_fast import cli  # noqa: E402
from gemma_fast.errors import NotYetImplemented  # noqa: E402


def main() -> None:
    cli.parser(__doc__.splitlines()[0]).parse_args()
    raise NotYetImplemented("scripts/robustness.py is not implemented yet (issue #7)")


if __name__ == "__main__":
    cli.run(main)

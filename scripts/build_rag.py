#!/usr/bin/env python3
"""Build a FAISS retrieval index for retrieval-augmented prompts. Not implemented yet (issue #6): exits with an error rather than producing fake output."""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not scripts/

from gemma_fast import cli  # noqa: E402
from gemma_fast.errors import NotYetImplemented  # noqa: E402


def main() -> None:
    cli.parser(__doc__.splitlines()[0]).parse_args()
    raise NotYetImplemented("scripts/build_rag.py is not implemented yet (issue #6)")


if __name__ == "__main__":
    cli.run(main)

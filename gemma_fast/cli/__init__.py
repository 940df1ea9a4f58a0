"""The stages' command lines (gemma-fast <stage>, scripts/*.py). Importing this package imports nothing heavy."""


"""Data preparation: sources, formats, cleaning, splits. Importing this package imports nothing heavy."""

_LAZY = {"prepare": "pipeline", "load_split": "pipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

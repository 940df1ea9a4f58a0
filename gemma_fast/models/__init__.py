"""Which weights, which backend, which dtype: the one model loader. Importing this package imports nothing heavy."""

_LAZY = {"load_model": "loader", "load_tokenizer": "loader"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

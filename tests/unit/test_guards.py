"""Guards against silent training failure (gemma_fast.guards), each shown to pass on a healthy run and to stop a
planted failure: a label mask shifted against the template, a forward that breaks without the cache (the Gemma 4 KV
sharing failure), NaN gradients, and an adapter that never moves."""

import json

import pytest
import torch

from gemma_fast.training import run as T
from gemma_fast.data.pipeline import prepare
from gemma_fast.training.guards import TrainingFailed
from gemma_fast.recipe import load_recipe
from gemma_fast.testing.tiny import save_tiny_model, tiny_tokenizer

pytestmark = pytest.mark.slow  # every test trains a tiny model: the full tier (make test)



@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    prepare(load_recipe("quickstart", ["data.max_records=24", "train.max_seq_length=256"]), root / "data", tiny_tokenizer())
    for family in ("gemma3", "gemma4"):
        save_tiny_model(family, root / family)
    return root


def recipe(work, family="gemma3", *overrides):
    return load_recipe("quickstart", [f"model={work / family}", f"data.dir={work / 'data'}", "train.max_steps=3",
                                      "train.batch_size=4", "train.max_seq_length=256", "lora.r=4", "lora.alpha=8",
                                      "train.lr=1e-2", *overrides])


@pytest.mark.parametrize("family, overrides", [("gemma3", []), ("gemma4", []), ("gemma4", ["train.padding_free=false"]),
                                               ("gemma4", ["train.gradient_checkpointing=true", "train.grad_accum=2"])])
def test_a_healthy_run_passes_every_guard_and_records_them(work, tmp_path, family, overrides):
    summary = T.train(recipe(work, family, *overrides), tmp_path / "run")
    guards = json.loads((tmp_path / "run" / "train_summary.json").read_text())["guards"]
    first = guards["first_batch"]
    assert first["checked"] and first["answer_tokens"] > 0 and first["difference"] <= first["tolerance"] == 1e-3, first
    assert guards["gradients"] == {**guards["gradients"], "steps": summary["steps"] * 1, "finite": summary["steps"]}
    assert 0 < guards["movement"]["moved"] <= guards["movement"]["tensors"] and guards["movement"]["max_abs_change"] > 0


def test_a_mask_shifted_against_the_template_stops_before_the_first_update(work, tmp_path, monkeypatch):
    real = T.tokenize_split

    def shifted(prompts, records, max_length):
        ds = real(prompts, records, max_length)
        return ds.map(lambda e: {"completion_mask": [0] + e["completion_mask"][:-1]})

    monkeypatch.setattr(T, "tokenize_split", shifted)
    with pytest.raises(TrainingFailed, match=r"first batch: the training forward's answer loss is \d+\.\d+ but the evaluation path gives"):
        T.train(recipe(work), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing saved


def test_a_forward_that_breaks_without_the_cache_is_caught(work, tmp_path, monkeypatch):
    """The Gemma 4 / 3n KV-sharing failure: garbage logits whenever use_cache=False (training), fine with the cache."""
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextModel

    real = Gemma4TextModel.forward

    def broken(self, *args, use_cache=None, **kwargs):
        out = real(self, *args, use_cache=use_cache, **kwargs)
        if use_cache is False:
            out.last_hidden_state = out.last_hidden_state * 3  # what a lost shared K/V does: the loss far off
        return out

    monkeypatch.setattr(Gemma4TextModel, "forward", broken)
    with pytest.raises(TrainingFailed, match="first batch"):
        T.train(recipe(work, "gemma4", "train.padding_free=false"), tmp_path / "run")


def test_nan_gradients_stop_the_run(work, tmp_path, monkeypatch):
    real = T.attach_adapter

    def poisoned(loaded, rec, method):
        model = real(loaded, rec, method)
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.register_hook(lambda g: torch.full_like(g, float("nan")))
                break
        return model

    monkeypatch.setattr(T, "attach_adapter", poisoned)
    with pytest.raises(TrainingFailed, match=r"step 1: the gradient norm is nan"):
        T.train(recipe(work), tmp_path / "run")


def test_an_adapter_that_never_moves_exits_non_zero_after_saving(work, tmp_path, monkeypatch):
    """Zero gradients while the loss prints (Unsloth #5230): the run is saved for inspection, and the run fails."""
    real = T.attach_adapter

    def frozen(loaded, rec, method):
        model = real(loaded, rec, method)
        for p in model.parameters():
            if p.requires_grad:
                p.register_hook(torch.zeros_like)
        return model

    monkeypatch.setattr(T, "attach_adapter", frozen)
    with pytest.raises(TrainingFailed, match=r"the adapter did not move: none of its \d+ trainable tensors changed and every gradient was zero"):
        T.train(recipe(work, "gemma3", "train.weight_decay=0"), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["guards"]["movement"]["moved"] == 0 and (tmp_path / "run" / "adapter").is_dir()


def test_a_run_whose_only_update_had_learning_rate_zero_is_noted_not_failed(work, tmp_path):
    """One step under warmup: the gradients are there, the learning rate is 0, nothing moves; that is said, not failed."""
    summary = T.train(recipe(work, "gemma3", "train.max_steps=1", "train.warmup_ratio=0.5"), tmp_path / "run")
    assert summary["guards"]["movement"]["moved"] == 0 and summary["guards"]["gradients"]["max_norm_after_clipping"] > 0
    assert any("learning rate was 0 at every update" in note for note in summary["notes"])

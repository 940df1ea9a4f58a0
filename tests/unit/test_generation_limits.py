"""Generation never cuts a prompt silently: evaluation (and robustness, through the same run_candidate) refuses a
prompt that is not shorter than train.max_seq_length before anything generates; answers may run past it."""

import pytest

from gemma_fast.errors import UserError
from gemma_fast.evaluation.run import evaluate
from gemma_fast.io import write_jsonl
from gemma_fast.recipe import load_recipe


def recipe_with(tmp_path, tiny_model_dir, rows, *overrides):
    write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    return load_recipe("quickstart", [f"model={tiny_model_dir}", f"data.dir={tmp_path / 'data'}", "eval.batch_size=2",
                                      "eval.answer_stats=false", *overrides])


def test_an_over_long_prompt_is_refused_before_generation(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("gemma_fast.inference.generation.TransformersGenerator.generate", lambda *a, **k: pytest.fail("generated"))
    rows = [{"id": "short", "instruction": "Is it ready?", "input": "", "output": "Yes.", "lang": "en"},
            {"id": "long", "instruction": "Is it ready?", "input": "the context goes on " * 40, "output": "Yes.", "lang": "en"}]
    recipe = recipe_with(tmp_path, tiny_model_dir, rows, "train.max_seq_length=64", "eval.max_new_tokens=4")
    with pytest.raises(UserError, match=r"test.jsonl \(base\): 1 prompt\(s\) not shorter than train.max_seq_length=64 tokens "
                                        r"\(id long: \d+\); nothing was generated"):
        evaluate(recipe, tmp_path / "eval")


@pytest.mark.slow  # trains or generates with a tiny model: the full tier (make test)
def test_answers_may_run_past_max_seq_length(tmp_path, tiny_model_dir, monkeypatch):
    """prompt < max_seq_length <= prompt + max_new_tokens: generated in full (only a prompt's forward is ever cut)."""
    monkeypatch.setattr("gemma_fast.evaluation.encoders.e5_available", lambda: False)
    rows = [{"id": "q", "instruction": "Is it ready? " * 4, "input": "", "output": "Yes.", "lang": "en"}]
    recipe = recipe_with(tmp_path, tiny_model_dir, rows, "train.max_seq_length=64", "eval.max_new_tokens=48")  # prompt: 53
    summary = evaluate(recipe, tmp_path / "eval")
    assert summary["examples"] == 1

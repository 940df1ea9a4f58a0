"""Each seed recipe trains here as its header says: --set model=embedded:gemma-3-270m and a small max_steps, on
tiny data in the recipe's own format. Batch size and accumulation are cut to 2 x 1 so four recipes fit in CI time;
everything else (method, optimizer, LoRA shape, schedule, cleaning) is the recipe's own, CPU fallbacks included."""

import json

import pytest

from gemma_fast.data.pipeline import prepare
from gemma_fast.models.loader import load_tokenizer
from gemma_fast.recipe import load_recipe
from gemma_fast.training.run import train
from tests.recipes.test_recipes import SAMPLE_ROWS

SEED_RECIPES = ["kaggle_docs", "dolly", "chinese_qa", "chinese_poetry"]


@pytest.mark.parametrize("name", SEED_RECIPES)
def test_seed_recipe_trains_on_the_embedded_model(name, tmp_path):

    fmt = load_recipe(name).data.format
    source = tmp_path / "sample.json"
    source.write_text(json.dumps(SAMPLE_ROWS[fmt], ensure_ascii=False), encoding="utf-8")
    recipe = load_recipe(name, [f"data.source={source}", "data.test_source=", "data.max_records=0", "model=embedded:gemma-3-270m",
                                "train.max_steps=2", "train.batch_size=2", "train.grad_accum=1", f"data.dir={tmp_path / 'data'}"])
    prepare(recipe, tmp_path / "data", load_tokenizer(recipe.model)[1])
    summary = train(recipe, tmp_path / "run")
    assert summary["steps"] == 2 and summary["final_loss"] is not None
    assert summary["method"] == "lora"  # kaggle_docs asks for qlora: on this CPU it must fall back, and say so
    if name == "kaggle_docs":
        assert summary["notes"] and summary["optimizer"] == "adamw_torch"
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_prefix_tuning_trains_on_the_embedded_model(tmp_path):

    from gemma_fast.data.sources import ASSETS

    recipe = load_recipe("quickstart", ["model=embedded:gemma-3-270m", "train.method=prefix", "train.max_steps=2",
                                        "train.batch_size=2", "data.max_records=20", f"data.dir={tmp_path / 'data'}"])
    assert (ASSETS / "quickstart_docs_qa.jsonl").is_file()
    prepare(recipe, tmp_path / "data", load_tokenizer(recipe.model)[1])
    summary = train(recipe, tmp_path / "run")
    assert summary["method"] == "prefix" and summary["trainable_parameters"] == 16 * 18 * 2 * 256  # tokens x layers x (k, v) x kv width
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING"

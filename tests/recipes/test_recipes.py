"""Every recipe in recipes/ parses, resolves against the dataclasses, names its launch command, and dry-runs."""

import io

import pytest

from gemma_fast.data.sources import is_url, local_paths
from gemma_fast.recipe import RECIPES_DIR, available_recipes, load_recipe

RECIPES = available_recipes()


def test_there_are_recipes():
    assert "quickstart" in RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_resolves_and_round_trips(name, tmp_path):
    recipe = load_recipe(name)  # unknown keys or wrong types would raise here
    recipe.save(tmp_path / "r.yaml")
    assert load_recipe(str(tmp_path / "r.yaml")).to_dict() == recipe.to_dict()


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_opens_with_the_command_that_runs_it(name):
    head = (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:8]
    assert head[0].startswith("#")
    assert any("scripts/" in line or "make " in line for line in head if line.startswith("#"))


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_data_sources_are_shipped_urls_or_hub_ids(name):
    from gemma_fast.paths import looks_like_hub_id

    data = load_recipe(name).data
    for source in filter(None, (data.source, data.test_source, data.mix_source)):
        assert is_url(source) or looks_like_hub_id(source) or all(p.is_file() for p in local_paths(source)), source


SAMPLE_ROWS = {  # a few rows in each format's own shape
    "alpaca": [{"instruction": f"Question {i}?", "input": "Some context.", "output": f"Answer {i}."} for i in range(20)],
    "dolly": [{"instruction": f"Q{i}", "context": "ctx", "response": f"R{i}", "category": "open_qa"} for i in range(20)],
    "sharegpt": [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"问题{i}？"}, {"from": "gpt", "value": f"回答{i}。"}]} for i in range(20)],
    "poetry": [{"author": "李白", "title": f"诗{i}", "paragraphs": [f"第{i}句，", "下一句。"]} for i in range(10)],
}


@pytest.mark.slow  # prepares each recipe's data: the full tier (make test)
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_prepares_data_in_its_format(name, tmp_path, tiny_model_dir):
    import json

    from gemma_fast.data.pipeline import prepare

    fmt = load_recipe(name).data.format
    source = tmp_path / "sample.json"
    source.write_text(json.dumps(SAMPLE_ROWS[fmt], ensure_ascii=False), encoding="utf-8")
    recipe = load_recipe(name, [f"data.source={source}", "data.test_source=", "data.max_records=0",
                                "data.test_fraction=0.2", f"model={tiny_model_dir}"])
    report = prepare(recipe, tmp_path / "out")
    assert report["kept"]["train"] > 0 and report["kept"]["test"] > 0
    assert report["records_in"] == sum(report["kept"].values()) + sum(report["dropped"].values())


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_plans_on_a_t4_without_loading_a_weight(name):
    """`train_qlora.py --recipe NAME --plan --gpu t4`: the model built on the meta device, both estimates and verdicts."""
    from rich.console import Console

    from gemma_fast.plan.preflight import preflight, render

    plan = preflight(load_recipe(name), "t4")
    assert plan.device.name == "t4" and plan.arch.params.total > 0
    assert plan.estimate.gib() > 0 and plan.eval_estimate.gib() > 0
    assert {plan.verdict, plan.eval_verdict} <= {"fits", "tight", "does not fit"}
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render(plan))
    assert "t4" in console.export_text().lower()

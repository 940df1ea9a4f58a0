"""Every recipe in recipes/ parses, resolves against the dataclasses, names its launch command, and dry-runs."""

import pytest

from gemma_fast.data import resolve_source
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
def test_recipe_data_source_is_reachable_or_remote(name):
    source = load_recipe(name).data.source
    if source.startswith(("asset:", "/", ".")):
        assert resolve_source(source).is_file()

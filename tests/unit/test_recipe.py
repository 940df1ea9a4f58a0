import pytest
import yaml

from gemma_fast.errors import UserError
from gemma_fast.recipe import Recipe, apply_override, available_recipes, load_recipe


def test_quickstart_loads_with_typed_values():
    recipe = load_recipe("quickstart")
    assert recipe.name == "quickstart"
    assert recipe.model == "embedded:gemma-3-270m"
    assert isinstance(recipe.train.lr, float) and recipe.train.lr == 5e-4  # YAML reads 5e-4 as a string
    assert recipe.lora.target_modules == ["all-linear"]


def test_overrides_are_typed_and_nested():
    recipe = load_recipe("quickstart", ["train.lr=1e-4", "train.epochs=2", "lora.r=4", "eval.do_sample=true",
                                        "lora.target_modules=q_proj,v_proj", "model=google/gemma-2b"])
    assert recipe.train.lr == 1e-4 and recipe.train.epochs == 2.0 and recipe.lora.r == 4
    assert recipe.eval.do_sample is True
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.model == "google/gemma-2b"


@pytest.mark.parametrize("item, message", [
    ("train.lrr=1", "unknown key 'train.lrr'; valid: train.method"),
    ("nope=1", "unknown key 'nope'; valid: name, model, backend"),
    ("lora.r=abc", "'lora.r' must be int, got 'abc'"),
    ("lora.r=1.5", "'lora.r' must be int"),
    ("train.lr=fast", "'train.lr' must be float"),
    ("eval.do_sample=maybe", "'eval.do_sample' must be bool"),
    ("backend=tpu", "'backend' must be one of auto, unsloth, hf"),
    ("train=1", "'train' is a section; set one of train.method"),
    ("model.sub=1", "'model' has no sub-keys"),
    ("train.lr", "--set expects key=value"),
    ("data.context_dropout=1.5", "'data.context_dropout' must be >= 0 and <= 1, got 1.5"),
    ("data.context_dropout=-0.1", "'data.context_dropout' must be >= 0 and <= 1"),
    ("data.mix_share=1", "'data.mix_share' must be >= 0 and < 1"),
    ("data.mix_format=csv", "'data.mix_format' must be one of alpaca, dolly, sharegpt, poetry"),
    ("eval.min_n=0", "'eval.min_n' must be >= 1, got 0"),
])
def test_bad_overrides_name_the_key_and_the_valid_choices(item, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        apply_override(Recipe(), item)


def test_mix_share_and_mix_source_come_together():
    for overrides in (["data.mix_share=0.2"], ["data.mix_source=general.jsonl"]):
        with pytest.raises(UserError, match=r"data\.mix_share=.* and data\.mix_source=.*: set both"):
            load_recipe("quickstart", overrides)
    recipe = load_recipe("quickstart", ["data.mix_source=general.jsonl", "data.mix_share=0.2", "data.mix_format=dolly"])
    assert (recipe.data.mix_source, recipe.data.mix_share, recipe.data.mix_format) == ("general.jsonl", 0.2, "dolly")


def test_unknown_recipe_lists_valid_ones():
    with pytest.raises(UserError) as err:
        load_recipe("no_such_recipe")
    assert "unknown recipe 'no_such_recipe'" in str(err.value)
    assert "quickstart" in str(err.value)


def test_missing_recipe_file_and_unknown_yaml_key(write_recipe, tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe(str(tmp_path / "missing.yaml"))
    with pytest.raises(UserError, match=r"unknown key 'train\.epochz'"):
        load_recipe(str(write_recipe({"train": {"epochz": 1}})))
    with pytest.raises(UserError, match="'train' must be a mapping"):
        load_recipe(str(write_recipe({"train": 3})))


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: x\ntrain: [unclosed\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.yaml:\d+:\d+: malformed YAML"):
        load_recipe(str(path))


def test_saved_recipe_reloads_identically(tmp_path):
    recipe = load_recipe("quickstart", ["train.lr=3e-4"])
    recipe.save(tmp_path / "recipe.yaml")
    assert load_recipe(str(tmp_path / "recipe.yaml")).to_dict() == recipe.to_dict()
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["train"]["lr"] == 3e-4


def test_available_recipes_match_files():
    assert "quickstart" in available_recipes()


@pytest.mark.parametrize("override, message", [
    ("robustness.metric=corpus_bleu", r"'robustness\.metric' must be one of answer_loss"),  # corpus level: no per-question drop
    ("robustness.perturbations=[typo:0.1]", r"robustness\.perturbations: unknown perturbation 'typo'"),
    ("data.clean=[html, emoji]", r"data\.clean: unknown rule 'emoji'; valid: html"),
    ("data.poetry_tasks=[rhyme]", r"data\.poetry_tasks: unknown task 'rhyme'"),
    ("data.format=jsonl", r"'data\.format' must be one of alpaca, dolly, sharegpt, poetry"),
    ("train.early_stopping_patience=2", r"early_stopping_patience needs train\.eval_steps"),
])
def test_a_bad_recipe_fails_at_load_not_at_its_stage(override, message):
    """Recipe.check() runs once, at load: a bad robustness.metric no longer passes prepare and train first."""
    with pytest.raises(UserError, match=message):
        load_recipe("quickstart", [override])


def test_prefix_rules_are_checked_at_load():
    with pytest.raises(UserError, match="gradient_checkpointing"):
        load_recipe("quickstart", ["train.method=prefix", "train.gradient_checkpointing=true"])
    with pytest.raises(UserError, match="hf backend"):
        load_recipe("quickstart", ["train.method=prefix", "backend=unsloth"])
    assert load_recipe("quickstart", ["train.method=prefix"]).train.method == "prefix"


def test_choice_lists_come_from_the_registries(monkeypatch):
    from gemma_fast.data import formats as adapters

    monkeypatch.setitem(adapters.ADAPTERS, "jsonl_chat", adapters.ADAPTERS["alpaca"])
    assert load_recipe("quickstart", ["data.format=jsonl_chat"]).data.format == "jsonl_chat"

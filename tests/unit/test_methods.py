"""The METHODS registry: every rule that differs between fine-tuning methods is one field, and a new method is one
entry (plus its PEFT config in train.attach_adapter): the recipe accepts it, the plan, exports and checkpoint checks
follow."""

import dataclasses

import pytest

from gemma_fast import methods
from gemma_fast.errors import UserError
from gemma_fast.recipe import load_recipe
from gemma_fast.training.run import Exports, check_exports, plan_run


def test_the_shipped_methods_and_their_rules():
    assert list(methods.METHODS) == ["lora", "qlora", "prefix"]
    plan = plan_run(load_recipe("quickstart", ["train.method=qlora"]), cuda=False)
    assert plan.method == "lora" and "needs a CUDA GPU for 4-bit weights" in plan.notes[0]
    plan = plan_run(load_recipe("quickstart", ["train.method=prefix"]), cuda=True, has_unsloth=True)
    assert plan.backend == "hf"
    with pytest.raises(UserError, match="--merge: a prefix-tuning adapter has no weights to merge into the model"):
        check_exports(Exports(merge=True), plan)


def test_a_new_method_is_one_entry(monkeypatch):
    """A toy 4-bit method without merging: the recipe takes it, the CPU plan falls back, --merge is refused."""
    toy = methods.Method("toy4bit", "LORA", weights_4bit=True, cpu_fallback="lora", merges=False, why_not="toy adapters stay apart")
    monkeypatch.setitem(methods.METHODS, toy.name, toy)
    recipe = load_recipe("quickstart", ["train.method=toy4bit"])
    plan = plan_run(recipe, cuda=False)
    assert (plan.method, plan.backend) == ("lora", "hf")
    plan = dataclasses.replace(plan, method="toy4bit")
    with pytest.raises(UserError, match="--merge: toy adapters stay apart"):
        check_exports(Exports(merge=True), plan)
    with pytest.raises(UserError, match="must be one of lora, qlora, prefix, toy4bit"):
        load_recipe("quickstart", ["train.method=nope"])

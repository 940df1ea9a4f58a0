"""A QLoRA run is evaluated and chatted with as it trained: in 4-bit on CUDA, its merged copy too, so that
`evaluate --model RUN/merged --compare base` compares like with like. CUDA is spoofed; load_model is recorded."""

from pathlib import Path

import pytest
import torch
import yaml

from gemma_fast.evaluation import run as evaluation
from gemma_fast.models import loader as models
from gemma_fast.recipe import load_recipe


class Recorded(Exception):
    pass


@pytest.fixture
def qlora_run(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    (run / "merged" / "config.json").write_text((Path(tiny_model_dir) / "config.json").read_text())
    ran = load_recipe("quickstart", [f"model={tiny_model_dir}", "train.method=qlora"])
    (run / "recipe.yaml").write_text(yaml.safe_dump(ran.to_dict()))
    return run


def record_loads(monkeypatch, target):
    calls = []

    def load_model(spec, *args, load_in_4bit=False, **kwargs):
        calls.append((spec, load_in_4bit))
        raise Recorded

    monkeypatch.setattr(target, "load_model", load_model)
    return calls


@pytest.mark.parametrize("cuda", [True, False])
def test_merged_qlora_run_and_its_base_load_in_4bit_on_cuda(monkeypatch, qlora_run, tiny_model_dir, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    calls = record_loads(monkeypatch, models)
    recipe = load_recipe("quickstart", [f"model={tiny_model_dir}", "train.method=lora"])  # the run's own recipe decides
    base, merged = evaluation.candidates(recipe, None, qlora_run / "merged", compare_base=True)
    for cand in (base, merged):
        with pytest.raises(Recorded):
            cand.loader()
    assert calls == [(str(tiny_model_dir), cuda), (str(qlora_run / "merged"), cuda)]


def test_chat_with_a_merged_qlora_run_loads_it_in_4bit_on_cuda(monkeypatch, qlora_run):
    from gemma_fast.inference import chat
    from gemma_fast.models import loader as models
    from gemma_fast.recipe import Recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    calls = record_loads(monkeypatch, models)
    with pytest.raises(Recorded):
        chat.open_model(chat.Source(model=str(qlora_run / "merged")), Recipe(name="chat"))
    assert calls == [(str(qlora_run / "merged"), True)]
    (qlora_run / "recipe.yaml").write_text(yaml.safe_dump(load_recipe("quickstart", ["train.method=lora"]).to_dict()))
    with pytest.raises(Recorded):
        chat.open_model(chat.Source(model=str(qlora_run / "merged")), Recipe(name="chat"))
    assert calls[-1] == (str(qlora_run / "merged"), False)  # a LoRA run was trained on 16/32-bit weights

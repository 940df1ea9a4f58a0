"""--plan's engine: the plan a GPU would run (dtype!), the memory estimate's shape, and its verdicts and fixes."""

import dataclasses
import json
import math

import pytest
import torch

from gemma_fast.errors import UserError
from gemma_fast.testing import TINY_FAMILIES, tiny_config
from gemma_fast.families import LANGUAGE_MODEL_LINEAR as GEMMA_LINEAR
from gemma_fast.preflight import (GPUS, KNOWN_ARCHS, Setup, arch_from_config, estimate, preflight, render,
                                  resolve_arch)
from gemma_fast.recipe import load_recipe
from tests.conftest import ROOT


@pytest.fixture
def recipe(tmp_path):
    """A recipe whose data folder is empty, so the estimate uses train.max_seq_length whatever data/ holds."""
    def _load(name, *overrides):
        return load_recipe(name, [f"data.dir={tmp_path / 'data'}", *overrides])
    return _load


def test_no_bfloat16_on_t4_or_v100_but_on_h100(recipe):
    for gpu in ("t4", "v100"):
        for backend in ("auto", "hf"):
            plan = preflight(recipe("kaggle_docs", f"backend={backend}"), gpu)
            assert plan.dtype in ("float16", "float32"), (gpu, backend, plan.dtype)
    assert preflight(recipe("kaggle_docs", "backend=hf"), "t4").dtype == "float32"  # fp16 overflows Gemma on the plain path
    assert preflight(recipe("kaggle_docs"), "h100").dtype == "bfloat16"
    assert not GPUS["t4"].bf16 and not GPUS["v100"].bf16 and GPUS["l4"].bf16 and GPUS["a100-40gb"].bf16


def test_kaggle_docs_plan_on_a_gpu(recipe):
    plan = preflight(recipe("kaggle_docs"), "a100-80gb")
    assert (plan.backend, plan.method, plan.optimizer) == ("unsloth", "qlora", "paged_adamw_32bit")
    assert plan.verdict == "fits" and not plan.suggestions
    assert plan.effective_batch == 8 * 16 and plan.steps is None and "unknown" in plan.steps_source
    assert plan.tokens_per_step == 128 * 512


def test_too_big_does_not_fit_and_the_suggestion_does(recipe):
    big = recipe("kaggle_docs", "train.method=lora", "train.batch_size=16", "train.max_seq_length=2048")
    plan = preflight(big, "t4")
    assert plan.method == "lora" and plan.verdict == "does not fit"
    assert plan.suggestions and all(s.verdict == "fits" for s in plan.suggestions)
    fixed = preflight(recipe("kaggle_docs", "train.method=lora", "train.batch_size=16", "train.max_seq_length=2048",
                             *plan.suggestions[0].overrides), "t4")
    assert fixed.verdict == "fits" and round(fixed.estimate.gib(), 1) == plan.suggestions[0].total_gib


def _setup(**changes):
    base = Setup(KNOWN_ARCHS["gemma-2b"], "cuda", "hf", "lora", "float16", "adamw_torch", batch_size=4, seq_len=512,
                 gradient_checkpointing="off", lora_r=16, lora_targets=GEMMA_LINEAR, lora_dropout=0.05)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("backend,checkpointing", [("hf", "off"), ("hf", "on"), ("unsloth", "offloaded")])
def test_estimate_grows_with_batch_and_sequence_length(backend, checkpointing):
    by_batch = [estimate(_setup(backend=backend, gradient_checkpointing=checkpointing, batch_size=b)).total for b in (1, 2, 4, 8, 16)]
    by_seq = [estimate(_setup(backend=backend, gradient_checkpointing=checkpointing, seq_len=n)).total for n in (128, 256, 512, 1024, 2048)]
    assert by_batch == sorted(by_batch) and by_batch[0] < by_batch[-1]
    assert by_seq == sorted(by_seq) and by_seq[0] < by_seq[-1]


def test_gradient_checkpointing_and_4bit_lower_the_estimate():
    assert estimate(_setup(gradient_checkpointing="on")).total < estimate(_setup(gradient_checkpointing="off")).total
    assert estimate(_setup(method="qlora")).total < estimate(_setup(method="lora")).total
    assert estimate(_setup(optimizer="adamw_8bit")).total < estimate(_setup(optimizer="adamw_torch")).total


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_parameter_count_matches_a_real_model(family):
    from transformers import AutoModelForCausalLM

    config = tiny_config(family)
    model = AutoModelForCausalLM.from_config(config)
    real = sum(p.numel() for p in model.parameters())  # tied lm_head is one parameter
    counted = arch_from_config(config.to_dict(), family, "test").params()["total"]
    assert abs(counted - real) / real < 0.01, (counted, real)


def test_trainable_count_matches_peft(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from gemma_fast.preflight import trainable_params

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=list(GEMMA_LINEAR), task_type="CAUSAL_LM"))
    real = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable_params(_setup(arch=resolve_arch(str(tiny_model_dir)), lora_r=4)) == real


def test_known_architectures_equal_bench_configs():
    for path in sorted((ROOT / "bench" / "configs").glob("*.json")):
        from_file = arch_from_config(json.loads(path.read_text()), path.stem, str(path))
        assert dataclasses.replace(from_file, source="") == dataclasses.replace(KNOWN_ARCHS[path.stem], source=""), path.name


def test_models_resolve_without_weights(tiny_model_dir):
    assert resolve_arch("google/gemma-7b-it").name == "gemma-7b"
    assert resolve_arch("unsloth/gemma-2-9b-it-bnb-4bit").name == "gemma-2-9b"
    embedded = resolve_arch("embedded:gemma-3-270m")
    assert (embedded.vocab, embedded.hidden, embedded.layers, embedded.heads, embedded.kv_heads, embedded.head_dim,
            embedded.intermediate, embedded.tied) == (262144, 640, 18, 4, 1, 256, 2048, True)
    assert resolve_arch(str(tiny_model_dir)).family == "gemma3"
    with pytest.raises(UserError, match=r"no built-in architecture.*--set model=/path/to/folder"):
        resolve_arch("someone/llama-13b")


def test_unknown_gpu_lists_the_valid_names(recipe):
    with pytest.raises(UserError) as err:
        preflight(recipe("quickstart"), "rtx9090")
    assert "rtx9090" in str(err.value) and all(name in str(err.value) for name in GPUS)


def test_cpu_plan_is_what_the_run_would_do(recipe, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = preflight(recipe("kaggle_docs", "model=embedded:gemma-3-270m"), None)
    assert (plan.device.kind, plan.dtype, plan.method, plan.optimizer) == ("cpu", "float32", "lora", "adamw_torch")
    assert any("qlora" in note for note in plan.notes)
    assert [c.name for c in plan.estimate.components][-1] == "process runtime"


def test_steps_and_tokens_from_prepared_data(recipe, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(100)))
    (data / "prep_report.json").write_text(json.dumps({"tokens": {"train": {"mean": 50.5, "p95": 90, "max": 120}}}))
    plan = preflight(recipe("quickstart", "train.epochs=2", "train.batch_size=8", "train.grad_accum=2"), "t4")
    assert plan.steps == 2 * math.ceil(math.ceil(100 / 8) / 2)
    assert plan.seq_len == 120 and plan.tokens_per_step == int(16 * 50.5)
    assert preflight(recipe("quickstart", "train.max_steps=7"), "t4").steps == 7


def test_dict_is_json_and_render_prints(recipe):
    from rich.console import Console

    plan = preflight(recipe("kaggle_docs"), "t4")
    out = json.loads(json.dumps(plan.to_dict()))
    assert out["plan"]["dtype"] == "float16" and out["memory"]["verdict"] == plan.verdict
    assert abs(sum(c["bytes"] for c in out["memory"]["components"]) / 2**30 - out["memory"]["total_gib"]) < 0.01
    console = Console(record=True, width=160)
    console.print(render(plan))
    assert "estimated peak memory" in console.export_text()


def test_paged_optimizer_states_that_can_spill_make_it_tight_not_a_failure(recipe):
    paged = preflight(recipe("kaggle_docs", "train.gradient_checkpointing=true", "train.batch_size=16", "train.optimizer=paged_adamw_32bit"), "t4")
    plain = preflight(recipe("kaggle_docs", "train.gradient_checkpointing=true", "train.batch_size=16", "train.optimizer=adamw_torch"), "t4")
    assert paged.estimate.total == plain.estimate.total and paged.estimate.spillable > 0
    assert (paged.verdict, plain.verdict) == ("tight", "does not fit")

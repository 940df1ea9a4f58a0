"""Backend and dtype policy on spoofed GPUs: only torch's CUDA probes are patched (availability, count, capability,
bf16 support, properties), so the code under test is the code a T4, V100, A100 or H100 runs."""

import os
import stat
from types import SimpleNamespace

import pytest
import torch

from gemma_fast.models import backend
from gemma_fast.models.backend import check_gpu_setup, model_dtype, native_bf16, resolve_backend, select_dtype
from gemma_fast.errors import UserError
from gemma_fast.models.loader import load_model
from gemma_fast.testing.tiny import save_tiny_model
from gemma_fast.recipe import load_recipe
from gemma_fast.training.run import plan_run

GPUS = {"v100": ((7, 0), 16), "t4": ((7, 5), 15), "a100": ((8, 0), 40), "h100": ((9, 0), 80)}


@pytest.fixture
def spoof_gpu(monkeypatch):
    def install(name: str, count: int = 1):
        capability, gib = GPUS[name]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        # what torch 2.13 really answers on a T4/V100: True, through emulation
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(
            name=name, major=capability[0], minor=capability[1], total_memory=gib * 2**30))
    return install


@pytest.mark.parametrize("gpu, hf_dtype, unsloth_dtype", [
    ("v100", torch.float32, torch.float16),   # no native bf16; Gemma overflows fp16 without Unsloth's upcasts
    ("t4", torch.float32, torch.float16),
    ("a100", torch.bfloat16, torch.bfloat16),
    ("h100", torch.bfloat16, torch.bfloat16),
])
def test_dtype_follows_native_bf16_not_emulation(spoof_gpu, gpu, hf_dtype, unsloth_dtype):
    spoof_gpu(gpu)
    assert torch.cuda.is_bf16_supported()  # the emulation answer that used to pick bf16 on a T4
    assert native_bf16() == (gpu in ("a100", "h100"))
    assert select_dtype("hf", True, native_bf16()) == hf_dtype
    assert select_dtype("unsloth", True, native_bf16()) == unsloth_dtype
    check_gpu_setup()  # one GPU: fine


def test_cpu_trains_in_float32():
    assert select_dtype("hf", False, False) == torch.float32 and select_dtype("unsloth", False, False) == torch.float32


@pytest.mark.parametrize("gpu", list(GPUS))
def test_plan_on_each_gpu(spoof_gpu, gpu):
    spoof_gpu(gpu)
    plan = plan_run(load_recipe("kaggle_docs"), cuda=torch.cuda.is_available(), has_unsloth=True)
    assert (plan.method, plan.backend, plan.optimizer) == ("qlora", "unsloth", "paged_adamw_32bit")
    plan = plan_run(load_recipe("kaggle_docs"), cuda=True, has_unsloth=False)
    assert plan.backend == "hf" and any("Unsloth is not installed" in n for n in plan.notes)
    with pytest.raises(UserError, match="packing=true is not supported on the Unsloth backend"):
        plan_run(load_recipe("kaggle_docs", ["train.packing=true"]), cuda=True, has_unsloth=True)
    assert plan_run(load_recipe("kaggle_docs", ["train.packing=true"]), cuda=True, has_unsloth=False).backend == "hf"


def test_unsloth_runs_on_cpu_where_it_imports():
    plan = plan_run(load_recipe("quickstart"), cuda=False, has_unsloth=True)
    assert plan.backend == "unsloth"
    assert any("without gradient checkpointing" in n for n in plan.notes)  # said, not silently ignored
    assert plan_run(load_recipe("quickstart"), cuda=False, has_unsloth=False).notes == []


def test_several_gpus_without_a_launcher_is_a_clear_error(spoof_gpu, monkeypatch):
    spoof_gpu("t4", count=2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(UserError, match="2 GPUs are visible: run with `accelerate launch"):
        check_gpu_setup()
    monkeypatch.setenv("LOCAL_RANK", "1")
    check_gpu_setup()
    assert backend.local_rank() == 1


@pytest.mark.slow  # runs every stage's entry: the full tier (make test)
def test_several_gpus_refuse_other_stages_with_one_gpu_advice_and_never_a_cpu_merge(spoof_gpu, monkeypatch, tmp_path):
    spoof_gpu("t4", count=2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(UserError, match="this stage uses one .*CUDA_VISIBLE_DEVICES=0") as refused:
        check_gpu_setup(training=False)
    assert "accelerate launch" not in str(refused.value)  # evaluate/chat/robustness are not DDP-aware
    check_gpu_setup(on_cpu=True)  # merging runs on the CPU: the GPUs it does not use are no reason to refuse
    with pytest.raises(UserError, match="this stage uses one"):  # evaluation's load goes through the same check
        load_model(str(save_tiny_model("gemma3", tmp_path / "g3")), backend="hf")
    load_model(str(tmp_path / "g3"), backend="hf", on_cpu=True)  # merge_adapter's load


def test_a_gpu_torch_cannot_use_is_an_error_not_a_cpu_run(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-0)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(UserError, match="Tesla T4.*cannot use it.*driver"):
        check_gpu_setup()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the user chose the CPU
    check_gpu_setup()


def test_unsloth_that_fails_to_import_falls_back_or_errors(tmp_path, monkeypatch):
    broken = tmp_path / "unsloth"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise NotImplementedError('Unsloth cannot find any torch accelerator? You need a GPU.')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(backend, "_unsloth_failure", [])
    chosen, notes = resolve_backend("auto")
    assert chosen == "hf" and "Unsloth failed to import (NotImplementedError: Unsloth cannot find" in notes[0]
    with pytest.raises(UserError, match="backend=unsloth: Unsloth failed to import"):
        resolve_backend("unsloth")
    assert resolve_backend("hf") == ("hf", [])


def test_unknown_or_missing_unsloth(monkeypatch):
    with pytest.raises(UserError, match="unknown backend 'fast'; valid: auto, unsloth, hf"):
        resolve_backend("fast")
    with pytest.raises(UserError, match="requirements-gpu.txt"):
        resolve_backend("unsloth", unsloth_imports=False)


def test_recorded_dtype_is_the_models_own(tmp_path):
    loaded = load_model(str(save_tiny_model("gemma3", tmp_path / "g3")), backend="hf")
    assert loaded.dtype == torch.float32 == model_dtype(loaded.model)
    assert model_dtype(loaded.model.to(torch.bfloat16)) == torch.bfloat16


def test_gemma2_keeps_its_attention_softcapping(tmp_path):
    """SDPA drops Gemma 2's attn_logit_softcapping; the eager path applies it."""
    loaded = load_model(str(save_tiny_model("gemma2", tmp_path / "g2")), backend="hf")
    assert loaded.model.config._attn_implementation == "eager"
    assert load_model(str(save_tiny_model("gemma3", tmp_path / "g3")), backend="hf").model.config._attn_implementation != "eager"


@pytest.mark.parametrize("family, forced", [("gemma", False), ("gemma2", False), ("gemma3", True), ("gemma4", True)])
def test_unsloth_forced_float32_is_recorded_on_fp16_only_gpus(spoof_gpu, monkeypatch, tmp_path, family, forced):
    """On a T4 Unsloth trains Gemma 3/3n/4 in float32 with AMP off (its FORCE_FLOAT32; the family table's fp16_gpu_path),
    Gemma 1/2 in fp16. The model's own stamp (_unsloth_forced_float32) wins where Unsloth sets it."""
    import sys
    import types

    import transformers

    stamp = {}
    folder = str(save_tiny_model(family, tmp_path / family))
    model, tokenizer = transformers.AutoModelForCausalLM.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)

    class FastLanguageModel:  # loaded before CUDA is spoofed: transformers would look for the GPU
        @staticmethod
        def from_pretrained(model_name, **kwargs):
            model.__dict__.pop("_unsloth_forced_float32", None)
            model.__dict__.update(stamp)
            return model, tokenizer

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    spoof_gpu("t4")
    assert load_model(folder, backend="unsloth").unsloth_forced_float32 is forced
    stamp["_unsloth_forced_float32"] = not forced
    assert load_model(folder, backend="unsloth").unsloth_forced_float32 is (not forced)
    spoof_gpu("a100")
    stamp.clear()
    assert load_model(folder, backend="unsloth").unsloth_forced_float32 is False  # native bf16: no forcing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_model(folder, backend="hf").unsloth_forced_float32 is None

"""train_qlora: the run plan, methods on tiny Gemma / Gemma 2 / Gemma 3, exports, resume and bad input."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from gemma_fast.data.pipeline import prepare
from gemma_fast.errors import UserError
from gemma_fast.testing.tiny import TINY_FAMILIES, save_tiny_model, tiny_tokenizer
from gemma_fast.recipe import load_recipe
from gemma_fast.training.run import Exports, plan_run, train
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # every test trains a tiny model: the full tier (make test)



@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Prepared quickstart splits (48 records) for the tiny models."""
    out = tmp_path_factory.mktemp("data")
    prepare(load_recipe("quickstart", ["data.max_records=48", "train.max_seq_length=256"]), out, tiny_tokenizer())
    return out


def recipe(model_dir, data_dir, *overrides):
    return load_recipe("quickstart", [f"model={model_dir}", f"data.dir={data_dir}", "train.max_steps=3", "train.batch_size=4",
                                      "train.max_seq_length=256", "train.logging_steps=1", "lora.r=4", "lora.alpha=8", *overrides])


# ---------------------------------------------------------------- the plan


def test_plan_falls_back_on_cpu_and_says_so():
    plan = plan_run(load_recipe("kaggle_docs"), cuda=False)
    assert (plan.method, plan.backend, plan.optimizer) == ("lora", "hf", "adamw_torch")
    assert any("qlora needs a CUDA GPU" in n for n in plan.notes) and any("paged_adamw_32bit" in n for n in plan.notes)
    plan = plan_run(load_recipe("kaggle_docs"), cuda=True, has_unsloth=True)
    assert (plan.method, plan.backend, plan.optimizer, plan.notes) == ("qlora", "unsloth", "paged_adamw_32bit", [])
    plan = plan_run(load_recipe("quickstart", ["train.method=prefix"]), cuda=True, has_unsloth=True)
    assert plan.backend == "hf" and "not Unsloth" in plan.notes[0]


@pytest.mark.parametrize("overrides, message", [
    (["train.method=prefix", "train.gradient_checkpointing=true"], "does not work with train.gradient_checkpointing"),
    (["train.method=prefix", "train.packing=true"], "does not work with train.packing"),
    (["train.method=prefix", "backend=unsloth"], "runs on the hf backend"),
    (["train.early_stopping_patience=2"], "needs train.eval_steps > 0"),
])
def test_unsupported_combinations_are_refused_before_any_work(overrides, message):
    with pytest.raises(UserError, match=message):  # at load (Recipe.check), before plan_run ever sees them
        plan_run(load_recipe("quickstart", overrides), cuda=True, has_unsloth=True)


def test_dora_is_refused_on_unsloth():
    with pytest.raises(UserError, match="use_dora=true runs on the hf backend"):
        plan_run(load_recipe("quickstart", ["lora.use_dora=true"]), cuda=True, has_unsloth=True)


def test_sft_args_map_the_recipe_onto_trl(tmp_path):
    from gemma_fast.training.run import Plan, sft_args

    recipe = load_recipe("quickstart", ["train.warmup_ratio=0.1", "train.eval_steps=5", "train.early_stopping_patience=2",
                                        "train.gradient_checkpointing=true", "train.max_seq_length=384"])
    plan = Plan("lora", "hf", "adamw_torch")
    args = sft_args(recipe, plan, torch.float32, tmp_path, has_eval=True, cuda=False, cpu_amp="bf16-autocast",
                    padding_free=True, backend="hf")
    assert args["warmup_steps"] == 0.1  # transformers 5: a float below 1 is a share of the steps
    assert args["bf16"] and not args["fp16"] and args["use_cpu"]  # bf16 autocast on a CPU with native bf16
    assert args["save_steps"] == 5 and args["load_best_model_at_end"]  # early stopping needs the best model on disk
    assert args["padding_free"] and args["max_length"] is None  # rows are cut at encode time; TRL refuses both
    assert args["gradient_checkpointing"] and args["completion_only_loss"]
    padded = sft_args(recipe, Plan("lora", "unsloth", "adamw_8bit"), torch.float16, tmp_path, has_eval=False, cuda=True,
                      cpu_amp=None, padding_free=False, backend="unsloth")
    assert padded["max_length"] == 384 and padded["fp16"] and not padded["gradient_checkpointing"]  # Unsloth's own
    assert padded["eval_strategy"] == "no" and padded["optim"] == "adamw_8bit"


def test_lora_stays_float32_after_trl_builds_the_trainer(tmp_path, tiny_data, tiny_model_dir):
    """TRL recasts the trainable weights of a model it sees as quantized (`is_loaded_in_4bit`, spoofed here: bitsandbytes
    needs CUDA) to bf16 in SFTTrainer.__init__; make_trainer puts them back to float32, the dtype the run reports."""
    from trl import SFTConfig

    from gemma_fast.training.loss import answer_only_trainer
    from gemma_fast.models.loader import load_model
    from gemma_fast.training.run import Plan, attach_adapter, make_trainer, sft_args, tokenize_split

    r = recipe(tiny_model_dir, tiny_data)
    loaded = load_model(str(tiny_model_dir), backend="hf")
    loaded.model.is_loaded_in_4bit = True  # what a bitsandbytes 4-bit load sets, and what TRL checks
    model = attach_adapter(loaded, r, "lora")
    records = [{"instruction": "What is gemma?", "input": "", "output": "A model."}] * 4
    args = SFTConfig(**sft_args(r, Plan("lora", "hf", "adamw_torch"), torch.float32, tmp_path, has_eval=False, cuda=False,
                                cpu_amp=None, padding_free=False, backend="hf"))
    kwargs = dict(model=model, args=args, train_dataset=tokenize_split(loaded.prompts, records, 256), processing_class=loaded.tokenizer)
    trainable = lambda m: {p.dtype for p in m.parameters() if p.requires_grad}  # noqa: E731
    assert trainable(answer_only_trainer()(**kwargs).model) == {torch.bfloat16}  # TRL's recast, which the spoof triggers
    assert trainable(make_trainer(answer_only_trainer(), "hf", **kwargs).model) == {torch.float32}


# ---------------------------------------------------------------- methods on the tiny families


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_methods_train_on_every_tiny_family(tmp_path, tiny_data, family, method):
    model_dir = save_tiny_model(family, tmp_path / family)
    summary = train(recipe(model_dir, tiny_data, f"train.method={method}", "train.lr=1e-2"), tmp_path / "run")
    assert summary["method"] == method and summary["steps"] == 3
    adapter = tmp_path / "run" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == ("LORA" if method == "lora" else "PREFIX_TUNING")
    from safetensors.torch import load_file

    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    if method == "lora":  # B starts at zero: training must have moved it
        assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)


def test_rslora_dora_packing_early_stopping_and_eval(tmp_path, tiny_data, tiny_model_dir):
    r = recipe(tiny_model_dir, tiny_data, "lora.use_rslora=true", "lora.use_dora=true", "train.packing=true",
               "train.max_steps=6", "train.eval_steps=2", "train.early_stopping_patience=1", "train.lr=1e-3")
    summary = train(r, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["use_rslora"] is True and config["use_dora"] is True
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if "eval_loss" in r][:1] == [2]
    assert summary["best_eval_loss"] == min(r["eval_loss"] for r in rows if "eval_loss" in r)
    assert all({"loss", "grad_norm", "learning_rate", "tokens_per_s", "peak_memory_mb"} <= set(r) for r in rows if "loss" in r)


def test_qlora_on_cpu_trains_lora_and_the_saved_recipe_says_so(tmp_path, tiny_data, tiny_model_dir):
    summary = train(recipe(tiny_model_dir, tiny_data, "train.method=qlora", "train.optimizer=paged_adamw_8bit"), tmp_path / "run")
    assert summary["method"] == "lora" and summary["dtype"] == "float32" and summary["optimizer"] == "adamw_torch"
    text = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "# note: train.method=qlora needs a CUDA GPU" in text
    assert yaml.safe_load(text)["train"]["method"] == "lora"


def test_merge_gives_the_same_logits_as_base_plus_adapter(tmp_path, tiny_data, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    summary = train(recipe(tiny_model_dir, tiny_data, "train.lr=1e-2"), tmp_path / "run", exports=Exports(merge=True))
    merged = AutoModelForCausalLM.from_pretrained(summary["exports"]["merged"])
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "run" / "adapter")
    ids = torch.tensor([[2, 10, 20, 30, 40]])
    assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-5)

    from pathlib import Path

    from gemma_fast.evaluation.run import evaluate

    r = recipe(tiny_model_dir, tiny_data, "eval.max_examples=4", "eval.max_new_tokens=4")
    by_merged = evaluate(r, tmp_path / "eval_merged", merged=Path(summary["exports"]["merged"]), compare_base=True)
    by_adapter = evaluate(r, tmp_path / "eval_adapter", adapter=tmp_path / "run", compare_base=True)
    assert set(by_merged["models"]) == {"base", "fine-tuned"}
    for name in ("base", "fine-tuned"):
        a, b = (x["models"][name]["overall"]["answer_loss"]["mean"] for x in (by_merged, by_adapter))
        assert abs(a - b) < 1e-4


def test_export_checks_fail_before_training(tmp_path, tiny_data, tiny_model_dir, monkeypatch):
    with pytest.raises(UserError, match="'q5_k' is not one of f16, bf16, q8_0, q4_k_m"):  # GGUF itself: test_export.py
        train(recipe(tiny_model_dir, tiny_data), tmp_path / "a", exports=Exports(gguf="q5_k"))
    with pytest.raises(UserError, match="prefix-tuning adapter has no weights to merge"):
        train(recipe(tiny_model_dir, tiny_data, "train.method=prefix"), tmp_path / "b", exports=Exports(merge=True))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login either
    with pytest.raises(UserError, match="--push-to-hub needs a Hugging Face token"):
        train(recipe(tiny_model_dir, tiny_data), tmp_path / "c", exports=Exports(push_to_hub="me/adapter"))
    assert not any((tmp_path / d).exists() for d in "abc")


def test_push_to_hub_never_prints_or_saves_the_token(tmp_path, tiny_data, tiny_model_dir):
    secret = "hf_SECRETtoken1234567890"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(tiny_model_dir, tiny_data).to_dict()))
    result = run_train(tmp_path, "--recipe", str(tmp_path / "r.yaml"), "--out", "run", "--push-to-hub", "me/adapter",
                       env={"HF_TOKEN": secret, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "--push-to-hub me/adapter failed" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert not any(secret in p.read_text(errors="ignore") for p in (tmp_path / "run").rglob("*") if p.is_file() and p.stat().st_size < 10**7)


# ---------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error_and_overwrites_nothing(tmp_path, tiny_data, tiny_model_dir):
    with pytest.raises(UserError, match="lora.target_modules=\\['nope_proj'\\]"):
        train(recipe(tiny_model_dir, tiny_data, "lora.target_modules=nope_proj"), tmp_path / "t")
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("train", "val", "test"):
        (empty / f"{name}.jsonl").write_text("")
    with pytest.raises(UserError, match="train.jsonl is empty: no training data"):
        train(recipe(tiny_model_dir, empty), tmp_path / "e")
    with pytest.raises(UserError, match="run scripts/prepare_data.py"):
        train(recipe(tiny_model_dir, tmp_path / "nowhere"), tmp_path / "n")
    with pytest.raises(UserError, match="the prompt alone is"):
        train(recipe(tiny_model_dir, tiny_data, "train.max_seq_length=8"), tmp_path / "s")
    with pytest.raises(UserError, match="train.eval_steps=2 but .*val.jsonl is empty"):
        no_val = tmp_path / "no_val"
        no_val.mkdir()
        (no_val / "train.jsonl").write_text((tiny_data / "train.jsonl").read_text())
        (no_val / "val.jsonl").write_text("")
        train(recipe(tiny_model_dir, no_val, "train.eval_steps=2"), tmp_path / "v")
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(UserError, match="needs the tensorboard package"):
            train(recipe(tiny_model_dir, tiny_data, "train.tensorboard=true"), tmp_path / "tb")
        assert not (tmp_path / "tb").exists()

    train(recipe(tiny_model_dir, tiny_data), tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="already holds files: --resume continues a run, --overwrite replaces it"):
        train(recipe(tiny_model_dir, tiny_data), tmp_path / "run")
    with pytest.raises(UserError, match="was trained on model .*nothing was changed"):
        train(recipe(tmp_path / "other", tiny_data), tmp_path / "run", resume=True)
    with pytest.raises(UserError, match="no checkpoint in"):
        train(recipe(tiny_model_dir, tiny_data), tmp_path / "run", resume=True)
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- interruption and resume


def run_train(cwd, *args, env=None, wait=True):
    cmd = [sys.executable, str(ROOT / "scripts" / "train_qlora.py"), *args]
    kwargs = dict(cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return subprocess.Popen(cmd, **kwargs)
    return subprocess.run(cmd, timeout=600, **kwargs)


def wait_for(path, proc):
    """Block until `path` exists (a checkpoint the run wrote), or fail if the run ends first."""
    import select

    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        select.select([], [], [], 0.05)


def adapter_tensors(run):
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


@pytest.fixture
def resumable(tmp_path, tiny_data, tiny_model_dir):
    r = recipe(tiny_model_dir, tiny_data, "train.max_steps=12", "train.save_steps=2", "train.batch_size=2", "lora.dropout=0.0")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r.to_dict()))
    return tmp_path


@pytest.mark.slow  # real processes and signals
def test_sigkill_then_resume_matches_an_uninterrupted_run(resumable):
    """Tolerance: 1e-5 absolute on every adapter weight (CPU float32; identical data order and RNG state)."""
    straight = run_train(resumable, "--recipe", "r.yaml", "--out", "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    proc = run_train(resumable, "--recipe", "r.yaml", "--out", "killed", wait=False)
    wait_for(resumable / "killed" / "checkpoints" / "checkpoint-4" / "trainer_state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumable / "killed" / "adapter").exists()
    resumed = run_train(resumable, "--recipe", "r.yaml", "--out", "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((resumable / "killed" / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith(("checkpoint-4", "checkpoint-6", "checkpoint-8", "checkpoint-10"))
    a, b = adapter_tensors(resumable / "straight"), adapter_tensors(resumable / "killed")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow  # real processes and signals
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(resumable):
    proc = run_train(resumable, "--recipe", "r.yaml", "--out", "run", "--set", "train.save_steps=0", wait=False)
    wait_for(resumable / "run" / "metrics.jsonl", proc)  # training has started
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "checkpoint saved in" in stderr and "continue with --resume" in stderr and "Traceback" not in stderr
    assert list((resumable / "run" / "checkpoints").glob("checkpoint-*"))
    resumed = run_train(resumable, "--recipe", "r.yaml", "--out", "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((resumable / "run" / "train_summary.json").read_text())["steps"] == 12


# ---------------------------------------------------------------- scale-out


@pytest.mark.slow  # real processes and signals
def test_ddp_with_two_cpu_processes(resumable):
    # no --cpu: with it accelerate launch starts ONE process (simple_launcher); without a GPU, two ranks run on gloo
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no"]
    result = subprocess.run([*accelerate, str(ROOT / "scripts" / "train_qlora.py"), "--recipe", "r.yaml", "--out", "ddp",
                             "--set", "train.max_steps=4", "--set", "train.save_steps=0"],
                            cwd=resumable, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((resumable / "ddp" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["processes"] == 2 and summary["distributed"] == "MULTI_CPU"
    # the first-batch guard takes the loss's ×num_processes (average_tokens_across_devices) back out
    assert summary["guards"]["first_batch"]["difference"] < 1e-3
    assert (resumable / "ddp" / "adapter" / "adapter_model.safetensors").is_file()

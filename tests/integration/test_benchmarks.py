"""The benchmark scripts run (on small sizes), so they cannot rot; their figures live in docs/benchmarks.md."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_prepare_benchmark_runs_and_reports(tmp_path):
    result = subprocess.run([sys.executable, "bench/prepare_throughput.py", "--records", "300"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "prepare_throughput.json").read_text())
    assert report["records"] == 300 and report["records_per_s"] > 0
    assert sum(report["kept"].values()) + sum(report["dropped"].values()) == 300


def test_eval_throughput_benchmark_runs_and_reports(tiny_model_dir):
    result = subprocess.run([sys.executable, "bench/eval_throughput.py", "--prompts", "4", "--batch-sizes", "1,4",
                             "--max-new-tokens", "4", "--model", str(tiny_model_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "eval_throughput.json").read_text())
    assert [r["batch_size"] for r in report["results"]] == [1, 4] and report["results"][0]["speedup_vs_batch_1"] == 1.0
    for r in report["results"]:
        assert r["warmup_tokens"] == r["batch_size"] * 4  # a full batch at the full length before the timing
        assert 4 <= r["answer_tokens"] <= 4 * 4


def test_generated_tokens_are_counted_up_to_the_first_stop_token():
    import torch

    from bench.eval_throughput import count_new_tokens

    eos, end_of_turn, pad = 1, 5, 0
    new_ids = torch.tensor([[7, 8, end_of_turn, pad, pad],  # stop, then padding
                            [7, 8, 9, 10, 11],              # ran to max_new_tokens
                            [eos, pad, pad, pad, pad],      # stopped at once
                            [7, eos, eos, eos, eos]])       # pad == eos: only the first counts
    assert count_new_tokens(new_ids, [eos, end_of_turn]) == 3 + 5 + 1 + 2


def test_train_throughput_runs_each_path_in_its_own_process():
    result = subprocess.run([sys.executable, "bench/train_throughput.py", "--tiny", "--steps", "2", "--paths", "plain,plain"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "train_throughput.json").read_text())
    first, second = report["results"]
    assert report["arch"] == "tiny-gemma3" and first["path"] == "plain" and first["tokens_per_s"] > 0
    assert first["pid"] != second["pid"]
    assert report["first_loss_rel_diff"] == 0.0  # float32 on the CPU, no autocast: the same batches give the same loss
    assert first["autocast"] == "none (float32)" and first["flops_per_token"] == 4 * first["dense_params"]


def test_unsloth_path_refuses_a_process_that_already_imported_transformers():
    import transformers  # noqa: F401

    from bench.train_throughput import import_unsloth_first

    with pytest.raises(RuntimeError, match="unsloth must be imported before transformers"):
        import_unsloth_first()


def test_dense_params_count_the_dense_model_through_lora_and_4bit_packing():
    """MFU's N is the dense model's parameter count: LoRA left out, the tied head once, and a bitsandbytes-style
    packed 4-bit weight (an nn.Linear whose weight holds two values per byte) at its unpacked size."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from bench.train_throughput import TARGETS, dense_params
    from gemma_fast.testing import tiny_config

    model = AutoModelForCausalLM.from_config(tiny_config("gemma3", vocab_size=512))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    true_count = sum(p.numel() for p in model.parameters())  # parameters() yields the tied weight once
    assert dense_params(model) == true_count
    model = get_peft_model(model, LoraConfig(r=4, target_modules=TARGETS, task_type="CAUSAL_LM"))
    for name, module in model.named_modules():
        if name.endswith("base_layer"):
            packed = torch.zeros((module.weight.numel() + 1) // 2, 1, dtype=torch.uint8)
            module.weight = torch.nn.Parameter(packed, requires_grad=False)
    assert dense_params(model) == true_count

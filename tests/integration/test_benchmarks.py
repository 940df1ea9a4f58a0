"""The benchmark scripts run (on small sizes), so they cannot rot; their figures live in docs/benchmarks.md."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_prepare_benchmark_runs_and_reports(tmp_path):
    result = subprocess.run([sys.executable, "bench/prepare_throughput.py", "--records", "300"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "prepare_throughput.json").read_text())
    assert report["records"] == 300 and report["records_per_s"] > 0
    assert sum(report["kept"].values()) + sum(report["dropped"].values()) == 300


def test_eval_throughput_benchmark_runs_and_reports():
    result = subprocess.run([sys.executable, "bench/eval_throughput.py", "--prompts", "4", "--batch-sizes", "1,4",
                             "--max-new-tokens", "4"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "eval_throughput.json").read_text())
    assert [r["batch_size"] for r in report["results"]] == [1, 4] and report["results"][0]["speedup_vs_batch_1"] == 1.0


def test_train_throughput_cpu_mode_runs_and_reports():
    result = subprocess.run([sys.executable, "bench/train_throughput.py", "--tiny", "--steps", "3"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "train_throughput.json").read_text())
    (plain,) = report["results"]
    assert report["arch"] == "tiny-gemma3" and plain["path"] == "plain" and plain["tokens_per_s"] > 0
    assert plain["flops_per_token"] == 4 * plain["matmul_params"]


def test_shipped_architectures_have_their_public_sizes():
    """Parameter counts of the shipped configs, built on the meta device (no memory): the published model sizes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    expected_billions = {"gemma-2b": 2.51, "gemma-7b": 8.54, "gemma-2-2b": 2.61, "gemma-2-9b": 9.24}
    for arch, billions in expected_billions.items():
        raw = json.loads((ROOT / "bench" / "configs" / f"{arch}.json").read_text())
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(raw.pop("model_type"), **raw))
        assert abs(sum(p.numel() for p in model.parameters()) / 1e9 - billions) < 0.02, arch

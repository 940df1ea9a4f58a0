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
    from gemma_fast.testing.tiny import tiny_config

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


def test_eval_benchmark_runs_on_a_random_weight_folder_with_a_stand_in_tokenizer(tmp_path):
    """What a GPU machine without internet has: train_throughput's random-weight model, whose stand-in tokenizer is
    smaller than its vocabulary. Ids the tokenizer cannot spell decode to nothing; tokens are counted from the ids."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from gemma_fast.families import FAMILIES
    from gemma_fast.testing.tiny import tiny_tokenizer

    raw = {k: v for k, v in FAMILIES["gemma"].tiny.items() if k != "config"}
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("gemma", vocab_size=4096, **raw)).save_pretrained(tmp_path / "random")
    tiny_tokenizer("gemma3").save_pretrained(tmp_path / "random")  # 512 tokens for a 4096-token model, as in the bench
    result = subprocess.run([sys.executable, "bench/eval_throughput.py", "--prompts", "3", "--batch-sizes", "3",
                             "--max-new-tokens", "5", "--model", str(tmp_path / "random"), "--backend", "hf"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "eval_throughput.json").read_text())
    assert report["results"][0]["answer_tokens"] >= 3 and report["backend"] == "hf" and report["load_in_4bit"] is False
    assert report["versions"]["torch"] == torch.__version__ and "unsloth" in report["versions"]  # None where absent


def test_shared_data_is_looked_up_inside_the_repository_first(tmp_path, monkeypatch):
    from bench import common

    repo = tmp_path / "repo"
    monkeypatch.setattr(common, "ROOT", repo)
    beside = tmp_path / "shared" / "data" / "x.json"
    beside.parent.mkdir(parents=True)
    beside.write_text("[]")
    assert common.shared_file("data", "x.json") == beside  # a developer's checkout: shared/ beside the repository
    inside = repo / "shared" / "data" / "x.json"
    inside.parent.mkdir(parents=True)
    inside.write_text("[]")
    assert common.shared_file("data", "x.json") == inside  # a device call carries shared/ inside it


def _fake_site(path, names):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as archive:
        for name in names:
            info = tarfile.TarInfo(f"./{name}/__init__.py")
            archive.addfile(info, io.BytesIO(b""))
    return path


def test_gpu_smoke_dry_run_checks_the_staged_site_and_prints_the_plan(tmp_path):
    """bench/gpu_smoke.sh --dry-run on a CPU machine: the staged site must hold what the steps import; the plan lists
    every step with its time limit. A fake tarball stands in for the staged one (staging needs PyPI)."""
    from bench.gpu_smoke import STAGED

    def dry(site):
        return subprocess.run(["bash", "bench/gpu_smoke.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env={**__import__("os").environ, "SMOKE_SITE": str(site), "SMOKE_WORK": str(tmp_path / "w")})

    done = dry(_fake_site(tmp_path / "site.tar.gz", STAGED))
    assert done.returncode == 0, done.stderr
    for step in ("import_unsloth", "gemma1", "prepare", "train_qlora", "evaluate_32", "gemma4_step", "eval_peak_7b"):
        assert f"  {step}" in done.stdout
    assert "train.method=qlora --set train.max_steps=10" in done.stdout and "budget: 470 s" in done.stdout
    assert not (tmp_path / "w").exists()  # a dry run loads and writes nothing
    missing = dry(_fake_site(tmp_path / "thin.tar.gz", [n for n in STAGED if n != "peft"]))
    assert missing.returncode == 1 and "lacks peft" in missing.stderr
    absent = dry(tmp_path / "none.tar.gz")
    assert absent.returncode == 1 and "run bench/stage_gpu_site.sh" in absent.stderr

"""The five scripts as a user runs them: a tiny-model pipeline end to end, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, run_script

pytestmark = pytest.mark.slow  # the stages end to end on the session's tiny world: the full tier (make test)


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_world):
    """prepare -> train -> evaluate on a tiny random Gemma 3 through the real CLIs: the session's tiny world."""
    return tiny_world


def test_prepare_writes_splits_and_report(tiny_pipeline):
    data = tiny_pipeline / "data" / "tiny"
    report = json.loads((data / "prep_report.json").read_text())
    assert report["kept"] == {"train": 17, "val": 2, "test": 5}
    assert report["records_in"] == 264 and sum(report["dropped"].values()) == 264 - 24
    assert set(report["dropped"]) <= {"subset", "too_long"}
    assert sum(1 for _ in (data / "train.jsonl").open()) == 17


def test_train_writes_adapter_metrics_plot_and_recipe(tiny_pipeline):
    run = tiny_pipeline / "runs" / "r1"
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert all(r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows)
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["method"] == "lora" and summary["dtype"] == "float32"
    assert yaml.safe_load((run / "recipe.yaml").read_text())["lora"]["r"] == 4


def test_evaluate_compares_base_and_fine_tuned(tiny_pipeline):
    out = tiny_pipeline / "eval_r1"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == 3 and set(metrics["models"]) == {"base", "fine-tuned"}
    for model in metrics["models"].values():
        overall = model["overall"]
        assert overall["perplexity"]["mean"] == pytest.approx(2.718281828 ** overall["answer_loss"]["mean"], rel=1e-6)
        assert 0.0 <= overall["rougeL"]["mean"] <= 1.0
        assert overall["rougeL"]["ci_low"] <= overall["rougeL"]["mean"] <= overall["rougeL"]["ci_high"]
        assert set(model["by_lang"]) == {"en"}
    # LoRA's B matrices start at zero, so two steps must have moved the loss away from the base model's
    assert metrics["models"]["base"]["overall"]["answer_loss"] != metrics["models"]["fine-tuned"]["overall"]["answer_loss"]
    assert metrics["comparison"]["rougeL"]["n"] == 3
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert len(rows) == 3 and all({"base", "fine-tuned"} <= set(r) for r in rows)
    assert {"prediction", "rougeL", "bleu", "meteor", "bertscore_f1", "answer_loss"} <= set(rows[0]["fine-tuned"])
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| rougeL |" in report and "Where fine-tuning helped most" in report


def test_adapter_from_another_base_model_is_refused(tiny_pipeline):
    result = run_script("evaluate", "--recipe", "tiny.yaml", "--set", "model=embedded:gemma-3-270m",
                        "--adapter", "runs/r1", "--out", "elsewhere", cwd=tiny_pipeline)
    assert result.returncode == 2
    assert "was trained on model" in result.stderr and "Traceback" not in result.stderr
    assert not (tiny_pipeline / "elsewhere").exists()


@pytest.mark.parametrize("script, args, message", [
    ("train_qlora", ["--recipe", "nope"], "unknown recipe 'nope'; valid: "),
    ("prepare_data", ["--recipe", "missing.yaml"], "recipe file not found: missing.yaml"),
    ("prepare_data", ["--recipe", "quickstart", "--set", "data.source=/no/file.jsonl"], "data source not found: /no/file.jsonl"),
    ("train_qlora", ["--recipe", "quickstart", "--set", "train.batchsize=2"], "unknown key 'train.batchsize'; valid: train.method"),
    ("train_qlora", ["--recipe", "quickstart", "--set", "train.epochs=many"], "'train.epochs' must be float, got 'many'"),
    ("evaluate", ["--recipe", "tiny.yaml", "--set", "model=./no/such/model", "--out", "e1"], "model './no/such/model' not found"),
    ("evaluate", ["--recipe", "tiny.yaml", "--adapter", "no_run", "--out", "e2"], "no adapter found at no_run"),
    ("build_rag", ["--recipe", "quickstart"], "rag: the corpus is empty"),
    ("robustness", ["--recipe", "quickstart", "--perturb", "typos:2"], "rate 2.0 is outside [0, 1]"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, request, script, args, message):
    # evaluation needs prepared data before it looks at the model: the tiny world has it
    cwd = request.getfixturevalue("tiny_pipeline") if script == "evaluate" else tmp_path
    result = run_script(script, *args, cwd=cwd)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_every_script_explains_itself():
    for script in ("prepare_data", "build_rag", "train_qlora", "evaluate", "robustness", "export"):
        result = run_script(script, "--help", cwd=ROOT)
        assert result.returncode == 0 and "--recipe" in result.stdout and "--set" in result.stdout



@pytest.mark.slow  # the entry point, in real processes
def test_one_command_for_every_stage_and_scripts_are_shims():
    """`gemma-fast <stage>` runs the same code as scripts/<stage>.py; the scripts edit no sys.path."""
    listing = subprocess.run([sys.executable, "-m", "gemma_fast.cli.main", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert listing.returncode == 0
    for stage in ("prepare", "rag", "train", "evaluate", "robustness", "export"):
        assert f"  {stage} " in listing.stdout
    train = subprocess.run([sys.executable, "-m", "gemma_fast.cli.main", "train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert train.returncode == 0 and "--resume" in train.stdout and "gemma-fast train" in train.stdout
    unknown = subprocess.run([sys.executable, "-m", "gemma_fast.cli.main", "trian"], capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2 and "unknown stage 'trian'" in unknown.stderr
    for script in (ROOT / "scripts").glob("*.py"):
        assert "sys.path" not in script.read_text() and len(script.read_text().splitlines()) < 10, script


def test_env_prints_every_library_and_the_gpu_view():
    from gemma_fast.cli.env import LIBRARIES, environment

    env = environment()
    assert set(env["libraries"]) == set(LIBRARIES) and env["libraries"]["torch"].startswith("2.13.0")
    assert env["libraries"]["transformers"] and "cuda_available" in env["cuda"] and env["python"].startswith("3.")

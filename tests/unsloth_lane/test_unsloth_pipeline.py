"""The quickstart pipeline on backend=unsloth through Unsloth's CPU backend, against requirements-gpu.txt's pins."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys

from tests.unsloth_lane.conftest import BANNER, EVAL_SETS, ROOT, Step, losses, sets, tail

sys.path.insert(0, str(ROOT / "tools"))
from gpu_pins import CORE, CUDA_ONLY, GPU, read_pins  # noqa: E402


def test_lane_venv_holds_the_gpu_files_python_pins():
    gpu, core = read_pins(GPU), read_pins(CORE)
    for key in ("transformers", "trl", "unsloth", "unsloth-zoo"):
        assert importlib.metadata.version(key) == gpu[key][1], f"{key}: the lane must run requirements-gpu.txt's pin"
    assert importlib.metadata.version("torch").split("+")[0] == core["torch"][1] == gpu["torch"][1]
    for key in ("peft", "datasets", "accelerate"):
        assert importlib.metadata.version(key) == core[key][1]
    present = [name for name in CUDA_ONLY if importlib.util.find_spec(name.replace("-", "_")) is not None]
    assert not present, f"CUDA-only packages in the CPU lane (torchvision breaks transformers here): {present}"


def test_embedded_model_is_converted_under_the_lane_transformers(converted_model):
    import transformers

    config = json.loads((converted_model / "config.json").read_text())
    assert config["transformers_version"] == transformers.__version__ == read_pins(GPU)["transformers"][1]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted_model)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("<start_of_turn>user\nHi<end_of_turn>")["input_ids"])
    assert tokens[:4] == ["<bos>", "<start_of_turn>", "user", "\n"] and "<end_of_turn>" in tokens, tokens


def test_prepare_writes_the_splits(prepared):
    report = json.loads((prepared / "prep_report.json").read_text())
    assert all((prepared / f"{split}.jsonl").is_file() for split in ("train", "val", "test"))
    assert report["records_in"] > 0


def test_unsloth_backend_trains_on_cpu_and_merges(unsloth_run):
    step, out, _ = unsloth_run
    step.check()
    assert BANNER in step.output, f"Unsloth's CPU banner missing from the log:\n{tail(step.output)}"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["backend"] == "unsloth" and summary["steps"] == 4
    assert summary["dtype"] in ("float32", "torch.float32")  # UNSLOTH_CPU_BF16=0: the model's actual dtype
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "merged" / "config.json").is_file() and list((out / "merged").glob("*.safetensors"))
    assert "exporting in a fresh process" in step.output  # the merge never runs beside Unsloth's patched classes


def test_unsloth_is_imported_before_transformers_peft_and_trl(unsloth_run):
    step, _, order_file = unsloth_run
    order = order_file.read_text().split() if order_file.is_file() else []
    assert "unsloth" in order, f"the Unsloth run never imported unsloth; first imports: {order[:40]}"
    first = {name: order.index(name) for name in ("unsloth", "transformers", "peft", "trl") if name in order}
    early = [name for name in ("transformers", "peft", "trl") if first.get(name, len(order)) < first["unsloth"]]
    assert not early, (f"{early} imported before unsloth (Unsloth then cannot patch them); first imports: "
                       f"{order[:first['unsloth'] + 1]}")
    assert "Unsloth should be imported before" not in step.output


def test_unsloth_losses_equal_the_hf_backend(unsloth_run, hf_run):
    (unsloth_step, unsloth_out, _), (hf_step, hf_out) = unsloth_run, hf_run
    unsloth_step.check()
    hf_step.check()
    assert json.loads((hf_out / "train_summary.json").read_text())["backend"] == "hf"
    ours, theirs = losses(unsloth_out), losses(hf_out)
    assert len(ours) == len(theirs) == 4, (ours, theirs)
    diffs = [abs(a - b) for a, b in zip(ours, theirs)]
    assert max(diffs) <= 1e-5, f"float32 losses differ: unsloth {ours} vs hf {theirs} (max diff {max(diffs):.2e})"


def test_evaluate_on_a_few_examples(unsloth_run, lane_env, workdir):
    _, out, _ = unsloth_run
    step = Step("evaluate", [sys.executable, "scripts/evaluate.py", "--recipe", "quickstart", "--adapter", str(out),
                             *sets(EVAL_SETS)], workdir, lane_env, workdir / "logs").check()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["examples"] == 4, tail(step.output)
    assert BANNER in step.output, "backend=auto should evaluate on Unsloth wherever it imports"
    assert "Unsloth should be imported before" not in step.output, tail(step.output)
    assert (out / "eval" / "predictions.jsonl").is_file() and (out / "eval" / "report.md").is_file()


TRL_PINNED_HF_RUN = """
import json, sys
from pathlib import Path
from gemma_fast.data.pipeline import prepare
from gemma_fast.recipe import load_recipe
from gemma_fast.testing.tiny import save_tiny_model, tiny_tokenizer
from gemma_fast.training.run import train
work = Path(sys.argv[1])
save_tiny_model("gemma3", work / "tiny")
recipe = load_recipe("quickstart", [f"model={work / 'tiny'}", "backend=hf", "data.max_records=40", "train.max_seq_length=256",
                                    "train.max_steps=3", "train.batch_size=4", "train.logging_steps=1"])
prepare(recipe, work / "data", tiny_tokenizer())
print(json.dumps(train(recipe, work / "run")))
"""


def test_padding_free_batches_run_on_the_gpu_files_transformers_and_trl(lane_env, tmp_path):
    """backend=hf on a GPU without Unsloth uses padding-free rows with per-example attention; the GPU pins
    (transformers 5.17, TRL 1.15: no cu_seq_lens from its collator) run it too."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", TRL_PINNED_HF_RUN, str(tmp_path)], env=lane_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, tail(done.stderr)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["batches"] == "padding-free, attention per example" and summary["steps"] == 3
    assert "Flash Attention variant" not in done.stderr  # TRL 1.15's warning does not apply to this kernel

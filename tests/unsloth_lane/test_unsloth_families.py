"""Gemma 4 (E-style) and Gemma 3n on backend=unsloth through Unsloth's CPU backend, with requirements-gpu.txt's pins:
prepare -> train (LoRA, --merge, --gguf q8_0 with its round trip) -> evaluate -> robustness -> chat, each step a
subprocess as a user runs it; and a multimodal Gemma 4 checkpoint loaded text-only through Unsloth's loader."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.unsloth_lane.conftest import BANNER, ROOT, Step, tail

STEPS = (("prepare", ["scripts/prepare_data.py", "--recipe", "tiny.yaml"]),
         ("train", ["scripts/train_qlora.py", "--recipe", "tiny.yaml", "--out", "run", "--merge", "--gguf", "q8_0", "--roundtrip", "2"]),
         ("evaluate", ["scripts/evaluate.py", "--recipe", "tiny.yaml", "--adapter", "run", "--compare", "base"]),
         ("robustness", ["scripts/robustness.py", "--recipe", "tiny.yaml", "--adapter", "run", "--perturb", "casing"]),
         ("chat", ["scripts/chat.py", "--adapter", "run", "--max-new-tokens", "8", "--prompt", "How do I resume training?"]))


@pytest.fixture(scope="module", params=["gemma4", "gemma3n"])
def family_run(request, lane_env, tmp_path_factory):
    family = request.param
    work = tmp_path_factory.mktemp(f"lane_{family}")
    (work / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    build = f"from gemma_fast.testing.tiny_spm import save_tiny_spm_model; save_tiny_spm_model({family!r}, {str(work / 'model')!r})"
    Step("build", [sys.executable, "-c", build], work, lane_env, work / "logs").check()
    (work / "tiny.yaml").write_text(yaml.safe_dump({
        "model": str(work / "model"), "backend": "unsloth", "seed": 3, "prompt": {"system": "Answer from the docs."},
        "data": {"source": "asset:quickstart_docs_qa.jsonl", "max_records": 24}, "lora": {"r": 4, "alpha": 8},
        "train": {"max_steps": 3, "batch_size": 4, "max_seq_length": 256, "lr": 5e-3},
        "eval": {"max_examples": 3, "max_new_tokens": 6, "batch_size": 3}}))
    steps = {name: Step(name, [sys.executable, *args], work, lane_env, work / "logs", timeout=1200) for name, args in STEPS}
    return family, work, steps


def test_every_stage_runs_on_the_unsloth_cpu_backend(family_run):
    family, work, steps = family_run
    for step in steps.values():
        step.check()
    assert BANNER in steps["train"].output, tail(steps["train"].output)
    summary = json.loads((work / "run" / "train_summary.json").read_text())
    assert summary["backend"] == "unsloth" and summary["steps"] == 3
    assert summary["guards"]["first_batch"]["checked"], summary["guards"]
    assert summary["guards"]["movement"]["moved"] > 0
    assert (work / "run" / "merged" / "config.json").is_file()
    saved = json.loads((work / "run" / "gguf" / "roundtrip.json").read_text())["q8_0"]["checks"]
    assert saved["pass"] if family == "gemma4" else saved["checked"] is False
    assert set(json.loads((work / "run" / "eval" / "metrics.json").read_text())["models"]) == {"base", "fine-tuned"}


def test_a_multimodal_gemma4_loads_text_only_through_unsloth(lane_env, tmp_path):
    code = ("import sys\n"
            "from gemma_fast.models.backend import import_unsloth\n"
            "assert import_unsloth() is None\n"
            "from gemma_fast.testing.tiny import save_tiny_multimodal\n"
            "from gemma_fast.models.loader import load_model\n"
            f"folder = save_tiny_multimodal('gemma4', {str(tmp_path / 'mm')!r})\n"
            "loaded = load_model(str(folder), 'unsloth')\n"
            "names = [n for n, _ in loaded.model.named_parameters()]\n"
            "assert loaded.backend == 'unsloth' and not [n for n in names if 'tower' in n], names[:5]\n"
            "print(type(loaded.model).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=lane_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, tail(done.stdout + done.stderr)
    assert done.stdout.strip().splitlines()[-1] == "Gemma4ForCausalLM"

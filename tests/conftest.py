"""Shared fixtures. Unit tests use tiny random Gemma models; integration tests use the embedded Gemma 3 270M."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# tests/unsloth_lane/ runs only in its own venv (.venv-unsloth, `make test-unsloth`, which sets GEMMA_FAST_LANE):
# Unsloth's patches outlive its import, and that venv holds requirements-gpu.txt's transformers/trl pins.
collect_ignore = [] if os.environ.get("GEMMA_FAST_LANE") == "unsloth" else ["unsloth_lane"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from gemma_fast.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_prompts(tiny_tokenizer):
    """The PromptFormat of the tiny Gemma 3 tokenizer (tiny_model_dir's)."""
    from gemma_fast.prompts import prompt_format
    from gemma_fast.testing import tiny_config

    return prompt_format(tiny_tokenizer, tiny_config("gemma3", len(tiny_tokenizer)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny random Gemma 3 model folder, usable as `model: <folder>` in a recipe."""
    from gemma_fast.testing import save_tiny_model

    return save_tiny_model("gemma3", tmp_path_factory.mktemp("tiny") / "gemma3")


def run_script(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one of the five CLIs as a user would, from `cwd`."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900,
    )


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe YAML into tmp_path and return its path."""
    import yaml

    def _write(data: dict, name: str = "r.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return _write

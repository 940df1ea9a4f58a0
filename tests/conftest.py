"""Shared fixtures. Unit tests use tiny random Gemma models; integration tests use the embedded Gemma 3 270M."""

import contextlib
import io
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# tests/unsloth_lane/ runs only in its own venv (.venv-unsloth, `make test-unsloth`, which sets GEMMA_FAST_LANE):
# Unsloth's patches outlive its import, and that venv holds requirements-gpu.txt's transformers/trl pins.
collect_ignore = [] if os.environ.get("GEMMA_FAST_LANE") == "unsloth" else ["unsloth_lane"]


def pytest_collection_modifyitems(config, items):
    """The tiers by folder: tests/integration (the real embedded model) is slow, tests/unsloth_lane is the lane (and
    slow); unit tests that are slow say so with @pytest.mark.slow."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if "integration" in parts or "unsloth_lane" in parts:
            item.add_marker(pytest.mark.slow)
        if "unsloth_lane" in parts:
            item.add_marker(pytest.mark.lane)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from gemma_fast.testing.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_prompts(tiny_tokenizer):
    """The PromptFormat of the tiny Gemma 3 tokenizer (tiny_model_dir's)."""
    from gemma_fast.prompts import prompt_format
    from gemma_fast.testing.tiny import tiny_config

    return prompt_format(tiny_tokenizer, tiny_config("gemma3", len(tiny_tokenizer)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny random Gemma 3 model folder, usable as `model: <folder>` in a recipe."""
    from gemma_fast.testing.tiny import save_tiny_model

    return save_tiny_model("gemma3", tmp_path_factory.mktemp("tiny") / "gemma3")


def run_script(name: str, *args: str, cwd: Path, env: dict | None = None, process: bool = False) -> subprocess.CompletedProcess:
    """Run scripts/<name>.py as a user would, from `cwd`: in this process (runpy, as `python scripts/<name>.py args`:
    no interpreter start, and the session's tiny model and trained run are shared), or with process=True in a fresh
    interpreter, where the process is the subject (signals, import order, entry points, one whole pipeline). An
    exception that escapes the script is a traceback on stderr and exit 1, as in a real process."""
    script = ROOT / "scripts" / f"{name}.py"
    if process:
        return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=900)
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_path, saved_cwd, saved_env = sys.argv, list(sys.path), os.getcwd(), dict(os.environ)
    sys.argv = [str(script), *args]
    code = 0
    try:
        os.environ.update(env or {})
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what a user would see: a traceback and exit status 1
        code = 1
        err.write("Traceback (most recent call last):\n" + traceback.format_exc())
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([str(script), *args], code, out.getvalue(), err.getvalue())


# The one prepared-and-trained tiny world, built once per test run through the real CLIs (in this process), and
# copied for each test module that uses it: a module may write into its copy without touching another's.
TINY_WORLD_RECIPE = {
    "seed": 3,
    "data": {"source": "asset:quickstart_docs_qa.jsonl", "max_records": 24},
    "lora": {"r": 4, "alpha": 8},
    "train": {"max_steps": 2, "batch_size": 4, "max_seq_length": 128, "logging_steps": 1, "save_steps": 1},
    "eval": {"max_examples": 3, "max_new_tokens": 4, "batch_size": 3},
}


@pytest.fixture(scope="session")
def tiny_data_world_master(tmp_path_factory, tiny_model_dir):
    """tiny.yaml (tiny random Gemma 3), data/tiny prepared, and other_model/ (a tiny Gemma 1: another base)."""
    import yaml

    from gemma_fast.testing.tiny import save_tiny_model

    work = tmp_path_factory.mktemp("data_world")
    (work / "tiny.yaml").write_text(yaml.safe_dump({**TINY_WORLD_RECIPE, "model": str(tiny_model_dir)}))
    step = run_script("prepare_data", "--recipe", "tiny.yaml", cwd=work)
    assert step.returncode == 0, step.stderr[-3000:]
    save_tiny_model("gemma", work / "other_model")
    return work


@pytest.fixture(scope="session")
def tiny_world_master(tiny_data_world_master, tmp_path_factory):
    """The data world plus runs/r1 trained 2 steps (checkpoint-1 and -2) and eval_r1/ (base and fine-tuned compared)."""
    import shutil

    work = Path(shutil.copytree(tiny_data_world_master, tmp_path_factory.mktemp("world") / "world", symlinks=True))
    for script, args in (("train_qlora", ["--out", "runs/r1"]),
                         ("evaluate", ["--adapter", "runs/r1", "--compare", "base", "--out", "eval_r1"])):
        step = run_script(script, "--recipe", "tiny.yaml", *args, cwd=work)
        assert step.returncode == 0, step.stderr[-3000:]
    return work


@pytest.fixture(scope="module")
def tiny_world(tiny_world_master, tmp_path_factory):
    """This module's own copy of the session's tiny world (see tiny_world_master)."""
    import shutil

    return Path(shutil.copytree(tiny_world_master, tmp_path_factory.mktemp("world_copy") / "world", symlinks=True))


@pytest.fixture(scope="module")
def tiny_data_world(tiny_data_world_master, tmp_path_factory):
    """This module's own copy of the session's prepared data world, without a trained run (fast-tier tests)."""
    import shutil

    return Path(shutil.copytree(tiny_data_world_master, tmp_path_factory.mktemp("data_copy") / "world", symlinks=True))


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe YAML into tmp_path and return its path."""
    import yaml

    def _write(data: dict, name: str = "r.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return _write

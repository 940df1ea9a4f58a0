"""The Unsloth CPU lane: the quickstart pipeline on backend=unsloth through Unsloth 2026.10.9's CPU backend.

Runs only in .venv-unsloth (`make test-unsloth`, part of `make test`): requirements.txt with requirements-gpu.txt's
Python-level pins (transformers 5.17, trl 1.15, unsloth/unsloth_zoo --no-deps), no CUDA-only package. The main lane
never collects this folder (tests/conftest.py). Every pipeline step runs as a subprocess, the way a user runs it, so
Unsloth's patches never leak into pytest itself. The Makefile sets UNSLOTH_CPU_BF16=0 (float32 on any host: bf16 auto-
detection would make the numbers depend on AMX), HF_HUB_OFFLINE=1, and a lane-only GEMMA_FAST_CACHE, so the embedded
model is converted under this lane's transformers.

The pipeline runs once per session (fixtures below) and the tests check its outputs:
  convert the embedded model -> prepare_data.py -> train_qlora.py --set backend=unsloth --merge (4 steps, under an
  import-order recorder) -> evaluate.py (4 examples); and the same training with backend=hf in the MAIN venv
  (.venv: transformers 5.23 / trl 1.16), because plain trl 1.15 cannot train on a CPU without Unsloth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LANE = Path(__file__).resolve().parent
MAIN_PYTHON = Path(os.environ.get("GEMMA_FAST_MAIN_PYTHON") or ROOT / ".venv" / "bin" / "python")

# What every lane training run overrides, identical for backend=unsloth and backend=hf: a couple of minutes on 2 cores.
TRAIN_SETS = ["train.max_steps=4", "train.batch_size=2", "train.grad_accum=1", "train.logging_steps=1"]
EVAL_SETS = ["eval.max_examples=4", "eval.max_new_tokens=8", "eval.batch_size=4"]
BANNER = "Unsloth 2026.10.9: no GPU found, training on CPU"


def sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


class Step:
    """One finished subprocess: its command, exit code and combined output (also saved next to the run)."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], log_dir: Path,
                 timeout: int = 900) -> None:
        self.name, self.cmd = name, cmd
        result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        self.returncode, self.stdout, self.output = result.returncode, result.stdout, result.stdout + result.stderr
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{name}.log").write_text(self.output, encoding="utf-8")

    def check(self) -> "Step":
        assert self.returncode == 0, f"{self.name} exited {self.returncode}: {' '.join(self.cmd)}\n{tail(self.output)}"
        return self


@pytest.fixture(scope="session")
def lane_env() -> dict[str, str]:
    if "GEMMA_FAST_CACHE" not in os.environ:
        pytest.fail("the Unsloth lane needs its own GEMMA_FAST_CACHE: run it with `make test-unsloth`")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "UNSLOTH_CPU_BF16": "0",
           "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A user's working directory: `scripts/` (a link to the repo's), and data/ and runs/ written under it."""
    work = tmp_path_factory.mktemp("lane")
    (work / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    return work


@pytest.fixture(scope="session")
def converted_model(lane_env, workdir) -> Path:
    """The embedded Gemma 3 270M converted in this lane (reconverted when the cache was made by another version)."""
    code = ("import json, shutil, transformers\n"
            "from gemma_fast.paths import cache_root\n"
            "target = cache_root() / 'gemma-3-270m'\n"
            "config = target / 'config.json'\n"
            "if config.is_file() and json.loads(config.read_text()).get('transformers_version') != transformers.__version__:\n"
            "    shutil.rmtree(target)\n"
            "from gemma_fast.models.loader import embedded_model_dir\n"
            "print(embedded_model_dir('gemma-3-270m'))\n")
    step = Step("convert", [sys.executable, "-c", code], ROOT, lane_env, workdir / "logs").check()
    return Path(step.stdout.strip().splitlines()[-1])  # progress bars go to stderr


@pytest.fixture(scope="session")
def prepared(lane_env, workdir, converted_model) -> Path:
    Step("prepare", [sys.executable, "scripts/prepare_data.py", "--recipe", "quickstart"], workdir, lane_env,
         workdir / "logs").check()
    return workdir / "data" / "quickstart"


@pytest.fixture(scope="session")
def unsloth_run(lane_env, workdir, prepared) -> tuple[Step, Path, Path]:
    """train_qlora.py --set backend=unsloth --merge, under the import-order recorder: (step, run dir, import log)."""
    out, order = workdir / "runs" / "lane" / "unsloth", workdir / "logs" / "import_order.txt"
    order.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, str(LANE / "import_order.py"), str(order), "scripts/train_qlora.py", "--recipe", "quickstart",
           "--set", "backend=unsloth", *sets(TRAIN_SETS), "--out", str(out), "--merge"]
    return Step("train_unsloth", cmd, workdir, lane_env, workdir / "logs"), out, order


@pytest.fixture(scope="session")
def hf_run(lane_env, workdir, prepared) -> tuple[Step, Path]:
    """The same training on backend=hf in the main venv (.venv), on the same converted model and prepared data."""
    if not MAIN_PYTHON.is_file():
        pytest.fail(f"the hf baseline runs in the main venv, and {MAIN_PYTHON} is missing: run `make setup` first")
    out = workdir / "runs" / "lane" / "hf"
    env = {k: v for k, v in lane_env.items() if not k.startswith("UNSLOTH_")}
    env["GEMMA_FAST_CPU_PRECISION"] = "float32"  # like UNSLOTH_CPU_BF16=0: float32 on any host, so losses compare
    # padded like Unsloth's batches: the same computation on both backends (padding-free is tested in tests/unit)
    cmd = [str(MAIN_PYTHON), "scripts/train_qlora.py", "--recipe", "quickstart", "--set", "backend=hf",
           "--set", "train.padding_free=false", *sets(TRAIN_SETS), "--out", str(out)]
    return Step("train_hf", cmd, workdir, env, workdir / "logs"), out


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [row["loss"] for row in rows if "loss" in row]

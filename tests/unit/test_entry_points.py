"""The notebook entry points: `from gemma_fast import load_recipe, prepare, train, evaluate` works, and importing the
package or any subpackage imports nothing heavy (Unsloth must be imported before transformers, peft and trl)."""

import subprocess
import sys

import gemma_fast
from tests.conftest import ROOT

PACKAGES = ["gemma_fast", "gemma_fast.data", "gemma_fast.models", "gemma_fast.training", "gemma_fast.evaluation",
            "gemma_fast.inference", "gemma_fast.export", "gemma_fast.plan", "gemma_fast.cli", "gemma_fast.testing"]


def test_the_notebook_entry_points_are_the_stage_functions():
    from gemma_fast import evaluate, load_recipe, prepare, train

    assert (load_recipe.__module__, prepare.__module__, train.__module__, evaluate.__module__) == (
        "gemma_fast.recipe", "gemma_fast.data.pipeline", "gemma_fast.training.run", "gemma_fast.evaluation.run")
    from gemma_fast.training import train as same

    assert same is train
    try:
        gemma_fast.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_importing_the_packages_imports_nothing_heavy():
    code = ("import importlib, sys\n"
            f"for name in {PACKAGES!r}:\n    importlib.import_module(name)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'unsloth') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"

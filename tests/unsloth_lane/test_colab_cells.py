"""The README's Colab cells, top to bottom, in the Unsloth lane's venv (requirements-gpu.txt's Python-level pins).

Run as written, line by line, with these exceptions, each because this venv already is what the line prepares:
  - `!git clone ...` is skipped and `%cd gemma_fast` enters a fresh working folder whose scripts/ is this checkout's;
  - `!pip install/uninstall ...` lines are no-ops: .venv-unsloth already holds both files' Python-level pins
    (`make setup-unsloth`), and pip cannot reach a GPU wheel here;
  - the post-install check (`import torch, torchvision ...`) is skipped: the CPU lane has no torchvision on purpose
    (the registry's is a CUDA build, which breaks transformers on a CPU torch); `make check-gpu-deps` checks it;
  - `python` is this venv's interpreter, and the train / evaluate lines get `--set` overrides appended
    (2 training steps, 4 evaluation examples) so the lane stays within a couple of minutes; the flags, paths and
    outputs the cells name are otherwise exactly the README's.
The Python cell is executed with a stand-in for IPython.display.Image that checks the image file exists.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import types

import pytest

from tests.unsloth_lane.conftest import BANNER, ROOT, sets, tail

FAST = {"scripts/train_qlora.py": ["train.max_steps=2", "train.batch_size=2", "train.grad_accum=1"],
        "scripts/evaluate.py": ["eval.max_examples=4", "eval.max_new_tokens=8", "eval.batch_size=4"]}


def colab_cells() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Colab")
    end = text.index("\n## ", start)
    cells = re.findall(r"```python\n(.*?)```", text[start:end], re.S)
    assert len(cells) >= 3, "the README's Colab section should hold its install, pipeline and results cells"
    return cells


def test_readme_colab_cells_run_top_to_bottom(lane_env, tmp_path, monkeypatch, prepared):
    # `prepared` only orders this after the pipeline fixtures: the embedded model is converted once per lane.
    cwd, ran, skipped = tmp_path, [], []
    for cell in colab_cells():
        python_lines = []
        for line in cell.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("%cd"):
                assert stripped.split()[1] == "gemma_fast", stripped
                cwd = tmp_path / "gemma_fast"
                cwd.mkdir()
                (cwd / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
            elif stripped.startswith("!"):
                words = shlex.split(stripped[1:], comments=True)
                if words[:2] == ["git", "clone"] or words[0] == "pip" or "torchvision" in stripped:
                    skipped.append(stripped)
                    continue
                assert words[0] == "python", f"unexpected shell line in the Colab cells: {stripped}"
                words = [sys.executable, *words[1:], *sets(FAST.get(words[1], []))]
                result = subprocess.run(words, cwd=cwd, env=lane_env, capture_output=True, text=True, timeout=900)
                output = result.stdout + result.stderr
                (tmp_path / f"cell_{len(ran)}.log").write_text(output, encoding="utf-8")
                assert result.returncode == 0, f"Colab line failed ({result.returncode}): {stripped}\n{tail(output)}"
                ran.append((stripped, output))
            else:
                python_lines.append(line)
        if python_lines:
            shown = []
            display = types.ModuleType("IPython.display")

            def image(path):
                assert (cwd / path).is_file(), f"the Colab cell shows {path}, which was not written"
                shown.append(path)

            display.Image = image
            ipython = types.ModuleType("IPython")
            ipython.display = display
            monkeypatch.setitem(sys.modules, "IPython", ipython)
            monkeypatch.setitem(sys.modules, "IPython.display", display)
            monkeypatch.chdir(cwd)
            exec(compile("\n".join(python_lines), "README Colab cell", "exec"), {})
            assert shown, "the results cell should display the metrics plot"

    assert [s for s in skipped if "pip install" in s], "the install cell lost its pip lines"
    trained = [output for line, output in ran if "train_qlora.py" in line]
    assert trained and BANNER in trained[0], "backend=auto should pick Unsloth wherever it imports (CPU included)"
    summary = json.loads((cwd / "runs" / "quickstart" / "colab" / "train_summary.json").read_text())
    assert summary["backend"] == "unsloth"
    if summary["method"] != "qlora":  # no bitsandbytes on a CPU: LoRA in float32, and the run says so
        assert summary.get("notes"), summary


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))

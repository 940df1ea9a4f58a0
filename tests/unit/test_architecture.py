"""The architecture as contracts (pyproject.toml [tool.importlinter], run by import-linter): the layers, the packages
a layer may not lean on, the product never importing its test fixtures; and no import circle between modules. Every
import counts, function-level ones included; `if TYPE_CHECKING:` imports do not run and do not count."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), str(ROOT / "pyproject.toml")], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)}, timeout=300)


def test_the_import_contracts_hold():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_a_planted_upward_import_breaks_the_layers(tmp_path):
    """models/ importing the command line: the contract names the edge."""
    shutil.copytree(ROOT / "gemma_fast", tmp_path / "gemma_fast", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    loader = tmp_path / "gemma_fast" / "models" / "loader.py"
    loader.write_text(loader.read_text(encoding="utf-8") + "\n\ndef _planted():\n    from ..cli import common  # noqa\n",
                      encoding="utf-8")
    done = lint(tmp_path)
    assert done.returncode == 1 and "BROKEN" in done.stdout
    assert "gemma_fast.models.loader -> gemma_fast.cli.common" in done.stdout


def test_no_import_circle():
    import grimp

    graph = grimp.build_graph("gemma_fast", exclude_type_checking_imports=True)
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                circles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = 2

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [module])
    assert not circles, circles

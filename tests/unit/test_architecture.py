"""The import graph of gemma_fast: no circle, and every import points down the declared layers.

Every import counts, the ones inside functions too (they are deferred for speed or import order, not to hide an
edge); imports under `if TYPE_CHECKING:` do not run and do not count. A new module goes in the lowest layer whose
modules it does not import; a test failure names the edge that points up.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gemma_fast"

LAYERS = [  # lowest first; a module may import only modules of lower layers
    {"errors", "log", "paths", "lang", "clean", "gguf_tokenizer", "llama_runtime", "metrics_zh", "main", "batching", "gguf_convert"},
    {"io", "outputs", "families", "methods", "backend", "encoders", "adapters", "tools", "selection", "hub"},
    {"sources", "perturb", "bertscore", "identity", "prompts", "loss", "varlen", "architecture"},
    {"metrics", "models", "memory", "guards"},
    {"recipe", "report", "testing", "eval_plan", "export_ram", "generation"},
    {"data", "rag", "cli", "callbacks", "merge", "testing_spm"},
    {"evaluation", "roundtrip"},
    {"robustness", "export", "chat"},
    {"exporters"},  # the registry and the export stage's work: reads export (GGUF), merge and roundtrip; train reads it
    {"train"},
    {"preflight"},
    {"commands"},  # the stages' CLIs: nothing in the package imports them (main.py loads them by name)
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "commands" if parts[0] == "commands" else parts[0]


def imports(path: Path) -> set[str]:
    """The gemma_fast modules `path` imports, by top-level module name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    package_level = 2 if path.parent.name == "commands" else 1
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == package_level or (node.level == 0 and (node.module or "").startswith("gemma_fast")):
                module = (node.module or "").removeprefix("gemma_fast").lstrip(".")
                found |= {module.split(".")[0]} if module else {alias.name for alias in node.names}
            elif node.level == 1 and package_level == 2:
                found.add("commands")
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("gemma_fast.")}
    return found - {""}


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name in ("__init__", "assets"):  # assets: scripts that built the shipped data
            continue
        edges.setdefault(name, set()).update(imports(path) - {name, "__init__"})
    return edges


def test_every_module_has_a_layer():
    layered = set().union(*LAYERS)
    assert set(graph()) == layered, f"not in LAYERS: {set(graph()) - layered}; gone: {layered - set(graph())}"


def test_no_import_points_up_or_sideways():
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    wrong = sorted(f"{a} (layer {level[a]}) imports {b} (layer {level[b]})" for a, deps in graph().items() for b in deps
                   if level[b] >= level[a])
    assert not wrong, "\n".join(wrong)


def test_no_circle():
    edges, state, circles = graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, circles


def test_the_checker_sees_a_deferred_import(tmp_path):
    """A function-level import is an edge too: the one that closed evaluation <-> report was one."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from .evaluation import score\n    from . import report\n"
                    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .train import Plan\n")
    assert imports(path) == {"evaluation", "report"}

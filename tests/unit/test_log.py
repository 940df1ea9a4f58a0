"""The library logs (logging, under "gemma_fast"); the commands install one rich handler that prints on the shared
stderr console."""

import ast
import io
import logging
from pathlib import Path

from gemma_fast import log

PACKAGE = Path(log.__file__).parent


def test_setup_installs_one_handler_however_often_it_runs():
    logger = logging.getLogger("gemma_fast")
    before = list(logger.handlers)
    try:
        log.setup()
        log.setup()
        ours = [h for h in logger.handlers if isinstance(h, log.RichLineHandler)]
        assert len(ours) == 1 and logger.propagate is False and logger.level == logging.INFO
    finally:
        logger.handlers[:] = before
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_a_warning_is_a_note_an_info_a_plain_line_and_markup_stays_text():
    from rich.console import Console

    out = io.StringIO()
    logger = logging.getLogger("test_log.isolated")  # not under gemma_fast: a command run earlier set that one up
    logger.addHandler(log.RichLineHandler(to=Console(file=out, width=200)))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.warning("the file [red]x[/] is odd")
        logger.info("wrote %s", "runs/a")
        logger.debug("not shown at INFO")
    finally:
        logger.handlers.clear()
    assert out.getvalue().splitlines() == ["note: the file [red]x[/] is odd", "wrote runs/a"]


def test_no_library_function_takes_a_console():
    """Messages go through logging; only the command lines (gemma_fast/cli/) hold a console."""
    takers = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs]
                if "console" in names:
                    takers.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert takers == []

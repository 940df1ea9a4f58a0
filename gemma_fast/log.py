"""What the library tells people goes through Python logging, under the "gemma_fast" logger: library code writes
`log = logging.getLogger(__name__)`, then `log.warning(...)` for a note the user should read and `log.info(...)` for
a progress line ("wrote ..."). Nothing in the library takes a console argument.

The commands (cli.run) call `setup()` once: one rich handler that prints on `console`, the same stderr console the
progress bars and spinners draw on, so lines and bars do not tear each other. A warning prints as a yellow "note:",
an error as a red "error:", info as plain text; messages are escaped (a path with [brackets] is not markup).
A notebook or another program can call `setup()` too, or attach its own handlers to "gemma_fast"."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)  # the one stderr console: progress bars, spinners and the log handler's lines



class RichLineHandler(logging.Handler):
    """One escaped line per record on the shared console (rich keeps a live progress bar below it), or on `to`."""

    def __init__(self, to: Console | None = None):
        super().__init__()
        self.to = to

    def emit(self, record: logging.LogRecord) -> None:
        try:
            (self.to or console).print(_markup(record.levelno, escape(record.getMessage())), highlight=False, soft_wrap=True)
        except Exception:  # a handler must never raise into the library (logging's own rule)
            self.handleError(record)


def _markup(level: int, text: str) -> str:
    if level >= logging.ERROR:
        return f"[bold red]error:[/] {text}"
    if level >= logging.WARNING:
        return f"[yellow]note:[/] {text}"
    return text if level >= logging.INFO else f"[dim]{text}[/]"


def setup(level: int = logging.INFO) -> logging.Logger:
    """Install the rich handler on the "gemma_fast" logger, once however often it is called; returns the logger."""
    logger = logging.getLogger("gemma_fast")
    if not any(isinstance(h, RichLineHandler) for h in logger.handlers):
        logger.addHandler(RichLineHandler())
        logger.propagate = False  # a root handler the user configured would print every line twice
    logger.setLevel(level)
    return logger

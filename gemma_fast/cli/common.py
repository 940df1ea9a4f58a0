"""The command-line convention shared by the five scripts: --recipe, repeatable --set, --out, and one-line errors."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import warnings
from typing import Callable

from rich.markup import escape

from .. import log
from ..errors import Terminated, UserError  # noqa: F401  (scripts raise cli.UserError)
from ..log import console  # noqa: F401  (the commands' stderr console: the library logs through it)
from ..recipe import Recipe, available_recipes, load_recipe


def parser(description: str, epilog: str = "", recipe_default: str = "") -> argparse.ArgumentParser:
    """The shared flags; `recipe_default` makes --recipe optional and says what it defaults to (the export stage:
    the run's own recipe.yaml)."""
    p = argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=not recipe_default, help=f"recipe name ({', '.join(available_recipes())}) or a path "
                                                                 f"to a YAML file{f' (default: {recipe_default})' if recipe_default else ''}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe value, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default depends on the script)")
    return p


def overwrite_flag(p: argparse.ArgumentParser, what: str) -> None:
    """--overwrite for the stages that update their folder in place (prepare, evaluate, robustness)."""
    p.add_argument("--overwrite", action="store_true", help=f"write {what} into an --out that also holds files gemma_fast did "
                                                            "not write (files of the same name are replaced; nothing else is removed)")


def model_source(p: argparse.ArgumentParser):
    """--adapter or --model: what evaluate and robustness run (neither: the recipe's base model). Returns the group,
    for a stage that has another exclusive source."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--adapter", default=None, metavar="DIR", help="a training run folder or its adapter/ folder")
    group.add_argument("--model", default=None, metavar="DIR", help="a merged model folder (train_qlora.py --merge)")
    return group


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    return load_recipe(args.recipe, args.overrides)


def quiet_library_progress() -> None:
    """The scripts show their own rich progress; the libraries' tqdm bars would interleave with it."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars follow this
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # renamed in transformers 5.23 but still the only name 5.17 (the GPU pin) knows; nothing a user can act on
    warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)


def _terminate(signum, frame) -> None:
    raise Terminated()


def run(main: Callable[[], None]) -> None:
    """Run a script's main: user errors become one red line and a non-zero exit, never a traceback. SIGTERM stops the
    script like Ctrl-C (exit 143; training saves a checkpoint first, callbacks.SaveAndStopOnCtrlC)."""
    quiet_library_progress()
    log.setup()  # the library's notes and progress lines, on the console the bars draw on
    installed, previous = False, None
    if threading.current_thread() is threading.main_thread():
        previous, installed = signal.signal(signal.SIGTERM, _terminate), True
    try:
        main()
    except UserError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Terminated:
        console.print("[yellow]terminated (SIGTERM): stopped; temporary files were removed, finished outputs kept[/]")
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as exc:  # read-only, full or busy disk, an --out that is a file, ...: the OS said no
        console.print(f"[bold red]error:[/] {escape(os_error_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(UserError.exit_code)
    finally:
        if installed:  # the caller's handler back (None: one set outside Python, restored as the default)
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# OS errors about a name rather than about writing: a path too long, missing, looping or through a file
_NAME_ERRORS = (errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR)


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path (clipped when long), what the OS said, and what that means
    for earlier outputs (for a write; an unusable name is said to be one)."""
    names = [str(p) for p in (exc.filename, exc.filename2) if p]
    shown = " -> ".join(n if len(n) <= 200 else f"{n[:120]}… ({len(n):,} characters)" for n in names)
    reason = exc.strerror or str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if exc.errno in _NAME_ERRORS:
        hint = "; shorten the name (--out, --set or a recipe value)" if exc.errno == errno.ENAMETOOLONG else ""
        return f"cannot use the path {shown}: {reason} ({type(exc).__name__}){hint}; nothing was written there"
    return (f"{shown + ': ' if shown else ''}{reason} ({type(exc).__name__}); outputs are written to temporary names and "
            "moved into place only when complete, so nothing earlier was lost or left half-written")

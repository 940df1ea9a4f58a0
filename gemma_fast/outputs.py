"""Output folders: every delete or replace goes through here, so no script can remove what the user did not ask to lose.

One guard for every stage (check_out_dir), by what a folder holds:
- a folder this project wrote carries a `.gemma_fast` marker naming its kind (run, rag, data, eval, robustness);
- run and rag folders are replaced whole, only with --overwrite and only when they are ours, never `/`, the home
  folder, the working directory or one of its ancestors, or a repository root; the old folder is moved aside and
  removed only after the new one is complete, and put back on failure;
- data, eval, robustness and export folders are updated in place (a rerun replaces its own files; evaluation reuses
  its cached answers), and a folder holding files this project did not write is refused unless --overwrite, which
  then writes our outputs beside them and removes nothing.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

MARKER = ".gemma_fast"
WHOLE_KINDS = ("run", "rag")  # replaced as a whole folder (--overwrite)
# What the in-place kinds write, as glob patterns relative to their folder (and atomic_open's temporary files)
OWN_FILES = {
    "data": ("train.jsonl", "val.jsonl", "test.jsonl", "prep_report.json", "recipe.yaml", ".incomplete"),
    "eval": ("predictions.jsonl", "metrics.json", "report.md", "metrics.png", "recipe.yaml", "partial/*"),
    "robustness": ("robustness.json", "report.md", "robustness.png", "recipe.yaml", "partial/*", "questions/*"),
    "export": ("recipe.yaml",),  # + what each export writes (exporters.own_files, passed as `own`)
}
KINDS = WHOLE_KINDS + tuple(OWN_FILES)


def mark(folder: Path, kind: str) -> None:
    """Say that `folder` holds a gemma_fast output of this kind (what replace_guard later checks)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"written_by": "gemma_fast", "kind": kind}) + "\n", encoding="utf-8")


def _legacy_kind(folder: Path) -> str | None:
    """Outputs written before the marker existed, recognised by their layout."""
    if (folder / "recipe.yaml").is_file() and ((folder / "adapter").is_dir() or (folder / "checkpoints").is_dir()):
        return "run"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text(encoding="utf-8")).get("written_by") == "gemma_fast":
                return "rag"
        except (ValueError, OSError, AttributeError):
            return None
    if (folder / "prep_report.json").is_file() and (folder / "train.jsonl").is_file():
        return "data"
    return None


def output_kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return _legacy_kind(folder)


def protected_reason(folder: Path) -> str | None:
    """Why `folder` may never be removed, or None."""
    target = folder.resolve()
    cwd = Path.cwd().resolve()
    if target == Path(target.anchor):
        return "it is the file-system root"
    if target == Path.home().resolve():
        return "it is the home folder"
    if target == cwd or target in cwd.parents:
        return "it is the working directory or one of its parents"
    if (target / ".git").exists():
        return "it is a repository (it holds .git)"
    return None


def check_replaceable(folder: Path, kind: str, flag: str = "--overwrite") -> None:
    """Refuse, with the reason, to replace anything but a gemma_fast output of this kind."""
    reason = protected_reason(folder)
    if reason:
        raise UserError(f"refusing to replace {folder}: {reason}; choose another --out")
    found = output_kind(folder)
    if found != kind:
        what = f"a gemma_fast {found} folder" if found else "no gemma_fast output"
        raise UserError(f"refusing to replace {folder} with {flag}: it holds {what}, not a gemma_fast {kind} folder; "
                        "choose another --out (nothing was changed)")


def holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def foreign_files(folder: Path, kind: str, own: tuple[str, ...] = ()) -> list[str]:
    """Files in `folder` (relative paths) that a gemma_fast stage of this in-place kind did not write (OWN_FILES, and
    the patterns `own` adds): every file when the folder carries no marker of this kind."""
    ours = output_kind(folder) == kind
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() and not path.is_symlink():
            continue
        name = path.relative_to(folder).as_posix()
        if ours and (name == MARKER or (name.startswith(".") and name.endswith(".tmp"))  # atomic_open's leftovers
                     or any(path.relative_to(folder).match(pattern) for pattern in OWN_FILES[kind] + own)):
            continue
        found.append(name)
    return found


def check_out_dir(folder: Path, kind: str, overwrite: bool, hint: str = "", own: tuple[str, ...] = ()) -> None:
    """Fail before any work when --out exists and may not (or was not asked to) be written; see the module doc."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder")
    if not holds_files(folder):
        return
    if kind in WHOLE_KINDS:
        if not overwrite:
            raise UserError(f"{folder} already holds files: {hint or ''}--overwrite replaces it, or choose another --out")
        check_replaceable(folder, kind)
        return
    found = output_kind(folder)
    if found and found != kind:
        raise UserError(f"refusing to write {kind} outputs into {folder}: it holds a gemma_fast {found} folder; "
                        "choose another --out (nothing was changed)")
    foreign = foreign_files(folder, kind, own)
    if not foreign:
        return
    if not overwrite:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"{folder} holds files gemma_fast did not write ({shown}): --overwrite writes the {kind} outputs "
                        "beside them (replacing any of the same name, removing nothing else), or choose another --out")
    reason = protected_reason(folder)
    if reason:
        raise UserError(f"refusing to write {kind} outputs into {folder}: {reason}; choose another --out")


def claim_out_dir(folder: Path, kind: str, overwrite: bool, own: tuple[str, ...] = ()) -> None:
    """Right before an in-place stage writes: check again, then mark the folder as ours, so a rerun recognises the
    files (and cached answers) written from now on."""
    check_out_dir(folder, kind, overwrite, own=own)
    mark(folder, kind)


@contextmanager
def replace_guard(folder: Path, kind: str, overwrite: bool, keep_on_failure=None) -> Iterator[Path | None]:
    """Move an existing output aside while the new one is written into `folder`; remove it only on success.

    On failure the new, incomplete folder is removed and the old one put back, unless `keep_on_failure(folder)`
    says the new one is worth keeping (a resumable checkpoint): then the old one stays beside it, named
    `<folder>.replaced`, and is never deleted for you. Yields where the old folder was moved (or None).
    """
    check_out_dir(folder, kind, overwrite)
    aside = None
    if holds_files(folder):
        linked = folder.is_symlink()
        if linked:  # through a symlinked --out: the folder it points to moves aside, the link stays
            folder = folder.resolve()
        aside = folder.with_name(f"{folder.name}.replaced")
        if aside.exists() or aside.is_symlink():
            raise UserError(f"{aside} exists (a run replaced earlier and not yet removed): remove or rename it first")
        folder.rename(aside)
        if linked:
            folder.mkdir()  # so the link's path is a folder again for the new output
    try:
        yield aside
    except BaseException as exc:
        if keep_on_failure is not None and folder.is_dir() and keep_on_failure(folder):
            if aside is not None and isinstance(exc, UserError):
                exc.args = (f"{exc}; the run it replaces is kept in {aside} until you remove it",)
            raise
        if folder.is_dir() and (output_kind(folder) == kind or not holds_files(folder)):  # only what this run created
            shutil.rmtree(folder, ignore_errors=True)
        if aside is not None and not folder.exists():
            aside.rename(folder)
        raise
    if aside is not None:
        shutil.rmtree(aside)


def check_not_inputs(outputs: list[Path], inputs: list[Path]) -> None:
    """Refuse to write an output over a file this run reads (e.g. --out the folder of the source file)."""
    resolved = {p.resolve(): p for p in inputs}
    for out in outputs:
        if out.resolve() in resolved:
            raise UserError(f"refusing to write {out}: it is an input of this run ({resolved[out.resolve()]}); choose another --out")

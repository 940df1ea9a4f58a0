"""Atomic writes and line-checked JSONL reading, shared by every script.

Every output goes to a temp file in the same folder and is renamed into place, so a crash or Ctrl-C never
leaves a half-written file where an earlier good one stood. A failed write is an OSError naming its file, also when
a library reports it in its own exception type (`writing`: safetensors' SafetensorError, faiss' and torch.save's
RuntimeError), so every script turns it into one line (cli.os_error_line).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import UserError


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the permissions a plain open() would give
    try:
        with writing(path), os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_WRITE_FAILURES = ("write error", "unexpected pos", "file write failed", "PytorchStreamWriter")  # faiss, torch.save


def write_error(exc: BaseException, path: str | Path) -> OSError | None:
    """The OSError a failed write stands for, naming `path` when the error names no file; None when `exc` is not a
    failed write. Libraries say it their own way: safetensors 'Error while serializing: I/O error: No space left on
    device (os error 28)', faiss "write error in PATH: 9955 != 25600 (No space left on device)", torch.save
    'unexpected pos 576 vs 534' (no reason given)."""
    if isinstance(exc, OSError):
        return exc if exc.filename else OSError(exc.errno, exc.strerror or str(exc), str(path))
    text = str(exc)
    library = type(exc).__name__ == "SafetensorError" and "serializ" in text and "deserializ" not in text
    if not library and not (isinstance(exc, RuntimeError) and any(mark in text for mark in _WRITE_FAILURES)):
        return None
    code = re.search(r"os error (\d+)|code: (\d+)", text)
    number = int(code.group(1) or code.group(2)) if code else \
        next((n for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO) if os.strerror(n) in text), None)
    reason = os.strerror(number) if number else f"write failed ({text.splitlines()[0][:120]}; disk full?)"
    return OSError(number, reason, str(path))


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Around a write to `path`: a failed write leaves as an OSError naming the file (write_error); any other
    exception passes unchanged."""
    try:
        yield
    except Exception as exc:
        failure = write_error(exc, path)
        if failure is None or failure is exc:
            raise
        raise failure from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2, sort_keys=False)
        handle.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            count += 1
    return count


def require_file(path: Path, what: str = "") -> None:
    """A missing path and a folder where a file is wanted are different mistakes, and are said differently."""
    label = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise UserError(f"{label} is a folder, not a file")
    if not path.is_file():
        raise UserError(f"{label}: file not found")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    require_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    except RecursionError:  # json's parser recurses per level: a 100,000-deep array exhausts Python's stack
        raise UserError(f"{path}: JSON nested too deeply to read (thousands of levels)") from None


def read_jsonl(path: str | Path) -> list[dict]:
    return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a bad line is an error naming the file, line and column."""
    path = Path(path)
    require_file(path)
    with path.open("rb") as handle:
        return list(jsonl_rows(handle, str(path)))


def decoded_lines(lines: Iterable[bytes], where: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of byte lines (a file or stdin opened in binary), read lazily; a line that is not UTF-8
    is an error naming `where` and the line."""
    for lineno, raw in enumerate(lines, start=1):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}:{lineno}: not valid UTF-8 (byte {exc.start} of the line)") from None


def jsonl_rows(lines: Iterable[bytes], where: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank JSONL line of `lines`; every way a line can be bad (not UTF-8, not
    JSON, nested too deeply, not an object) is one error naming `where`, the line (and the column)."""
    for lineno, line in decoded_lines(lines, where):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}:{lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
        except RecursionError:
            raise UserError(f"{where}:{lineno}: JSON nested too deeply to read (thousands of levels)") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row

"""Where rows come from: local files (json, jsonl, csv, parquet; globs), files shipped in the package, URLs, and
hub datasets. Every row comes with a place (`file:line` or `hub-id[index]`) so errors can name it.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..io import atomic_open
from ..paths import looks_like_hub_id

ASSETS = Path(__file__).resolve().parents[1] / "assets"
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


@dataclass
class RawRow:
    where: str  # "path:line" or "hub-id[index]"
    row: object  # a dict when well formed
    problem: str = ""  # set when the row could not be read: the reason, for on_bad_record


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def local_paths(source: str) -> list[Path]:
    """The files a local source names: `asset:NAME`, a path, or a glob; [] when it is not local."""
    if source.startswith("asset:"):
        return [ASSETS / source[len("asset:"):]]
    expanded = str(Path(source).expanduser())
    if any(ch in expanded for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(expanded))]
    return [Path(expanded)] if Path(expanded).exists() else []


def download(url: str, cache: Path) -> Path:
    """Fetch a URL once into the cache (atomically) and return the local copy."""
    name = Path(url.split("?")[0]).name or "download"
    target = cache / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_open(target, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except OSError as exc:
        raise UserError(f"cannot download {url}: {exc}; download it yourself and use --set data.source=PATH") from None
    return target


def resolve_files(source: str, cache: Path) -> list[Path] | None:
    """Local files for `source` (downloading a URL first), or None when `source` is a hub dataset id."""
    if not source:
        raise UserError("data.source is empty: set it in the recipe or with --set data.source=PATH")
    if is_url(source):
        return [download(source, cache)]
    paths = local_paths(source)
    if paths:
        for path in paths:
            if path.is_dir():
                raise UserError(f"data source {path} is a folder, not a file; name a file, or a glob such as {path}/*.jsonl")
            if path.suffix not in LOCAL_SUFFIXES:
                raise UserError(f"{path}: unsupported file type; expected one of {', '.join(LOCAL_SUFFIXES)}")
            if not path.is_file():
                raise UserError(f"data source not found: {path}")
        return paths
    if looks_like_path(source):  # a mistyped relative path is not a hub id
        raise UserError(f"data source not found: {source} (no such file{_relative_hint(source)})")
    if looks_like_hub_id(source):
        return None
    raise UserError(f"data source not found: {source} (expected a file, a glob, asset:NAME, a URL or a hub dataset id)")


def looks_like_path(source: str) -> bool:
    """A source written as a path (./x, ../x, or a name with a data-file suffix), never a hub dataset id."""
    return source.startswith(("./", "../", ".\\", "..\\", "~")) or source.lower().endswith(LOCAL_SUFFIXES)


def _relative_hint(source: str) -> str:
    return "" if Path(source).expanduser().is_absolute() else f" relative to the working directory {Path.cwd()}"


def read_rows(source: str, cache: Path, hub_split: str = "train") -> Iterator[RawRow]:
    files = resolve_files(source, cache)
    if files is None:
        yield from _hub_rows(source, hub_split)
        return
    for path in files:
        yield from _file_rows(path)


def _hub_rows(dataset_id: str, split: str) -> Iterator[RawRow]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # datasets raises many types for offline / missing / gated sets
        raise UserError(f"cannot load hub dataset {dataset_id} (split {split}): {str(exc).splitlines()[0]}") from None
    for i, row in enumerate(ds):
        yield RawRow(f"{dataset_id}[{i}]", row)


def _file_rows(path: Path) -> Iterator[RawRow]:
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    if path.suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif path.suffix == ".json":
        yield from _json_rows(path)
    elif path.suffix == ".csv":
        yield from _csv_rows(path)
    else:
        yield from _parquet_rows(path)


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(where, None, f"not valid UTF-8 (byte {exc.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                yield RawRow(where, json.loads(line))
            except json.JSONDecodeError as exc:
                yield RawRow(f"{where}:{exc.colno}", None, f"malformed JSON: {exc.msg}")
            except RecursionError:
                yield RawRow(where, None, "JSON nested too deeply to read (thousands of levels)")


def _json_rows(path: Path) -> Iterator[RawRow]:
    from ..io import read_json

    data = read_json(path)  # a malformed JSON array cannot be read past its error: always fatal
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} wrappers
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    for index, row in enumerate(data, start=1):
        yield RawRow(f"{path}:record {index}", row)


def _csv_rows(path: Path) -> Iterator[RawRow]:
    """Rows by header; utf-8-sig reads Excel's byte-order mark. A row with more or fewer fields than the header
    (an unquoted comma, a missing column) is a bad record naming its line, never silently cut or padded."""
    start = 1
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if not header:
                raise UserError(f"{path}: no header row")
            start = reader.line_num + 1
            for fields in reader:
                where = f"{path}:{start}" if reader.line_num == start else f"{path}:{start}-{reader.line_num}"
                start = reader.line_num + 1
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    yield RawRow(where, None, f"{len(fields)} fields where the header has {len(header)} "
                                              "(an unquoted comma in a value? quote values that contain commas)")
                    continue
                yield RawRow(where, dict(zip(header, fields)))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}:{start}: malformed CSV from this line on: {exc} (an unterminated quote?)") from None


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    for index, row in enumerate(table.to_pylist(), start=1):
        yield RawRow(f"{path}:row {index}", row)

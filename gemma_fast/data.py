"""Loaders, validation and seeded splits, ending in the one record schema {id, instruction, input, output, lang, source}."""

from __future__ import annotations

import hashlib
import random
import unicodedata
from pathlib import Path

from .errors import UserError
from .io import read_json, read_jsonl, read_jsonl_numbered, write_json, write_jsonl
from .recipe import Recipe

ASSETS = Path(__file__).resolve().parent / "assets"
SPLITS = ("train", "val", "test")
SCHEMA = ("id", "instruction", "input", "output", "lang", "source")


def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs make up a good share of the letters, else 'en'."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and cjk / letters > 0.3 else "en"


def resolve_source(source: str) -> Path:
    """`asset:NAME` is a file shipped with the package; anything else a local path (issue #3 adds hub ids and URLs)."""
    if not source:
        raise UserError("data.source is empty: set it in the recipe or with --set data.source=PATH")
    path = ASSETS / source[len("asset:"):] if source.startswith("asset:") else Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"data source not found: {path}")
    return path


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs; a JSON array file numbers rows by their index (1-based)."""
    if path.suffix == ".jsonl":
        rows = read_jsonl_numbered(path)
    else:
        data = read_json(path)
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
        rows = list(enumerate(data, start=1))
    if not rows:
        raise UserError(f"{path}: the file has no records")
    return rows


def to_record(row: dict, where: str, source_name: str, index: int) -> dict:
    """Validate one alpaca-shaped row and normalise it into the schema; errors name the place and field."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object, got {type(row).__name__}")
    for key in ("instruction", "output"):
        if key not in row:
            raise UserError(f"{where}: missing required field '{key}'")
    for key in ("instruction", "input", "output"):
        if key in row and not isinstance(row[key], str):
            raise UserError(f"{where}: field '{key}' must be a string, got {type(row[key]).__name__}")
    if not row["output"].strip():
        raise UserError(f"{where}: field 'output' is empty")
    if not row["instruction"].strip():
        raise UserError(f"{where}: field 'instruction' is empty")
    clean = {k: unicodedata.normalize("NFC", row.get(k, "")).strip() for k in ("instruction", "input", "output")}
    record_id = str(row.get("id") or f"{source_name}-{index:06d}")
    return {"id": record_id, **clean, "lang": detect_lang(clean["instruction"] + clean["output"]), "source": source_name}


def load_records(source: str) -> list[dict]:
    path = resolve_source(source)
    records, seen = [], {}
    for lineno, row in _read_rows(path):
        where = f"{path}:{lineno}"
        record = to_record(row, where, path.stem, lineno)
        if record["id"] in seen:
            raise UserError(f"{where}: duplicate id '{record['id']}' (first at line {seen[record['id']]})")
        seen[record["id"]] = lineno
        records.append(record)
    return records


def split_records(records: list[dict], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[dict]]:
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise UserError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each be in [0, 1) and sum below 1")
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n_test, n_val = round(len(shuffled) * test_fraction), round(len(shuffled) * val_fraction)
    return {"test": shuffled[:n_test], "val": shuffled[n_test : n_test + n_val], "train": shuffled[n_test + n_val :]}


def prepare(recipe: Recipe, out_dir: Path) -> dict:
    """Load, validate, subset and split the recipe's data into out_dir; returns the report (also saved)."""
    path = resolve_source(recipe.data.source)
    records = load_records(recipe.data.source)
    n_in = len(records)
    if recipe.data.max_records and n_in > recipe.data.max_records:
        records = random.Random(recipe.seed).sample(records, recipe.data.max_records)
    if recipe.data.test_source:
        splits = split_records(records, recipe.data.val_fraction, 0.0, recipe.seed)
        splits["test"] = load_records(recipe.data.test_source)
    else:
        splits = split_records(records, recipe.data.val_fraction, recipe.data.test_fraction, recipe.seed)
    if not splits["train"]:
        raise UserError(f"{path}: no training records left after splitting {len(records)} records")
    for name in SPLITS:
        write_jsonl(out_dir / f"{name}.jsonl", splits[name])
    report = {
        "recipe": recipe.name,
        "source": str(path),
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "records_in": n_in,
        "dropped": {"max_records": n_in - len(records)},
        "splits": {name: len(rows) for name, rows in splits.items()},
        "languages": {name: _count(rows, "lang") for name, rows in splits.items()},
    }
    write_json(out_dir / "prep_report.json", report)
    recipe.save(out_dir / "recipe.yaml")
    return report


def _count(rows: list[dict], key: str) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return dict(sorted(counts.items()))


def load_split(data_dir: Path, split: str) -> list[dict]:
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: run scripts/prepare_data.py for this recipe first")
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, start=1):
        missing = [k for k in ("id", "instruction", "output") if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: missing field '{missing[0]}'")
    return rows


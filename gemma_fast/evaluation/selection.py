"""Which questions an evaluation asks, in this order: eval.ids (a list of ids), eval.where (conditions on context,
language, task and source), eval.without_context (the same questions with their passage removed), then
eval.max_examples (the first N left). The split's order is kept throughout.

Imports nothing of the package but errors, so recipe.py can check eval.where at load time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import UserError

if TYPE_CHECKING:  # annotations only
    from ..recipe import EvalConfig


def record_task(record: dict) -> str:
    """The record's `task` field, else its id's last dash-separated part (poetry's `-continue`, the shipped
    kaggle_instructions' `-translate`): prepared splits keep only the schema fields, ids keep the task."""
    return str(record.get("task") or str(record["id"]).rsplit("-", 1)[-1])


WHERE: dict[str, Callable[[dict], str]] = {  # key -> the record's value it is compared with
    "context": lambda r: "with" if str(r.get("input", "")).strip() else "without",
    "lang": lambda r: str(r.get("lang", "en")),
    "task": record_task,
    "source": lambda r: str(r.get("source", "")),
}
CONTEXT_VALUES = ("with", "without")
LANG_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")  # en, zh, zh-Hans, pt_BR


def parse_where(text: str) -> dict[str, str]:
    """'context=without,lang=en' -> {'context': 'without', 'lang': 'en'}; the conditions are ANDed."""
    conditions: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = (x.strip() for x in part.partition("="))
        if key not in WHERE:
            raise UserError(f"eval.where: unknown key '{key}' in '{part}'; valid: {', '.join(WHERE)} (e.g. context=without,lang=en)")
        if not sep or not value:
            raise UserError(f"eval.where: '{part}' needs a value, e.g. {key}=...")
        if key in conditions:
            raise UserError(f"eval.where: '{key}' is given twice; the conditions are ANDed, so give one value per key")
        if key == "context" and value not in CONTEXT_VALUES:
            raise UserError(f"eval.where: context={value}: valid values are {', '.join(CONTEXT_VALUES)}")
        if key == "lang" and not LANG_CODE.fullmatch(value):
            raise UserError(f"eval.where: lang={value}: not a language code (e.g. en, zh); separate conditions with "
                            "commas, e.g. lang=en,context=with")
        if any(mark in value for mark in "=;"):
            raise UserError(f"eval.where: {key}={value}: a value holds '=' or ';'; separate conditions with commas, "
                            "e.g. lang=en,context=with")
        conditions[key] = value
    return conditions


def read_ids(path: Path) -> list[tuple[int, str]]:
    """(line number, id) from a file of one id per line, or JSONL lines with an `id`; blank and # lines skipped."""
    if path.is_dir():
        raise UserError(f"eval.ids: {path} is a folder, not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"eval.ids: {path} not found") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    out, first = [], {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("{"):
            try:
                row = json.loads(item)
            except ValueError:
                raise UserError(f"{path}:{lineno}: malformed JSON (a line is an id, or an object with an 'id')") from None
            if not isinstance(row, dict) or row.get("id") in (None, ""):
                raise UserError(f"{path}:{lineno}: a JSON line needs an 'id'")
            item = str(row["id"])
        if item in first:
            raise UserError(f"{path}:{lineno}: id '{item}' is listed twice (first on line {first[item]})")
        first[item] = lineno
        out.append((lineno, item))
    if not out:
        raise UserError(f"eval.ids: {path} lists no ids")
    return out


def select(records: list[dict], cfg: EvalConfig, split_path: Path) -> list[dict]:
    """The records to evaluate (copies where without_context blanks the passage; the ids stay the same)."""
    if cfg.ids:
        wanted = read_ids(Path(cfg.ids))
        known = {r["id"] for r in records}
        missing = next(((n, i) for n, i in wanted if i not in known), None)
        if missing:
            raise UserError(f"{cfg.ids}:{missing[0]}: id '{missing[1]}' is not in {split_path}")
        keep = {i for _, i in wanted}
        records = [r for r in records if r["id"] in keep]
    if cfg.where:
        conditions = parse_where(cfg.where)
        records = [r for r in records if all(WHERE[k](r) == v for k, v in conditions.items())]
    if cfg.without_context:  # before the prompts are built: each row's cache key changes with its prompt
        records = [{**r, "input": ""} for r in records]
    if cfg.max_examples:
        records = records[: cfg.max_examples]
    return records


def selection_summary(cfg: EvalConfig, examples: int) -> dict:
    """What was selected, for metrics.json and report.md."""
    return {"ids_file": cfg.ids or None, "where": cfg.where or None, "without_context": cfg.without_context,
            "max_examples": cfg.max_examples or None, "examples": examples}


def describe(selection: dict) -> str:
    """One line for people: 'ids from x.txt; where context=with; passages removed; first 50'; '' for the whole split."""
    parts = ([f"ids from {selection['ids_file']}"] if selection.get("ids_file") else []) + \
            ([f"where {selection['where']}"] if selection.get("where") else []) + \
            (["asked without their passage (eval.without_context)"] if selection.get("without_context") else []) + \
            ([f"the first {selection['max_examples']}"] if selection.get("max_examples") else [])
    return "; ".join(parts)

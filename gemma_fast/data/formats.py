"""Format adapters: one source row -> zero or more {instruction, input, output[, id]} dicts.

A row that cannot be used raises BadRecord naming the field, so the caller can report `file:line: field` and
either stop or skip it (data.on_bad_record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # annotations only: recipe.py reads this module's registries
    from ..recipe import DataConfig


class BadRecord(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason  # a short key for the report, e.g. "missing_field"


def _text(row: dict, key: str, required: bool = True) -> str:
    if key not in row or row[key] is None:
        if required:
            raise BadRecord("missing_field", f"missing required field '{key}'")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise BadRecord("wrong_type", f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def _with_id(row: dict, record: dict) -> dict:
    if row.get("id") not in (None, ""):
        record["id"] = str(row["id"])
    return record


def alpaca(row: dict, cfg: DataConfig) -> list[dict]:
    """instruction / input / output (the Kaggle docs QA files, Alpaca, our own schema, CSV via data.columns)."""
    columns = {"instruction": "instruction", "input": "input", "output": "output", **cfg.columns}
    return [_with_id(row, {
        "instruction": _text(row, columns["instruction"]),
        "input": _text(row, columns["input"], required=False),
        "output": _text(row, columns["output"]),
    })]


def dolly(row: dict, cfg: DataConfig) -> list[dict]:
    """databricks-dolly-15k: instruction / context / response / category."""
    return [_with_id(row, {
        "instruction": _text(row, "instruction"),
        "input": "" if cfg.drop_context else _text(row, "context", required=False),
        "output": _text(row, "response"),
    })]


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}


def sharegpt(row: dict, cfg: DataConfig) -> list[dict]:
    """Conversation lists: `conversations` of {from, value} (ShareGPT; FreedomIntelligence's Evol-Instruct
    Chinese) or `messages` of {role, content}. Each user turn followed by an assistant turn is one record; a
    system turn becomes the input of the records after it."""
    key = "conversations" if "conversations" in row else "messages" if "messages" in row else None
    if key is None:
        raise BadRecord("missing_field", "missing required field 'conversations' (or 'messages')")
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise BadRecord("wrong_type", f"field '{key}' must be a non-empty list of turns")
    records, system, pending = [], "", None
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise BadRecord("wrong_type", f"{key}[{n}] must be an object")
        role = _ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        text = turn.get("value", turn.get("content"))
        if role is None or not isinstance(text, str):
            raise BadRecord("wrong_type", f"{key}[{n}] needs a known role (from/role) and a string value/content")
        if role == "system":
            system = text
        elif role == "user":
            pending = text
        elif pending is not None:
            records.append({"instruction": pending, "input": system, "output": text})
            pending = None
    if not records:
        raise BadRecord("missing_field", f"'{key}' has no user turn followed by an assistant turn")
    if len(records) == 1:
        return [_with_id(row, records[0])]
    base = row.get("id")
    return [dict(r, id=f"{base}-{i}") if base not in (None, "") else r for i, r in enumerate(records)]


POETRY_TASKS = ("title", "continue", "author")


def poetry(row: dict, cfg: DataConfig) -> list[dict]:
    """chinese-poetry records {author, title | rhythmic, paragraphs[]} -> writing, continuation, attribution tasks."""
    author = _text(row, "author")
    title = _text(row, "title", required=False) or _text(row, "rhythmic", required=False)
    is_ci = "rhythmic" in row and "title" not in row
    paragraphs = row.get("paragraphs")
    if not isinstance(paragraphs, list) or not paragraphs or not all(isinstance(p, str) for p in paragraphs):
        raise BadRecord("missing_field" if not paragraphs else "wrong_type", "field 'paragraphs' must be a non-empty list of strings")
    poem = "\n".join(p.strip() for p in paragraphs if p.strip())
    records = []
    for task in cfg.poetry_tasks:
        if task == "title" and title:
            ask = f"以{author}的风格，按词牌《{title}》填一首词。" if is_ci else f"以{author}的风格写一首题为《{title}》的诗。"
            records.append({"task": task, "instruction": ask, "input": "", "output": poem})
        elif task == "continue" and len(paragraphs) > 1:
            first, rest = paragraphs[0].strip(), "\n".join(p.strip() for p in paragraphs[1:] if p.strip())
            records.append({"task": task, "instruction": f"续写这首{'词' if is_ci else '诗'}的下文{_form_request(rest, is_ci)}：{first}",
                            "input": "", "output": rest})
        elif task == "author":
            records.append({"task": task, "instruction": f"这首{'词' if is_ci else '诗'}的作者是谁？", "input": poem, "output": author})
    return records


def _form_request(rest: str, is_ci: bool) -> str:
    """For a regular 5- or 7-character shi, the form the continuation must have, stated in the request (what the
    form checks of evaluation measure): "（再写6句，每句5字）"; nothing for ci or irregular poems."""
    from .poetry import continuation_request

    request = None if is_ci else continuation_request(rest)
    return f"（再写{request[0]}句，每句{request[1]}字）" if request else ""


ADAPTERS: dict[str, Callable[[dict, DataConfig], list[dict]]] = {
    "alpaca": alpaca, "dolly": dolly, "sharegpt": sharegpt, "poetry": poetry,
}

"""Choosing what to evaluate: eval.ids, eval.where, eval.without_context, eval.max_examples (gemma_fast/evaluation/selection.py)."""

import json

import pytest

from gemma_fast.errors import UserError
from gemma_fast.evaluation.run import row_key
from gemma_fast.recipe import EvalConfig, load_recipe
from gemma_fast.evaluation.selection import describe, parse_where, read_ids, select, selection_summary

RECORDS = [
    {"id": "kd-000001", "instruction": "What is a kernel?", "input": "Kernels are notebooks.", "output": "A notebook.", "lang": "en", "source": "kd"},
    {"id": "kd-000002", "instruction": "How long is a week?", "input": "", "output": "Seven days.", "lang": "en", "source": "kd"},
    {"id": "kd-000003", "instruction": "什么是竞赛？", "input": "", "output": "一种比赛。", "lang": "zh", "source": "kd"},
    {"id": "ki-01-translate", "instruction": "Translate into French.", "input": "Kaggle hosts competitions.",
     "output": "Kaggle organise des compétitions.", "lang": "en", "source": "kaggle_instructions"},
    {"id": "p-000009", "task": "continue", "instruction": "续写", "input": "", "output": "x", "lang": "zh", "source": "poetry"},
]
SPLIT = "data/x/test.jsonl"


def ids_of(records):
    return [r["id"] for r in records]


def pick(**fields):
    return select([dict(r) for r in RECORDS], EvalConfig(**fields), SPLIT)


@pytest.mark.parametrize("where, expected", [
    ("context=with", ["kd-000001", "ki-01-translate"]),
    ("context=without,lang=en", ["kd-000002"]),
    ("lang=zh", ["kd-000003", "p-000009"]),
    (" task=translate ", ["ki-01-translate"]),  # the id's last part when there is no task field
    ("task=continue", ["p-000009"]),  # the task field
    ("source=kd,context=without", ["kd-000002", "kd-000003"]),
    ("", ids_of(RECORDS)),
])
def test_where_ands_its_conditions(where, expected):
    assert ids_of(pick(where=where)) == expected


@pytest.mark.parametrize("where, message", [
    ("contxt=with", "eval.where: unknown key 'contxt' in 'contxt=with'; valid: context, lang, task, source"),
    ("context=maybe", "eval.where: context=maybe: valid values are with, without"),
    ("lang", "eval.where: 'lang' needs a value"),
    ("lang=en,lang=zh", "eval.where: 'lang' is given twice"),
])
def test_bad_where_is_one_clear_error(where, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        parse_where(where)


def test_recipe_check_refuses_a_bad_where_at_load_time():
    with pytest.raises(UserError, match=r"quickstart\.yaml: eval\.where: unknown key 'langauge'.*valid: context, lang, task, source"):
        load_recipe("quickstart", ["eval.where=langauge=en"])
    assert load_recipe("quickstart", ["eval.where=context=without,lang=en"]).eval.where == "context=without,lang=en"


def test_ids_file_plain_or_jsonl_keeps_the_split_order(tmp_path):
    plain = tmp_path / "ids.txt"
    plain.write_text("# the translate item first, then a kernel question\nki-01-translate\n\nkd-000001\n", encoding="utf-8")
    assert ids_of(pick(ids=str(plain))) == ["kd-000001", "ki-01-translate"]
    jsonl = tmp_path / "ids.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "note": "x"}) + "\n" for i in ("kd-000003", "kd-000002")), encoding="utf-8")
    assert ids_of(pick(ids=str(jsonl))) == ["kd-000002", "kd-000003"]
    assert read_ids(jsonl) == [(1, "kd-000003"), (2, "kd-000002")]


@pytest.mark.parametrize("content, message", [
    ("kd-000001\nkd-999999\n", r"ids\.txt:2: id 'kd-999999' is not in data/x/test\.jsonl"),
    ("kd-000001\nkd-000001\n", r"ids\.txt:2: id 'kd-000001' is listed twice \(first on line 1\)"),
    ('{"id": "kd-000001"}\n{"name": 3}\n', r"ids\.txt:2: a JSON line needs an 'id'"),
    ('{"id": \n', r"ids\.txt:1: malformed JSON"),
    ("# nothing\n\n", r"eval\.ids: .*ids\.txt lists no ids"),
])
def test_bad_ids_file_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "ids.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        pick(ids=str(path))


def test_missing_ids_file(tmp_path):
    with pytest.raises(UserError, match=r"eval\.ids: .*nope\.txt not found"):
        pick(ids=str(tmp_path / "nope.txt"))


def test_selection_order_ids_where_without_context_then_max_examples(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("kd-000001\nkd-000002\nki-01-translate\n", encoding="utf-8")
    # context=with is judged before the passage is removed: the questions that had one, now asked without it
    chosen = pick(ids=str(path), where="context=with", without_context=True, max_examples=1)
    assert ids_of(chosen) == ["kd-000001"] and chosen[0]["input"] == ""
    assert RECORDS[0]["input"] == "Kernels are notebooks."  # copies: the loaded records are not edited


def test_without_context_changes_every_cache_key_it_touches():
    """run_candidate reuses an answer only for the same row_key, which hashes the prompt: the passage-free prompt of
    the same id is a new key, so a cached answer with the passage is never reused for it."""
    blanked = pick(without_context=True)
    for before, after in zip(RECORDS, blanked):
        assert before["id"] == after["id"]
        assert (row_key(before) == row_key(after)) == (not before["input"])


def test_selection_is_described_for_the_summary_and_report():
    cfg = EvalConfig(where="context=with", without_context=True, max_examples=50)
    summary = selection_summary(cfg, 42)
    assert summary == {"ids_file": None, "where": "context=with", "without_context": True, "max_examples": 50, "examples": 42}
    assert describe(summary) == "where context=with; asked without their passage (eval.without_context); the first 50"
    assert describe(selection_summary(EvalConfig(), 10)) == ""

"""The real datasets in ../shared/data (not part of the project); skipped where that folder is absent."""

import json

import pytest

from gemma_fast.data.pipeline import prepare
from gemma_fast.recipe import load_recipe
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} not present (shared test data lives beside the repo)")
KAGGLE, POETRY = SHARED_DATA / "kaggle_docs", SHARED_DATA / "chinese_poetry"


@pytest.fixture(scope="module")
def embedded_tokenizer():
    from gemma_fast.models.loader import load_tokenizer

    return load_tokenizer("embedded:gemma-3-270m")[1]  # its PromptFormat


def counts_add_up(report):
    return report["records_in"] == sum(report["kept"].values()) + sum(report["dropped"].values())


def test_kaggle_docs_v3_trains_and_v2_tests(tmp_path, embedded_tokenizer):
    recipe = load_recipe("kaggle_docs", [f"data.source={KAGGLE / 'kaggle_docs_QA_v3.json'}",
                                         f"data.test_source={KAGGLE / 'kaggle_docs_QA_v2.json'}", "model=embedded:gemma-3-270m"])
    report = prepare(recipe, tmp_path, embedded_tokenizer)
    assert counts_add_up(report)
    assert report["records_in"] == 1663 + 793
    assert 780 <= report["kept"]["test"] <= 793  # v2 stays the test set, less its few duplicates or over-long records
    assert report["kept"]["train"] > 1400 and report["languages"]["train"] == {"en": report["kept"]["train"]}
    assert not any(k.startswith("bad_record") for k in report["dropped"])
    first = json.loads((tmp_path / "train.jsonl").open().readline())
    assert "\n" not in first["input"] and "  " not in first["input"]  # the recipe's newline/space cleaning ran


@pytest.mark.parametrize("files", ["tang300.json", "songci300.json", "poet.tang.*.json"])
def test_poetry_files_prepare_into_simplified_tasks(tmp_path, embedded_tokenizer, files):
    recipe = load_recipe("chinese_poetry", [f"data.source={POETRY / files}", "model=embedded:gemma-3-270m"])
    report = prepare(recipe, tmp_path, embedded_tokenizer)
    assert counts_add_up(report) and report["kept"]["train"] > 0
    assert not any(k.startswith("bad_record") for k in report["dropped"])
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").open(encoding="utf-8")]
    assert all(r["lang"] == "zh" for r in rows)
    assert {r["id"].rsplit("-", 1)[1] for r in rows} <= {"title", "continue", "author"}
    if files.startswith("poet.tang"):  # traditional source: conversion must leave no common traditional forms
        text = "".join(r["output"] for r in rows[:2000])
        assert not set("們與為國學詩書說時來東門長") & set(text)


def test_kaggle_draw_ignores_the_test_file_and_v2_passages_inside_v3_are_reported(tmp_path):
    def run(test_source, out):  # no length filter: no tokenizer needed, and the subset is drawn from every record
        recipe = load_recipe("kaggle_docs", [f"data.source={KAGGLE / 'kaggle_docs_QA_v3.json'}", f"data.test_source={test_source}",
                                             "model=embedded:gemma-3-270m", "data.length_filter=false", "data.max_records=400"])
        report = prepare(recipe, out)
        assert counts_add_up(report)
        return report, [json.loads(line) for line in (out / "train.jsonl").open()], [json.loads(line) for line in (out / "test.jsonl").open()]

    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"instruction": "What is a kernel?", "input": "", "output": "A notebook."}]))
    _, train_alone, _ = run(other, tmp_path / "a")
    report, train, test = run(KAGGLE / "kaggle_docs_QA_v2.json", tmp_path / "b")
    assert 0 < report["overlaps_test"]["count"] == len(report["overlaps_test"]["ids"])
    assert train == [r for r in train_alone if r["id"] not in report["overlaps_test"]["ids"]]

    fold = lambda text: " ".join(text.split()).casefold()  # noqa: E731
    passages = [fold(r["input"]) for r in train]
    inside = [r["id"] for r in test if fold(r["input"]) and any(fold(r["input"]) in p for p in passages)]  # the slow, obvious way
    found = report["test_passages_in_train"]
    assert found["count"] == found["equal"] + found["contained"] == len(inside) > 300 and found["ids"] == inside[:5]

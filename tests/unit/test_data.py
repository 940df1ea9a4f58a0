import json

import pytest

from gemma_fast.data import detect_lang, load_records, prepare, split_records
from gemma_fast.errors import UserError
from gemma_fast.io import write_json
from gemma_fast.recipe import load_recipe


def write_lines(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else (line + "\n").encode() for line in lines))
    return path


def good(i, **extra):
    return json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}", **extra})


def test_records_get_the_schema_ids_and_language(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [good(1), "", json.dumps({"instruction": "李白是谁？", "output": "唐代诗人。"})])
    records = load_records(str(path))
    assert [set(r) for r in records] == [{"id", "instruction", "input", "output", "lang", "source"}] * 2
    assert records[0]["id"] == "d-000001" and records[1]["id"] == "d-000003"  # line numbers, blank line skipped
    assert [r["lang"] for r in records] == ["en", "zh"]


@pytest.mark.parametrize("lines, message", [
    ([good(1), '{"instruction": "q", "output": '], r"d\.jsonl:2:\d+: malformed JSON"),
    ([good(1), json.dumps({"instruction": "q"})], r"d\.jsonl:2: missing required field 'output'"),
    ([json.dumps({"instruction": "q", "output": 3})], r"d\.jsonl:1: field 'output' must be a string, got int"),
    ([json.dumps({"instruction": "q", "output": "  "})], r"d\.jsonl:1: field 'output' is empty"),
    ([good(1, id="x"), good(2, id="x")], r"d\.jsonl:2: duplicate id 'x' \(first at line 1\)"),
    ([good(1), b'{"instruction": "q", "output": "\xff"}\n'], r"d\.jsonl:2: not valid UTF-8"),
    ([], r"d\.jsonl: the file has no records"),
    (["[1, 2]"], r"d\.jsonl:1: expected a JSON object, got list"),
])
def test_bad_input_names_file_line_and_field(tmp_path, lines, message):
    path = write_lines(tmp_path / "d.jsonl", lines)
    with pytest.raises(UserError, match=message):
        load_records(str(path))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="data source not found"):
        load_records(str(tmp_path / "nope.jsonl"))


def test_split_is_seeded_disjoint_and_complete():
    records = [{"id": str(i)} for i in range(100)]
    a, b = split_records(records, 0.1, 0.2, seed=1), split_records(records, 0.1, 0.2, seed=1)
    assert a == b and {k: len(v) for k, v in a.items()} == {"test": 20, "val": 10, "train": 70}
    ids = [r["id"] for split in a.values() for r in split]
    assert sorted(ids, key=int) == [str(i) for i in range(100)]
    assert split_records(records, 0.1, 0.2, seed=2) != a
    with pytest.raises(UserError, match="must each be in"):
        split_records(records, 0.5, 0.5, seed=1)


def test_prepare_is_byte_identical_and_reports_counts(tmp_path):
    recipe = load_recipe("quickstart")
    out1, out2 = tmp_path / "a", tmp_path / "b"
    report = prepare(recipe, out1)
    prepare(recipe, out2)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()
    assert report["records_in"] == sum(report["splits"].values()) + report["dropped"]["max_records"]
    assert report["splits"]["train"] >= 120 and report["splits"]["test"] >= 40  # the floor for the demo data
    assert (out1 / "recipe.yaml").is_file() and (out1 / "prep_report.json").is_file()


def test_a_failed_write_leaves_the_earlier_file_intact(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_detect_lang():
    assert detect_lang("床前明月光，疑是地上霜。") == "zh"
    assert detect_lang("Hello world") == "en"

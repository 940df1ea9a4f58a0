import csv
import functools
import http.server
import json
import threading

import pytest

from gemma_fast.data.pipeline import passages_in_train, prepare, split_records
from gemma_fast.lang import detect_lang
from gemma_fast.errors import UserError
from gemma_fast.io import write_json
from gemma_fast.recipe import load_recipe


def write_lines(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else (line + "\n").encode() for line in lines))
    return path


def qa(i, **extra):
    return json.dumps({"instruction": f"question {i}?", "input": "", "output": f"answer {i}.", **extra}, ensure_ascii=False)


@pytest.fixture
def recipe_for(tiny_model_dir):
    """A recipe reading `source` with the tiny model's tokenizer for the length filter."""
    def make(source, *overrides):
        return load_recipe("quickstart", [f"data.source={source}", f"model={tiny_model_dir}", "train.max_seq_length=128", *overrides])
    return make


def read_split(out, name):
    return [json.loads(line) for line in (out / f"{name}.jsonl").open(encoding="utf-8")]


def test_records_get_the_schema_ids_and_language(tmp_path, recipe_for):
    path = write_lines(tmp_path / "d.jsonl", [qa(1), "", json.dumps({"instruction": "李白是谁？", "output": "唐代诗人。"}, ensure_ascii=False)])
    report = prepare(recipe_for(path, "data.test_fraction=0", "data.val_fraction=0"), tmp_path / "out")
    rows = sorted(read_split(tmp_path / "out", "train"), key=lambda r: r["id"])
    assert [list(r) for r in rows] == [["id", "instruction", "input", "output", "lang", "source"]] * 2
    assert [r["id"] for r in rows] == ["d-000001", "d-000002"]  # the row ordinal in the source; blank lines do not count
    assert [r["lang"] for r in rows] == ["en", "zh"]
    assert report["records_in"] == 2 and report["kept"]["train"] == 2


@pytest.mark.parametrize("lines, message", [
    ([qa(1), '{"instruction": "q", "output": '], r"d\.jsonl:2:\d+: malformed JSON"),
    ([qa(1), json.dumps({"instruction": "q"})], r"d\.jsonl:2: missing required field 'output'"),
    ([json.dumps({"instruction": "q", "output": 3})], r"d\.jsonl:1: field 'output' must be a string, got int"),
    ([json.dumps({"instruction": "q", "output": "  "})], r"d\.jsonl:1: field 'output' is empty"),
    ([qa(1, id="x"), qa(2, id="x")], r"d\.jsonl:2: duplicate id 'x' \(first at .*d\.jsonl:1\)"),
    ([qa(1), b'{"instruction": "q", "output": "\xff"}\n'], r"d\.jsonl:2: not valid UTF-8"),
    (["[1, 2]"], r"d\.jsonl:1: expected an object, got list"),
])
def test_bad_records_name_file_line_and_field(tmp_path, recipe_for, lines, message):
    out = tmp_path / "out"
    prepare(recipe_for(write_lines(tmp_path / "good.jsonl", [qa(i) for i in range(10)])), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match=message):
        prepare(recipe_for(write_lines(tmp_path / "d.jsonl", lines)), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # a failed run leaves earlier outputs intact


def test_skip_mode_counts_every_bad_record_by_reason(tmp_path, recipe_for):
    lines = [qa(1), "{broken", json.dumps({"instruction": "q"}), json.dumps({"instruction": "q", "output": ""}),
             b'{"instruction": "\xff"}\n', qa(2, id="dup"), qa(3, id="dup"), qa(4), qa(4), "[]"]
    report = prepare(recipe_for(write_lines(tmp_path / "d.jsonl", lines), "data.on_bad_record=skip"), tmp_path / "out")
    assert report["dropped"] == {
        "bad_record:unreadable": 2, "bad_record:missing_field": 1, "bad_record:empty_output": 1,
        "bad_record:duplicate_id": 1, "bad_record:wrong_type": 1, "duplicate_exact": 1,
    }
    assert report["records_in"] == 10 == sum(report["kept"].values()) + sum(report["dropped"].values())


@pytest.mark.parametrize("content, message", [(b"", "the file is empty"), (b"[]", "the source has no records"),
                                              (b"[1, ", "malformed JSON")])
def test_empty_and_malformed_json_files(tmp_path, recipe_for, content, message):
    path = tmp_path / "d.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        prepare(recipe_for(path), tmp_path / "out")


def test_missing_source_and_unknown_settings(tmp_path, recipe_for):
    with pytest.raises(UserError, match="data source not found"):
        prepare(recipe_for(tmp_path / "nope.jsonl"), tmp_path / "out")
    path = write_lines(tmp_path / "d.jsonl", [qa(1)])
    with pytest.raises(UserError, match="data.clean: unknown rule 'emoji'; valid: html, markdown"):
        prepare(recipe_for(path, "data.clean=[emoji]"), tmp_path / "out")
    with pytest.raises(UserError, match="cannot load hub dataset no-such/dataset"):
        prepare(recipe_for("no-such/dataset"), tmp_path / "out")


def test_exact_and_normalized_dedup_and_test_overlap(tmp_path, recipe_for):
    train = write_lines(tmp_path / "t.jsonl", [qa(1), qa(1), json.dumps({"instruction": "Question 1 ?", "output": "ANSWER 1"}),
                                               qa(2), qa(3)])
    test = write_lines(tmp_path / "test.jsonl", [qa(3)])
    report = prepare(recipe_for(train, f"data.test_source={test}", "data.val_fraction=0"), tmp_path / "out")
    assert report["dropped"] == {"duplicate_exact": 1, "duplicate_normalized": 1, "overlaps_test": 1}
    assert report["kept"] == {"train": 2, "val": 0, "test": 1}
    report = prepare(recipe_for(train, "data.dedup=exact", "data.test_fraction=0", "data.val_fraction=0"), tmp_path / "o2")
    assert report["dropped"] == {"duplicate_exact": 1}


def test_cleaning_rules_keep_cjk_punctuation(tmp_path, recipe_for):
    row = {"instruction": "<b>What</b> is **bold**?\n\nSee [docs](http://x) @kaggle", "output": "床前明月光，疑是地上霜。「好」！"}
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(row, ensure_ascii=False)])
    prepare(recipe_for(path, "data.clean=[html,markdown,mentions,newlines,spaces]", "data.test_fraction=0", "data.val_fraction=0"), tmp_path / "o")
    (record,) = read_split(tmp_path / "o", "train")
    assert record["instruction"] == "What is bold? See docs"
    assert record["output"] == "床前明月光，疑是地上霜。「好」！"


def test_length_filter_uses_the_model_tokenizer(tmp_path, recipe_for, tiny_prompts):
    rows = [qa(1), json.dumps({"instruction": "long?", "output": "word " * 300})]
    report = prepare(recipe_for(write_lines(tmp_path / "d.jsonl", rows), "data.test_fraction=0", "data.val_fraction=0"), tmp_path / "o")
    assert report["dropped"] == {"too_long": 1} and report["kept"]["train"] == 1
    record = {"instruction": "question 1?", "input": "", "output": "answer 1."}
    assert tiny_prompts.example_lengths([record]) == [len(tiny_prompts.example(record, 10_000)["input_ids"])]
    assert report["tokens"]["train"]["mean"] == tiny_prompts.example_lengths([record])[0]


def test_csv_with_a_column_mapping_and_parquet(tmp_path, recipe_for):
    path = tmp_path / "faq.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerows([["How?", "Like this."], ["Why?", "Because."], ["Who?", ""]])
    report = prepare(recipe_for(path, "data.columns={instruction: question, output: answer}", "data.on_bad_record=skip",
                                "data.test_fraction=0", "data.val_fraction=0"), tmp_path / "o")
    assert report["kept"]["train"] == 2 and report["dropped"] == {"bad_record:empty_output": 1}
    with pytest.raises(UserError, match=r"faq\.csv:4: field 'output' is empty"):
        prepare(recipe_for(path, "data.columns={instruction: question, output: answer}"), tmp_path / "o")

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)]), tmp_path / "d.parquet")
    assert prepare(recipe_for(tmp_path / "d.parquet"), tmp_path / "o3")["records_in"] == 5


def test_url_sources_are_downloaded_once_into_the_cache(tmp_path, recipe_for, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    write_lines(served / "remote.jsonl", [qa(i) for i in range(6)])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GEMMA_FAST_CACHE", str(tmp_path / "cache"))
    try:
        url = f"http://127.0.0.1:{server.server_port}/remote.jsonl"
        assert prepare(recipe_for(url), tmp_path / "o")["records_in"] == 6
    finally:
        server.shutdown()
    assert len(list((tmp_path / "cache" / "downloads").rglob("remote.jsonl"))) == 1
    assert prepare(recipe_for(url), tmp_path / "o2")["records_in"] == 6  # server gone: the cached copy is used


def test_split_is_seeded_disjoint_and_complete():
    records = [{"id": str(i)} for i in range(100)]
    a, b = split_records(records, 0.1, 0.2, seed=1), split_records(records, 0.1, 0.2, seed=1)
    assert a == b and {k: len(v) for k, v in a.items()} == {"test": 20, "val": 10, "train": 70}
    assert sorted((r["id"] for split in a.values() for r in split), key=int) == [str(i) for i in range(100)]
    assert split_records(records, 0.1, 0.2, seed=2) != a
    with pytest.raises(UserError, match="must each be in"):
        split_records(records, 0.5, 0.5, seed=1)


def test_prepare_is_byte_identical_and_reports_counts(tmp_path):
    recipe = load_recipe("quickstart")
    from gemma_fast.testing.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    report = prepare(recipe, tmp_path / "a", tok)
    prepare(recipe, tmp_path / "b", tok)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "prep_report.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert report["records_in"] == sum(report["kept"].values()) + sum(report["dropped"].values())
    assert report["kept"]["train"] >= 120 and report["kept"]["test"] >= 40  # the floor for the demo data


def test_a_failed_write_leaves_the_earlier_file_intact(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # like a plain open(), not mkstemp's 0600


def test_detect_lang():
    assert detect_lang("床前明月光，疑是地上霜。") == "zh"
    assert detect_lang("Hello world") == "en"


def test_train_split_does_not_depend_on_the_test_file(tmp_path, recipe_for):
    source = write_lines(tmp_path / "d.jsonl", [qa(i) for i in range(40)])

    def run(name, rows):  # the same recipe, seed and subset size each time; only the test file differs
        test = write_lines(tmp_path / f"{name}.jsonl", [json.dumps(r) for r in rows])
        report = prepare(recipe_for(source, "data.max_records=20", "data.val_fraction=0.2", f"data.test_source={test}"), tmp_path / name)
        assert report["records_in"] == sum(report["kept"].values()) + sum(report["dropped"].values())
        return report, read_split(tmp_path / name, "train"), read_split(tmp_path / name, "val")

    report, train, val = run("unrelated", [{"instruction": f"other {i}?", "output": "x"} for i in range(3)])
    assert report["overlaps_test"] == {"count": 0, "ids": {}} and len(train) + len(val) == 20
    drawn = {r["id"] for r in train + val}
    undrawn = [{"instruction": f"question {i}?", "output": f"answer {i}."} for i in range(40) if f"d-{i + 1:06d}" not in drawn]
    report, train2, _ = run("undrawn", undrawn[:5])  # before the fix these shrank the pool and changed the draw
    assert train2 == train and report["dropped"] == {"subset": 20}

    dups = [train[0], train[3], val[0]]
    rows = [{"instruction": r["instruction"].upper(), "output": r["output"]} for r in dups]  # normalized copies
    report, train3, val3 = run("dups", rows)
    assert train3 == [r for r in train if r["id"] not in {train[0]["id"], train[3]["id"]}] and val3 == val[1:]
    assert report["overlaps_test"] == {"count": 3, "ids": {dups[0]["id"]: "dups-000001", dups[1]["id"]: "dups-000002",
                                                           dups[2]["id"]: "dups-000003"}}
    assert report["dropped"] == {"subset": 20, "overlaps_test": 3}


def test_test_passages_inside_training_passages_are_counted_not_dropped(tmp_path, recipe_for):
    def rows(passages, prefix):
        return [json.dumps({"instruction": f"{prefix} {i}?", "input": p, "output": "a"}) for i, p in enumerate(passages)]

    train = write_lines(tmp_path / "t.jsonl", rows(["Kaggle Notebooks run Python.\n They have GPUs.", "Datasets are versioned."], "q"))
    test = write_lines(tmp_path / "test.jsonl", rows([
        "kaggle notebooks   run python. they have GPUS.",  # equal once case and white space are folded
        "They have GPUs.",  # inside the first passage
        "Competitions have leaderboards.",  # in no training passage
        "",  # no passage: nothing to compare
        "run Python. They",  # inside, cut mid-sentence
        "They have GPUs. Datasets",  # spans two training passages: not inside either
    ], "other"))
    report = prepare(recipe_for(train, f"data.test_source={test}", "data.val_fraction=0"), tmp_path / "o")
    assert report["test_passages_in_train"] == {"count": 3, "equal": 1, "contained": 2, "ids": ["test-000001", "test-000002", "test-000005"]}
    assert report["kept"]["test"] == 6 and report["dropped"] == {}
    many = [{"id": f"x{i}", "input": "they have gpus."} for i in range(9)]
    assert passages_in_train(read_split(tmp_path / "o", "train"), many) == {
        "count": 9, "equal": 0, "contained": 9, "ids": ["x0", "x1", "x2", "x3", "x4"]}  # a few example ids, all counted


def test_context_dropout_hides_the_passage_of_a_seeded_share_of_train_records_only(tmp_path, recipe_for, tiny_prompts):
    from gemma_fast.data.pipeline import load_split

    rows = [qa(i, input=f"Passage {i}." if i % 5 else "") for i in range(60)]  # every fifth record has no passage
    source = write_lines(tmp_path / "d.jsonl", rows)
    settings = ["data.val_fraction=0.2", "data.test_fraction=0.2"]
    plain = prepare(recipe_for(source, *settings), tmp_path / "plain")
    report = prepare(recipe_for(source, *settings, "data.context_dropout=0.5"), tmp_path / "half")
    train = load_split(tmp_path / "half", "train")  # what training reads
    hidden = [r for r in train if "dropped_context" in r]
    with_passage = [r for r in read_split(tmp_path / "plain", "train") if r["input"]]
    assert len(hidden) == round(0.5 * len(with_passage)) == report["context_dropout"]["train"] > 0
    assert report["context_dropout"]["share"] == 0.5
    assert all(r["input"] == "" and r["dropped_context"] and "Context:" not in tiny_prompts.record_prompt(r).text for r in hidden)
    restored = [{**{k: v for k, v in r.items() if k != "dropped_context"}, "input": r.get("dropped_context", r["input"])} for r in train]
    assert restored == read_split(tmp_path / "plain", "train")  # the same records in the same order, passages kept aside
    for name in ("val", "test"):
        assert read_split(tmp_path / "half", name) == read_split(tmp_path / "plain", name)
    assert report["tokens"]["train"]["mean"] < plain["tokens"]["train"]["mean"]  # lengths of what training sees
    prepare(recipe_for(source, *settings, "data.context_dropout=0.5"), tmp_path / "again")
    assert (tmp_path / "again" / "train.jsonl").read_bytes() == (tmp_path / "half" / "train.jsonl").read_bytes()
    other_seed = prepare(recipe_for(source, *settings, "data.context_dropout=0.5", "seed=7"), tmp_path / "seed7")
    assert other_seed["context_dropout"]["train"] > 0
    assert {r["id"] for r in read_split(tmp_path / "seed7", "train") if "dropped_context" in r} != {r["id"] for r in hidden}


def test_mix_source_adds_a_seeded_share_of_cleaned_train_records(tmp_path, recipe_for):
    source = write_lines(tmp_path / "d.jsonl", [qa(i) for i in range(40)])
    general = [{"instruction": f"Tell me fact {i}.", "context": "", "response": f"Fact {i}."} for i in range(20)]
    general += [{"instruction": "question 3?", "context": "", "response": "answer 3."},  # a copy of a data.source record
                {"instruction": "Long?", "context": "", "response": "word " * 300},  # over train.max_seq_length
                {"instruction": "Empty?", "context": "", "response": " "},
                {"instruction": "<b>Bold</b> fact?", "context": "", "response": "Yes."}]  # cleaned like data.source
    mix = write_lines(tmp_path / "general.jsonl", [json.dumps(r) for r in general])

    def run(name, share, test_rows):
        test = write_lines(tmp_path / f"{name}-test.jsonl", [json.dumps(r) for r in test_rows])
        recipe = recipe_for(source, f"data.test_source={test}", "data.val_fraction=0.2", f"data.mix_source={mix}",
                            "data.mix_format=dolly", f"data.mix_share={share}", "data.on_bad_record=skip", "data.clean=[html,spaces]")
        report = prepare(recipe, tmp_path / name)
        assert report["records_in"] == 40 + 24 + len(test_rows) == sum(report["kept"].values()) + sum(report["dropped"].values())
        for split in ("val", "test"):
            assert not any(r["id"].startswith("mix:") for r in read_split(tmp_path / name, split))
        return report, read_split(tmp_path / name, "train")

    report, train = run("a", 0.2, [{"instruction": "unrelated?", "output": "x"}])
    mixed = [r for r in train if r["id"].startswith("mix:")]
    assert len(train) == 40 and len(mixed) == 8 == report["mix"]["train"] == report["mix"]["wanted"]  # 8 of 40 is 0.2
    assert report["mix"]["train_share"] == 0.2 and report["mix"]["records_in"] == 24
    assert {r["source"] for r in mixed} == {"general"} and {r["source"] for r in train} - {"general"} == {"d"}
    assert report["dropped"] == {"mix:bad_record:empty_output": 1, "mix:duplicate_exact": 1, "mix:too_long": 1, "mix:subset": 13}

    leak = {"instruction": mixed[2]["instruction"].upper(), "output": mixed[2]["output"]}
    report, train2 = run("b", 0.2, [leak])  # a test file that duplicates a drawn mix record takes out just that one
    assert train2 == [r for r in train if r["id"] != mixed[2]["id"]]
    assert report["overlaps_test"]["ids"] == {mixed[2]["id"]: "b-test-000001"} and report["dropped"]["mix:overlaps_test"] == 1
    assert report["mix"]["train"] == 7 and report["mix"]["wanted"] == 8

    report, train = run("c", 0.9, [{"instruction": "unrelated?", "output": "x"}])  # asks for more than there are: all 21
    assert report["mix"]["wanted"] == 288 and report["mix"]["train"] == 21 and "mix:subset" not in report["dropped"]
    assert "Bold fact?" in {r["instruction"] for r in train}
    with pytest.raises(UserError, match=r"general\.jsonl:23: field 'output' is empty"):  # bad mix rows stop the run by default
        prepare(recipe_for(source, f"data.mix_source={mix}", "data.mix_format=dolly", "data.mix_share=0.2"), tmp_path / "d")


def test_shipped_kaggle_instructions_prepare_as_a_test_set_of_36_tasks(tmp_path, recipe_for):
    from collections import Counter

    from gemma_fast.assets.make_kaggle_instructions import records
    from gemma_fast.recipe import EvalConfig
    from gemma_fast.evaluation.selection import record_task, select
    from gemma_fast.data.sources import ASSETS

    shipped = (ASSETS / "kaggle_instructions.jsonl").read_text(encoding="utf-8")
    assert shipped == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records())  # the generator made this file
    train = write_lines(tmp_path / "train.jsonl", [qa(i) for i in range(10)])
    report = prepare(recipe_for(train, "data.test_source=asset:kaggle_instructions.jsonl", "data.length_filter=false"), tmp_path / "out")
    test = read_split(tmp_path / "out", "test")
    assert report["kept"]["test"] == 36 and len({r["id"] for r in test}) == 36  # nothing dropped as bad or duplicate
    assert Counter(record_task(r) for r in test) == {"translate": 12, "paraphrase": 12, "summarise": 12}
    assert all(r["input"] and r["lang"] == "en" and r["source"] == "kaggle_instructions" for r in test)
    assert Counter(r["instruction"] for r in test if record_task(r) == "translate") == {
        f"Translate this sentence into {lang}.": 4 for lang in ("French", "Spanish", "German")}
    chosen = select(test, EvalConfig(where="task=translate"), tmp_path / "out" / "test.jsonl")
    assert [r["id"] for r in chosen] == [f"ki-{n:02d}-translate" for n in range(1, 13)]

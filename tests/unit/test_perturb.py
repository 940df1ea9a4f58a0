"""Perturbations: deterministic under a seed, doing measurably what they say, never touching the reference."""

import json
import unicodedata

import pytest

from gemma_fast.errors import UserError
from gemma_fast.io import write_jsonl
from gemma_fast.evaluation.perturb import REGISTRY, Context, apply_spec, parse_spec
from tests.conftest import SHARED_DATA

EN = {"id": "e1", "lang": "en", "instruction": "How do I submit a notebook to the competition leaderboard?",
      "input": "Open the notebook. Click Submit. Your score appears on the leaderboard!", "output": "Click Submit."}
ZH = {"id": "z1", "lang": "zh", "instruction": "这首诗的作者是谁？", "input": "床前明月光，疑是地上霜。举头望明月，低头思故乡。", "output": "李白"}
MODEL_FREE = [name for name, p in REGISTRY.items() if p.batch is None]


@pytest.mark.parametrize("name", MODEL_FREE)
def test_every_perturbation_is_deterministic_and_keeps_the_reference(name):
    a = apply_spec(name, [EN, ZH], seed=7)
    assert a == apply_spec(name, [ZH, EN], seed=7)[::-1]  # per-record streams: order does not matter
    assert a == apply_spec(name, [EN, ZH], seed=7)
    assert [r["output"] for r in a] == ["Click Submit.", "李白"] and [r["id"] for r in a] == ["e1", "z1"]


def test_each_perturbation_changes_what_it_says():
    one = lambda spec, rec=EN: apply_spec(spec, [rec], seed=1)[0]  # noqa: E731
    assert one("context_removal")["input"] == "" and one("context_removal")["instruction"] == EN["instruction"]
    assert sorted(one("sentence_shuffle")["input"].split(". ")) != [] and set(one("sentence_shuffle")["input"].split()) == set(EN["input"].split())
    assert "cafeteria" in one("distractor")["input"] and "食堂" in one("distractor", ZH)["input"]
    assert one("punct_removal")["instruction"] == EN["instruction"][:-1]
    assert one("punct_removal", ZH)["instruction"] == "这首诗的作者是谁"
    assert one("punct_width")["instruction"].endswith("？") and one("punct_width", ZH)["instruction"].endswith("?")
    assert one("paraphrase")["instruction"] != EN["instruction"] and EN["instruction"] in one("paraphrase")["instruction"]
    assert one("casing:1.0")["instruction"] == EN["instruction"].swapcase()
    assert one("casing:0")["instruction"] == EN["instruction"]
    assert "比赛" in one("code_switch:1.0")["instruction"] and "author" in one("code_switch:1.0", ZH)["instruction"]
    assert one("whitespace:0")["instruction"] == EN["instruction"] and len(one("whitespace:1")["instruction"]) > 2 * len(EN["instruction"])
    assert "舉頭望明月，低頭思故鄉" in one("s2t", ZH)["input"]
    assert one("t2s", one("s2t", ZH))["input"] == ZH["input"]


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3])
def test_observed_typo_rate_matches_p(rate):
    """Random text (so the alignment is unambiguous); a swap edits two characters, a drop or an insert one, so the
    expected number of edited characters is p x letters x (2 + 1 + 1) / 3."""
    import difflib
    import random
    import string

    rng = random.Random(0)
    records = [{**EN, "id": f"r{i}", "instruction": "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(2000))}
               for i in range(5)]
    letters = sum(ch.isalpha() for r in records for ch in r["instruction"])
    edited = 0
    for before, after in zip(records, apply_spec(f"typos:{rate}", records, seed=3)):
        ops = difflib.SequenceMatcher(None, before["instruction"], after["instruction"], autojunk=False).get_opcodes()
        edited += sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")
    observed = edited / (letters * 4 / 3)
    assert abs(observed - rate) < 0.2 * rate, observed


def test_composition_and_bad_specs():
    composed = apply_spec("casing:1.0+punct_removal", [EN], seed=1)[0]["instruction"]
    assert composed == EN["instruction"].swapcase()[:-1]
    assert [p.name for p, _ in parse_spec("typos:0.1+casing")] == ["typos", "casing"]
    with pytest.raises(UserError, match="unknown perturbation 'typo'; valid: t2s, s2t"):
        parse_spec("typo:0.1")
    with pytest.raises(UserError, match="rate 1.5 is outside \\[0, 1\\]"):
        parse_spec("typos:1.5")
    with pytest.raises(UserError, match="rate 'x' is not a number"):
        parse_spec("typos:x")
    with pytest.raises(UserError, match="takes no rate"):
        parse_spec("s2t:0.5")


def test_translation_from_a_parallel_file(tmp_path):
    write_jsonl(tmp_path / "zh.jsonl", [{"id": "e1", "instruction": "我如何提交笔记本？"}])
    assert apply_spec("translate", [EN], 1, Context(str(tmp_path / "zh.jsonl")))[0]["instruction"] == "我如何提交笔记本？"
    with pytest.raises(UserError, match="does not cover 1 of the 2 test ids \\(e.g. z1\\)"):
        apply_spec("translate", [EN, ZH], 1, Context(str(tmp_path / "zh.jsonl")))
    with pytest.raises(UserError, match="needs robustness.parallel_file"):
        apply_spec("translate", [EN], 1, Context(""))


@pytest.mark.skipif(not (SHARED_DATA / "chinese_poetry").is_dir(), reason="../shared/data not present")
def test_traditional_simplified_round_trip_on_tang_poems():
    """t2s is many-to-one (e.g. 後/后 both -> 后), so s2t cannot restore every character; it must restore nearly all,
    keep every line's length, and never touch punctuation."""
    poems = json.loads((SHARED_DATA / "chinese_poetry" / "poet.tang.0.json").read_text(encoding="utf-8"))[:300]
    records = [{"id": str(i), "lang": "zh", "instruction": "", "input": "\n".join(p["paragraphs"]), "output": p["author"]}
               for i, p in enumerate(poems)]
    back = apply_spec("s2t", apply_spec("t2s", records, 1), 1)
    same = total = 0
    for a, b in zip(records, back):
        assert len(a["input"]) == len(b["input"])
        for x, y in zip(a["input"], b["input"]):
            if unicodedata.category(x).startswith("P") or x == "\n":
                assert x == y
            total += 1
            same += x == y
    simplified = apply_spec("t2s", records, 1)
    assert sum(a["input"] != s["input"] for a, s in zip(records, simplified)) > 250  # the conversion really ran
    assert same / total > 0.98, same / total


def test_model_steps_run_in_the_order_written_and_skip_in_a_dry_run():
    """self_translate+casing:1.0 flips the case of the translation, not of the original question."""
    translator = lambda questions, target: [f"({target}) {q}" for q in questions]  # noqa: E731
    done = apply_spec("self_translate+casing:1.0", [EN], 1, Context(translate_to="fr", translator=translator))[0]
    assert done["instruction"] == f"(fr) {EN['instruction']}".swapcase() and done["output"] == EN["output"]
    dry = apply_spec("self_translate", [EN], 1, Context())[0]  # no model yet: nothing translated, files still checked
    assert dry == EN

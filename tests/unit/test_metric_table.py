"""Adding a metric is one function plus one row of metrics.METRICS: scores, summary, report, plot and robustness
follow without another edit."""

import json

from gemma_fast.evaluation import metrics as M
from gemma_fast.evaluation.run import score_file
from gemma_fast.io import write_jsonl
from gemma_fast.recipe import load_recipe


def answer_words(record: dict, prediction: str) -> float:  # the toy metric: how long the answer is, in words
    return float(len(prediction.split()))


def test_a_new_metric_is_one_function_and_one_row(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "METRICS", M.METRICS + (M.Metric("answer_words", "record", answer_words, higher_is_better=False,
                                                            plot=True),))
    rows = [{"id": f"q{i}", "instruction": f"Question {i}?", "input": "", "output": "It is ready.", "lang": "en"} for i in range(4)]
    write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"id": f"q{i}", "prediction": "yes " * (i + 1)}) + "\n" for i in range(4)))
    recipe = load_recipe("quickstart", [f"data.dir={tmp_path / 'data'}", "robustness.metric=answer_words",
                                        "eval.min_n=1"])  # a valid choice now

    summary = score_file(recipe, predictions, tmp_path / "eval")
    assert summary["models"]["predictions"]["overall"]["answer_words"]["mean"] == 2.5  # (1 + 2 + 3 + 4) / 4
    assert "| answer_words | 2.500 [" in (tmp_path / "eval" / "report.md").read_text()  # a row of the report
    per_question = [json.loads(line)["predictions"]["answer_words"] for line in (tmp_path / "eval" / "predictions.jsonl").open()]
    assert per_question == [1.0, 2.0, 3.0, 4.0]
    assert "answer_words" in [m.name for m in M.metrics(plot=True)] and not M.by_name("answer_words").higher_is_better


def test_the_table_knows_each_direction_and_level():
    lower = {m.name for m in M.METRICS if not m.higher_is_better}
    assert {"answer_loss", "perplexity", "perplexity_char"} <= lower and "rougeL" not in lower
    assert {m.name for m in M.metrics(level="corpus")} == {"corpus_bleu", "corpus_chrf"}
    assert not set(M.headline_names()) & set(M.headline_names("llamafactory"))
    assert len({m.name for m in M.METRICS}) == len(M.METRICS)  # one row per name

"""Golden losses (torchtune's habit): tiny Gemma 3 + the tiny tokenizer, fixed seed, CPU float32, three steps on the
default path (padding-free batches, answer-position loss). The three logged losses and one record's answer-token
statistics must stay what they were when this test was written, to 1e-4: a drift in a label mask, the loss, the
attention path, or a transformers / TRL upgrade shows up here even when a parity test's two sides drift together.
Change GOLDEN only for a change that is meant to move these numbers, and say why in the commit."""

import json

import pytest

from gemma_fast.io import write_jsonl
from gemma_fast.recipe import load_recipe
from gemma_fast.testing.tiny import save_tiny_model

# Measured on this commit (torch 2.13.0 CPU, transformers 5.23.0, trl 1.16.0, peft 0.21.2; 1 and 2 threads alike)
GOLDEN = {"losses": [6.044416427612305, 5.925487041473389, 5.854775428771973],
          "stats": {"loss_sum": 151.25561618804932, "n_tokens": 26, "n_correct": 8}}
RECORDS = [{"id": f"g{i}", "instruction": f"What does step {i} of the gemma fast recipe do?", "input": "ctx " * (i % 3),
            "output": f"It trains the adapter for {i} more steps and evaluates it.", "lang": "en", "source": "golden"}
           for i in range(12)]


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    return run_three_steps(tmp_path_factory.mktemp("golden"))


def run_three_steps(root):
    from gemma_fast.training.run import train

    model = save_tiny_model("gemma3", root / "model", seed=0)
    for split, rows in (("train", RECORDS[:8]), ("val", RECORDS[8:10]), ("test", RECORDS[10:])):
        write_jsonl(root / "data" / f"{split}.jsonl", rows)
    recipe = load_recipe("quickstart", [f"model={model}", f"data.dir={root / 'data'}", "seed=7", "train.max_steps=3",
                                        "train.batch_size=4", "train.max_seq_length=128", "train.lr=1e-2", "lora.r=4",
                                        "lora.alpha=8", "lora.dropout=0", "train.logging_steps=1", "train.warmup_ratio=0"])
    summary = train(recipe, root / "run")
    rows = [json.loads(line) for line in (root / "run" / "metrics.jsonl").open()]
    return recipe, root, summary, [r["loss"] for r in rows if "loss" in r]


def answer_stats_of(recipe, run):
    from peft import PeftModel

    from gemma_fast.training.loss import answer_token_stats
    from gemma_fast.models.loader import load_model

    loaded = load_model(recipe.model, "hf", recipe.train.max_seq_length)
    model = PeftModel.from_pretrained(loaded.model, str(run / "adapter"))
    (stat,) = answer_token_stats(model, loaded.prompts, [RECORDS[10]], recipe.train.max_seq_length)
    return stat


def test_three_steps_give_the_golden_losses_and_answer_stats(golden_run):
    recipe, root, summary, losses = golden_run
    assert summary["batches"] == "padding-free, attention per example" and summary["loss_path"] == "answer-positions"
    assert losses == pytest.approx(GOLDEN["losses"], abs=1e-4)
    stat = answer_stats_of(recipe, root / "run")
    assert stat["n_tokens"] == GOLDEN["stats"]["n_tokens"] and stat["n_correct"] == GOLDEN["stats"]["n_correct"]
    assert stat["loss_sum"] == pytest.approx(GOLDEN["stats"]["loss_sum"], abs=1e-4)


def _shifted_mask(monkeypatch):
    from gemma_fast.prompts import PromptFormat

    real = PromptFormat.example
    monkeypatch.setattr(PromptFormat, "example", lambda self, r, n: (lambda e: {**e, "completion_mask": [0] + e["completion_mask"][:-1]})(real(self, r, n)))


def _loss_scaled(monkeypatch):
    import gemma_fast.training.loss as L

    real = L.head_cross_entropy
    monkeypatch.setattr(L, "head_cross_entropy", lambda h, w, t, softcap=None, chunk=None: real(h * 1.001, w, t, softcap, chunk))


def _attention_scaled(monkeypatch):
    import gemma_fast.training.varlen as V

    real = V._attend
    monkeypatch.setattr(V, "_attend", lambda q, k, v, scaling, *a: real(q, k, v, scaling * 1.01, *a))


@pytest.mark.parametrize("plant", [_shifted_mask, _loss_scaled, _attention_scaled],
                         ids=["label-mask", "loss", "attention"])
@pytest.mark.slow  # three trainings more: the full tier; the golden losses themselves stay fast
def test_a_planted_drift_moves_the_golden_losses(plant, tmp_path, monkeypatch):
    """The golden numbers are sensitive: a one-position mask shift, a 0.1% change in the loss's hidden states and a 1%
    change in the attention scale each move at least one of the three losses by more than 1e-4."""
    plant(monkeypatch)
    monkeypatch.setattr("gemma_fast.training.run.FirstBatchCheck.check", lambda *a, **k: None)  # the guard would stop the mask
    losses = run_three_steps(tmp_path)[3]
    assert max(abs(a - b) for a, b in zip(losses, GOLDEN["losses"])) > 1e-4, losses

import math

import pytest
import torch

from gemma_fast.training.loss import answer_token_stats
from gemma_fast.evaluation.metrics import bootstrap_ratio


def test_perplexity_is_exp_of_token_weighted_loss():
    import numpy as np

    loss = bootstrap_ratio([2.0, 6.0], [1, 3])  # 8 nats over 4 tokens
    ppl = bootstrap_ratio([2.0, 6.0], [1, 3], transform=np.exp)
    assert loss["mean"] == pytest.approx(2.0) and ppl["mean"] == pytest.approx(math.e ** 2)


def test_answer_loss_matches_a_hand_computed_cross_entropy(tiny_prompts, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    records = [{"id": "a", "instruction": "What?", "output": "A model."},
               {"id": "b", "instruction": "A much longer question here?", "output": "Short."}]
    got = [(s["loss_sum"], s["n_tokens"]) for s in answer_token_stats(model, tiny_prompts, records, 128, batch_size=2)]  # padded
    for record, (total, count) in zip(records, got):
        enc = tiny_prompts.example(record, 128)
        ids = torch.tensor([enc["input_ids"]])
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        want = -sum(logp[i - 1, t].item() for i, (t, m) in enumerate(zip(enc["input_ids"], enc["completion_mask"])) if m)
        assert count == sum(enc["completion_mask"])
        assert total == pytest.approx(want, rel=1e-4)


def test_token_accuracy_counts_greedy_hits_on_answer_tokens(tiny_prompts, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    record = {"id": "a", "instruction": "What?", "output": "A model."}
    (stat,) = answer_token_stats(model, tiny_prompts, [record], max_length=128)
    enc = tiny_prompts.example(record, 128)
    logits = model(torch.tensor([enc["input_ids"]])).logits[0]
    hits = sum(int(logits[i - 1].argmax() == t) for i, (t, m) in enumerate(zip(enc["input_ids"], enc["completion_mask"])) if m)
    assert stat["n_correct"] == hits and stat["n_tokens"] == sum(enc["completion_mask"])


def test_bertscore_scores_an_empty_prediction_as_zero():
    """bert_score cannot encode "" (it crashed after all generation was done, and again on every cached rerun)."""
    from gemma_fast.evaluation.metrics import bertscore_f1

    scores = bertscore_f1(["", "   ", "The data is split."], ["Some answer.", "Another.", "The data is split."], "en")
    assert scores[:2] == [0.0, 0.0] and scores[2] > 0.9
    assert bertscore_f1(["", ""], ["a", "b"], "en") == [0.0, 0.0]

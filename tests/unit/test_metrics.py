import math

import pytest
import torch

from gemma_fast.metrics import MixedTokenizer, answer_token_losses, loss_and_perplexity, rouge_l
from gemma_fast.prompts import encode_example


def test_mixed_tokenizer_keeps_chinese_characters():
    assert MixedTokenizer().tokenize("床前明月光, Hello World!") == ["床", "前", "明", "月", "光", "hello", "world"]


def test_rouge_l_known_answers():
    # LCS("the cat sat on the mat", "the cat on the mat") = 5; P = 5/5, R = 5/6, F = 2PR/(P+R) = 10/11
    assert rouge_l(["the cat on the mat"], ["the cat sat on the mat"]) == [pytest.approx(10 / 11)]
    # Chinese, hand-checked: reference 床前明月光 (5), prediction 床前月光 (4): LCS 4, P = 1, R = 0.8, F = 8/9
    assert rouge_l(["床前月光"], ["床前明月光"]) == [pytest.approx(8 / 9)]
    assert rouge_l(["完全不同"], ["床前明月光"]) == [0.0]
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])


def test_perplexity_is_exp_of_token_weighted_loss():
    loss, ppl = loss_and_perplexity([(2.0, 1), (6.0, 3)])  # 8 nats over 4 tokens
    assert loss == pytest.approx(2.0) and ppl == pytest.approx(math.e ** 2)


def test_answer_loss_matches_a_hand_computed_cross_entropy(tiny_tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    records = [{"id": "a", "instruction": "What?", "output": "A model."},
               {"id": "b", "instruction": "A much longer question here?", "output": "Short."}]
    got = answer_token_losses(model, tiny_tokenizer, records, max_length=128, batch_size=2)  # padded batch
    for record, (total, count) in zip(records, got):
        enc = encode_example(tiny_tokenizer, record, 128)
        ids = torch.tensor([enc["input_ids"]])
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        want = -sum(logp[i - 1, t].item() for i, (t, m) in enumerate(zip(enc["input_ids"], enc["completion_mask"])) if m)
        assert count == sum(enc["completion_mask"])
        assert total == pytest.approx(want, rel=1e-4)

"""Evaluation batches by a token budget (batching.token_batches): both caps hold, nothing is lost or repeated."""

import pytest

from gemma_fast.batching import largest_batch_tokens, token_batches


def cost(batch, lengths, extra=0):
    return len(batch) * (max(lengths[i] for i in batch) + extra)


def test_every_index_once_shortest_first():
    lengths = [30, 5, 12, 5, 40, 1]
    batches = token_batches(lengths, max_rows=2)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert flat[1:3] == [1, 3]  # equal lengths keep their order
    assert all(len(b) <= 2 for b in batches)


def test_a_batch_over_the_token_budget_is_split():
    lengths = [100] * 8
    assert token_batches(lengths, max_rows=8) == [list(range(8))]  # no token cap: the row cap alone
    batches = token_batches(lengths, max_rows=8, max_tokens=450, extra=10)
    assert [len(b) for b in batches] == [4, 4]  # 4 x 110 = 440 fits; 5 x 110 does not
    assert all(cost(b, lengths, 10) <= 450 for b in batches)


def test_both_caps_hold_on_mixed_lengths():
    lengths = [3, 7, 7, 20, 50, 51, 90, 200, 210, 211]
    for rows, tokens, extra in [(1, 1000, 0), (3, 256, 32), (16, 600, 64), (4, 10_000, 513)]:
        batches = token_batches(lengths, rows, tokens, extra)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for b in batches:
            assert len(b) <= rows
            assert len(b) == 1 or cost(b, lengths, extra) <= tokens, (rows, tokens, extra, b)


def test_a_prompt_longer_than_the_budget_runs_alone():
    lengths = [10, 10, 5000, 10]
    batches = token_batches(lengths, max_rows=16, max_tokens=100)
    assert [2] in batches and all(len(b) <= 9 for b in batches)  # 9 x 10 <= 100
    assert sum(len(b) for b in batches) == 4


def test_largest_batch_bound_covers_every_batch():
    lengths = list(range(1, 300, 7))
    for rows, tokens, extra in [(16, 2048, 128), (4, 100, 0), (32, 8192, 641)]:
        bound = largest_batch_tokens(rows, tokens, max(lengths) + extra)
        assert max(cost(b, lengths, extra) for b in token_batches(lengths, rows, tokens, extra)) <= bound


@pytest.mark.parametrize("rows, tokens", [(0, 100), (4, 0)])
def test_limits_below_one_are_refused(rows, tokens):
    with pytest.raises(ValueError):
        token_batches([1, 2], rows, tokens)

"""Per-example attention over padding-free rows equals the padded batch: logits, loss and LoRA gradients."""

import pytest
import torch

from gemma_fast.testing.tiny import TINY_SHAPES, tiny_config
from gemma_fast.training.varlen import boundaries, use_varlen

LENGTHS = (7, 23, 12)  # 23 > the sliding window below: the window must be honoured inside an example


def _model(family: str, attn: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(family)
    config.sliding_window = 16  # Gemma 4's global layers (head_dim 32 here, 512 in E2B) have none
    if family == "gemma2":
        config.attn_logit_softcapping = 5.0  # small enough to change the result if it were skipped
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).float()
    return model


def _batches(vocab: int):
    torch.manual_seed(1)
    seqs = [torch.randint(3, vocab, (n,)) for n in LENGTHS]
    width = max(LENGTHS)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(seqs):
        ids[row, : len(s)], mask[row, : len(s)] = s, 1
    packed = torch.cat(seqs)[None]
    position_ids = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    return seqs, ids, mask, packed, position_ids, cu


@pytest.mark.parametrize("family", TINY_SHAPES)
def test_varlen_logits_and_gradients_equal_the_padded_batch(family):
    reference = _model(family, "eager")
    varlen = _model(family, "eager")
    varlen.load_state_dict(reference.state_dict())
    use_varlen(varlen)
    seqs, ids, mask, packed, position_ids, cu = _batches(reference.config.vocab_size)

    padded = reference(input_ids=ids, attention_mask=mask).logits
    flat = varlen(input_ids=packed, position_ids=position_ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                  max_length_q=max(LENGTHS), max_length_k=max(LENGTHS)).logits[0]
    want = torch.cat([padded[row, : len(s)] for row, s in enumerate(seqs)])
    torch.testing.assert_close(flat, want, atol=1e-5, rtol=1e-5)

    want.float().logsumexp(-1).mean().backward()
    flat.float().logsumexp(-1).mean().backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), varlen.named_parameters()):
        if a.grad is None:  # Gemma 3n's AltUp correction_coefs is read as a weight, never called: no gradient either way
            assert b.grad is None, name
            continue
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_boundaries_from_position_ids_when_no_cu_seq_lens():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert boundaries(None, position_ids, 9) == [0, 3, 5, 9]
    assert boundaries(torch.tensor([0, 3, 5, 9]), None, 9) == [0, 3, 5, 9]


def test_a_padded_batch_is_refused_not_mixed_up():
    model = _model("gemma3", "eager")
    use_varlen(model)
    with pytest.raises(RuntimeError, match="padding-free"):
        model(input_ids=torch.ones(2, 5, dtype=torch.long))


def test_boundaries_are_read_once_per_batch_not_per_layer(monkeypatch):
    """Every layer gets the same cu_seq_lens tensor; reading it is a host sync on a GPU, so it is read once per batch.
    A new batch's tensor, or one changed in place, is read again."""
    from gemma_fast.training import varlen

    reads = []
    real = varlen.boundaries
    monkeypatch.setattr(varlen, "boundaries", lambda *a: reads.append(1) or real(*a))
    model = _model("gemma3", "eager")
    use_varlen(model)
    _, _, _, packed, position_ids, cu = _batches(model.config.vocab_size)
    kwargs = dict(input_ids=packed, position_ids=position_ids, max_length_q=max(LENGTHS), max_length_k=max(LENGTHS))
    first = model(**kwargs, cu_seq_lens_q=cu, cu_seq_lens_k=cu).logits
    assert model.config.num_hidden_layers > 1 and len(reads) == 1
    again = model(**kwargs, cu_seq_lens_q=cu.clone(), cu_seq_lens_k=cu).logits  # the next batch: a new tensor
    assert len(reads) == 2 and torch.equal(first, again)
    cu[1:] = torch.tensor([30, 42, 42], dtype=cu.dtype)  # changed in place: not the boundaries cached for it
    assert varlen.cached_boundaries(cu, None, 42) == [0, 30, 42, 42] and len(reads) == 3


def test_padding_free_is_off_on_cuda_until_measured_there(tiny_model_dir, monkeypatch):
    from gemma_fast.models.loader import load_model
    from gemma_fast.training.run import CUDA_PADDING_FREE, Plan, use_padding_free

    loaded = load_model(str(tiny_model_dir), backend="hf")
    plan = Plan("lora", "hf", "adamw_torch")
    monkeypatch.delenv(CUDA_PADDING_FREE, raising=False)
    assert use_padding_free(loaded, plan, True, cuda=True) is False
    assert "measured on CPUs only" in plan.notes[0] and CUDA_PADDING_FREE in plan.notes[0]
    monkeypatch.setenv(CUDA_PADDING_FREE, "1")
    assert use_padding_free(loaded, Plan("lora", "hf", "adamw_torch"), True, cuda=True) is True
    assert use_padding_free(load_model(str(tiny_model_dir), backend="hf"), Plan("lora", "hf", "adamw_torch"), True) is True  # CPU

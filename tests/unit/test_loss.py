"""The answer-position loss (gemma_fast.loss) against the plain full-logits computation, on tiny Gemma 1/2/3."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from gemma_fast.training import loss as L
from gemma_fast.families import FAMILIES
from gemma_fast.testing.tiny import TINY_SHAPES, VARIANTS, tiny_config

TOL = dict(atol=1e-5, rtol=1e-5)
SOFTCAP = 0.25  # the tiny models' logits stay within ±0.5: a cap this low bends them (Gemma 2, 3n and 4 ship 30.0)


def tiny_model(family: str, vocab_size: int = 512, softcap: float | None = None, seed: int = 0):
    """A tiny model of a family or Gemma 4 shape (testing.TINY_SHAPES); `softcap` replaces the final-logit softcap of
    the generations that have one."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, vocab_size)
    if FAMILIES[VARIANTS.get(family, (family,))[0]].final_softcap:
        config.final_logit_softcapping = softcap
    if family == "gemma2":
        config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).float()


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    # init_lora_weights=False: B random too, so every LoRA weight has a non-zero gradient to compare
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    torch.manual_seed(1)
    return get_peft_model(model, config)


def micro_batches(vocab: int, seed: int = 2):
    """Two right-padded micro-batches; in the first, row 1 has no answer token at all."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lengths, answers in (([12, 9, 7], [4, 0, 3]), ([10, 11], [5, 2])):
        width = max(lengths)
        ids = torch.randint(6, vocab, (len(lengths), width), generator=g)
        attention = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, (n, a) in enumerate(zip(lengths, answers)):
            ids[row, n:] = 0
            attention[row, :n] = 1
            labels[row, n - a : n] = ids[row, n - a : n]
        out.append({"input_ids": ids, "attention_mask": attention, "labels": labels})
    return out


def full_logits_loss_sum(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
                                             ignore_index=-100, reduction="sum")


def accumulate(model, batches, loss_sum_fn):
    """Gradient accumulation as Trainer does it with num_items_in_batch: each micro-batch's sum / all answer tokens."""
    num_items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    model.zero_grad()
    losses = []
    for b in batches:
        loss = loss_sum_fn(model, b) / num_items
        loss.backward()
        losses.append(loss.detach())
    # (Gemma 3n's AltUp correction_coefs is read as a weight, not called: LoRA there gets no gradient on either path)
    return torch.stack(losses), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def gathered_loss_sum(model, batch):
    loss_sum, count, _ = L.answer_loss_sum(model, batch["labels"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert count == int((batch["labels"][:, 1:] != -100).sum())
    return loss_sum


@pytest.mark.parametrize("family", TINY_SHAPES)
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_loss_and_gradients_equal_the_full_logits_path(family, adapter):
    """LoRA: every LoRA weight's gradient. Full: every parameter, the tied embedding / head weight included."""
    model = tiny_model(family, softcap=SOFTCAP)
    if adapter == "lora":
        model = with_lora(model)
    model.train()  # dropout is 0 in the tiny configs, so train mode is deterministic
    batches = micro_batches(model.config.vocab_size)
    want_loss, want_grads = accumulate(model, batches, full_logits_loss_sum)
    got_loss, got_grads = accumulate(model, batches, gathered_loss_sum)
    torch.testing.assert_close(got_loss, want_loss, **TOL)
    assert want_grads.keys() == got_grads.keys() and len(want_grads) > 0
    # (Gemma 3n's tiny random init leaves its per-layer-input gates (up to a fifth of the weights) with an exactly zero gradient on both paths)
    assert sum(bool(g.abs().sum() > 0) for g in want_grads.values()) >= 0.75 * len(want_grads)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], **TOL, msg=lambda m: f"{name}: {m}")


def test_softcapping_is_applied():
    """Gemma 2's final logit soft-capping changes the loss; the gathered path must apply it, not skip it."""
    capped, uncapped = tiny_model("gemma2", softcap=SOFTCAP), tiny_model("gemma2", softcap=None)
    batch = micro_batches(512)[0]
    with torch.no_grad():
        assert not torch.allclose(gathered_loss_sum(capped, batch), gathered_loss_sum(uncapped, batch), atol=1e-3)
        torch.testing.assert_close(gathered_loss_sum(capped, batch), full_logits_loss_sum(capped, batch), **TOL)


def test_head_cross_entropy_in_small_chunks_equals_one_chunk():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (37,))
    results = []
    for chunk in (5, 64):
        hidden.grad = weight.grad = None
        total, hits = L.head_cross_entropy(hidden, weight, targets, softcap=3.0, chunk=chunk)
        total.backward()
        results.append((total.detach(), hits, hidden.grad.clone(), weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)
    logits = 3.0 * torch.tanh(hidden.detach() @ weight.detach().T / 3.0)
    torch.testing.assert_close(results[0][0], torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), **TOL)
    assert results[0][1] == int((logits.argmax(-1) == targets).sum())


def test_a_batch_without_answer_tokens_gives_a_zero_loss_that_backpropagates():
    model = with_lora(tiny_model("gemma3"))
    batch = micro_batches(512)[0]
    batch["labels"][:] = -100
    loss_sum, count, _ = L.answer_loss_sum(model, batch["labels"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert count == 0 and loss_sum.item() == 0.0
    (loss_sum / max(count, 1)).backward()  # no error, zero gradients


def test_trainer_loss_equals_trl_sft_trainer(tmp_path, tiny_tokenizer):
    """compute_loss of the answer-position trainer vs TRL's own, with and without num_items_in_batch, train and eval."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = with_lora(tiny_model("gemma3"))
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", completion_only_loss=True, max_length=64)
    batch = micro_batches(512)[0]
    data = Dataset.from_list([{"input_ids": [2, 7, 8, 9], "completion_mask": [0, 0, 1, 1]}])
    plain = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tiny_tokenizer)
    ours = L.answer_only_trainer()(model=model, args=args, train_dataset=data, processing_class=tiny_tokenizer)
    assert plain.model_accepts_loss_kwargs == ours.model_accepts_loss_kwargs
    for training in (True, False):
        model.train(training)
        for num_items in (None, 20):
            want = plain.compute_loss(model, dict(batch), num_items_in_batch=num_items)
            got = ours.compute_loss(model, dict(batch), num_items_in_batch=num_items)
            torch.testing.assert_close(got, want, **TOL)
    assert ours._metrics["train"]["mean_token_accuracy"]


def test_evaluation_stats_equal_the_full_logits_computation(tiny_tokenizer, tiny_prompts):
    from gemma_fast.training.loss import _padded_batch, answer_token_stats, full_logits_stats

    model = with_lora(tiny_model("gemma2", vocab_size=len(tiny_tokenizer), softcap=SOFTCAP))
    records = [{"id": "a", "instruction": "What?", "output": "A model."},
               {"id": "b", "instruction": "A much longer question here, about gemma fast?", "output": "Short."},
               {"id": "c", "instruction": "Why?", "output": "Train a LoRA adapter with train_qlora.py and evaluate it. " * 2}]
    got = answer_token_stats(model, tiny_prompts, records, max_length=42, batch_size=2)  # "c" is cut to 42 tokens
    want = []
    for start in (0, 2):
        want += full_logits_stats(model, *_padded_batch(tiny_prompts.pad_id, [tiny_prompts.example(r, 42) for r in records[start : start + 2]]))
    for g, w in zip(got, want, strict=True):
        assert g["n_tokens"] == w["n_tokens"] > 0 and g["n_correct"] == w["n_correct"]
        assert g["loss_sum"] == pytest.approx(w["loss_sum"], rel=1e-5, abs=1e-5)



def test_evaluation_stats_batched_by_tokens_come_back_in_order(tiny_tokenizer, tiny_prompts):
    """A token budget that fits one example per batch gives each record its own unbatched numbers, in the order given."""
    from gemma_fast.training.loss import answer_token_stats

    model = tiny_model("gemma3", vocab_size=len(tiny_tokenizer))
    records = [{"id": str(i), "instruction": "Why? " * (9 - 2 * i), "output": "Because. " * (i + 1)} for i in range(4)]
    alone = [answer_token_stats(model, tiny_prompts, [r], max_length=128)[0] for r in records]
    budget = answer_token_stats(model, tiny_prompts, records, max_length=128, batch_size=8, batch_tokens=1)
    assert [b["n_tokens"] for b in budget] == [a["n_tokens"] for a in alone] and len({a["n_tokens"] for a in alone}) == 4
    for b, a in zip(budget, alone, strict=True):
        assert b["loss_sum"] == pytest.approx(a["loss_sum"], rel=1e-6) and b["n_correct"] == a["n_correct"]

MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM
    from gemma_fast.testing.tiny import tiny_config
    from gemma_fast.training import loss as L
    from gemma_fast.training.loss import full_logits_stats

    vocab, batch, seq, answer = 200_000, 8, 256, 8
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("gemma3", vocab)).eval()
    ids = torch.randint(6, vocab, (batch, seq))
    attention = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[:, -answer:] = ids[:, -answer:]
    L.answer_stats(model, labels[:1, :16], input_ids=ids[:1, :16], attention_mask=attention[:1, :16])  # warm-up
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
    try:  # reset the peak to now (Linux >= 4.0), so an earlier peak (imports, under memory pressure) is not counted
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status("VmRSS")
    if sys.argv[1] == "gathered":
        stats = L.answer_stats(model, labels, input_ids=ids, attention_mask=attention)
        n = int(stats["n_tokens"].sum())
    else:
        with torch.no_grad():
            n = sum(s["n_tokens"] for s in full_logits_stats(model, ids, attention, labels))
    peak = status("VmHWM")
    print(json.dumps({"extra": peak - before, "answer_tokens": n, "row": vocab * 4, "full": batch * seq * vocab * 4}))
""")


@pytest.mark.slow  # a fresh process measures memory
def test_evaluation_peak_memory_grows_with_answer_tokens_not_vocabulary_times_sequence():
    """A 200k vocabulary, 8 × 256 tokens, 8 answer tokens per row: full logits would be 1.6 GB (and the old
    computation copied them several times). The gathered path holds 64 answer rows of logits (51 MB) at most."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, "gathered"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["answer_tokens"] == 64
    answer_logits = m["answer_tokens"] * m["row"]  # 51 MB: every answer row of logits at once
    assert m["extra"] < 3 * answer_logits + 48 * 2**20, m  # a few copies of the answer rows, plus activations
    assert m["extra"] < m["full"] / 8, m


def test_cpu_precision_is_float32_unless_asked_and_native(monkeypatch):
    from gemma_fast.models.backend import cpu_bf16_native, cpu_precision
    from gemma_fast.errors import UserError

    assert cpu_bf16_native("flags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert cpu_bf16_native("flags\t\t: fpu avx512_bf16\n")
    assert not cpu_bf16_native("flags\t\t: fpu sse avx2 avx512f\n")
    monkeypatch.delenv("GEMMA_FAST_CPU_PRECISION", raising=False)
    assert cpu_precision(bf16_native=True) == "float32" and cpu_precision(bf16_native=False) == "float32"  # measured
    monkeypatch.setenv("GEMMA_FAST_CPU_PRECISION", "bf16-autocast")
    assert cpu_precision(bf16_native=True) == "bf16-autocast"
    with pytest.raises(UserError, match="no native bf16"):
        cpu_precision(bf16_native=False)
    monkeypatch.setenv("GEMMA_FAST_CPU_PRECISION", "fp8")
    with pytest.raises(UserError):
        cpu_precision()

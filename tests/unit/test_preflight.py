"""--plan's engine: the plan a GPU would run (dtype!), the model's shape from its config on the meta device, the
training and evaluation estimates' shape, and their verdicts and fixes."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from gemma_fast.models.architecture import (MODEL_CONFIGS, arch_from_model, config_path, meta_model, read_config, resolve_arch,
                                     shipped_configs, text_config_of)
from gemma_fast.errors import UserError
from gemma_fast.plan.eval_plan import eval_estimate, kv_bytes_per_token
from gemma_fast.families import LANGUAGE_MODEL_LINEAR as GEMMA_LINEAR
from gemma_fast.plan.memory import GIB, adapter_params
from gemma_fast.plan.preflight import GPUS, Setup, activation_bytes, estimate, preflight, render
from gemma_fast.recipe import load_recipe
from gemma_fast.testing.tiny import TINY_SHAPES, tiny_config
from tests.conftest import ROOT


@pytest.fixture
def recipe(tmp_path):
    """A recipe whose data folder is empty, so the estimate uses train.max_seq_length whatever data/ holds."""
    def _load(name, *overrides):
        return load_recipe(name, [f"data.dir={tmp_path / 'data'}", *overrides])
    return _load


# ---------------------------------------------------------------- the model's shape, from its config


@pytest.mark.parametrize("shape", TINY_SHAPES)
def test_meta_device_counts_equal_a_real_model(shape):
    """Every family and Gemma 4 shape (per-layer embeddings + KV sharing, K = V, MoE): built on the meta device, the
    same parameters as the real model, split into what 4-bit NF4 quantises and what it leaves in 16 bit."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(shape)
    real = AutoModelForCausalLM.from_config(config)
    arch = arch_from_model(meta_model(config, shape), shape, "gemma", "test")
    assert arch.params.total == sum(p.numel() for p in real.parameters())  # a tied head counts once
    nf4 = sum(m.weight.numel() for n, m in real.named_modules() if type(m) is torch.nn.Linear
              and m is not real.get_output_embeddings() and "router" not in n)
    assert arch.params.linear == nf4 and arch.params.unquantized == arch.params.total - nf4
    assert arch.params.experts == sum(p.numel() for n, p in real.named_parameters() if ".experts." in n)


@pytest.mark.parametrize("shape", TINY_SHAPES)
def test_trainable_count_matches_peft(shape):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = tiny_config(shape)
    model = get_peft_model(AutoModelForCausalLM.from_config(config),
                           LoraConfig(r=4, lora_alpha=8, target_modules=list(GEMMA_LINEAR), task_type="CAUSAL_LM"))
    real = sum(p.numel() for p in model.parameters() if p.requires_grad)
    arch = arch_from_model(meta_model(config, shape), shape, "gemma", "test")
    assert adapter_params(arch, "lora", GEMMA_LINEAR, 4, 16) == real


def test_gemma4_layers_as_built():
    """Per-layer shapes: 512-wide global heads, KV-shared layers without k/v, double-wide MLP (tiny E-style config)."""
    arch = arch_from_model(meta_model(tiny_config("gemma4", use_double_wide_mlp=True), "t"), "t", "gemma4", "test")
    assert [la.head_dim for la in arch.layers] == [16, 32, 16, 16, 32]
    assert [la.kv_heads for la in arch.layers] == [1, 1, 1, 0, 0]  # the last 2 share the earlier layers' K/V
    assert [la.mlp_width for la in arch.layers] == [64, 64, 64, 128, 128]
    assert [la.window for la in arch.layers] == [16, None, 16, 16, None]
    assert arch.per_layer_input == 5 * 8 and arch.params.per_layer_embedding == 512 * 5 * 8
    k_eq_v = arch_from_model(meta_model(tiny_config("gemma4-31b"), "t"), "t", "gemma4", "test")
    assert not any(lin.name.endswith("v_proj") for la in k_eq_v.layers if la.head_dim == 32 for lin in la.linears)


# name: (layers, hidden, heads, kv heads by head dim, sliding window, KV-shared layers, per-layer input, vocab,
#        experts/top-k, K = V, published billions, tower billions not loaded)
PUBLISHED = {
    "gemma-2b": (18, 2048, 8, {256: 1}, None, 0, 0, 256000, (0, 0), False, 2.51, 0),
    "gemma-7b": (28, 3072, 16, {256: 16}, None, 0, 0, 256000, (0, 0), False, 8.54, 0),
    "gemma-2-2b": (26, 2304, 8, {256: 4}, 4096, 0, 0, 256000, (0, 0), False, 2.61, 0),
    "gemma-2-9b": (42, 3584, 16, {256: 8}, 4096, 0, 0, 256000, (0, 0), False, 9.24, 0),
    "gemma-2-27b": (46, 4608, 32, {128: 16}, 4096, 0, 0, 256000, (0, 0), False, 27.2, 0),
    "gemma-3-270m": (18, 640, 4, {256: 1}, 512, 0, 0, 262144, (0, 0), False, 0.27, 0),
    "gemma-3-1b": (26, 1152, 4, {256: 1}, 512, 0, 0, 262144, (0, 0), False, 1.0, 0),
    # Gemma 3 4B+ are multimodal: Google's 4B/12B/27B include a ~0.42B SigLIP tower that gemma_fast does not load
    "gemma-3-4b": (34, 2560, 8, {256: 4}, 1024, 0, 0, 262208, (0, 0), False, 4.3, 0.42),
    "gemma-3-12b": (48, 3840, 16, {256: 8}, 1024, 0, 0, 262208, (0, 0), False, 12.2, 0.42),
    "gemma-3-27b": (62, 5376, 32, {128: 16}, 1024, 0, 0, 262208, (0, 0), False, 27.4, 0.42),
    # Gemma 4 E-models: Google's 5.1B / 8B count the ~0.15B vision and ~0.3B audio towers; 26B-A4B and 31B are 25.2B /
    # 30.7B for the language model
    "gemma-4-E2B": (35, 1536, 8, {256: 1, 512: 1}, 512, 20, 35 * 256, 262144, (0, 0), False, 5.1, 0.45),
    "gemma-4-E4B": (42, 2560, 8, {256: 2, 512: 2}, 512, 18, 42 * 256, 262144, (0, 0), False, 8.0, 0.45),
    "gemma-4-26B-A4B": (30, 2816, 16, {256: 8, 512: 2}, 1024, 0, 0, 262144, (128, 8), True, 25.2, 0),
    "gemma-4-31B": (60, 5376, 32, {256: 16, 512: 4}, 1024, 0, 0, 262144, (0, 0), True, 30.7, 0),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_configs_have_the_published_sizes(name):
    layers, hidden, heads, kv, window, shared, ple, vocab, (experts, top_k), k_eq_v, billions, towers = PUBLISHED[name]
    path = MODEL_CONFIGS / f"{name}.json"
    assert json.loads(path.read_text())["_source"]  # every shipped config says where its values come from
    a = resolve_arch(f"google/{name}-it")
    assert a.source.startswith(path.name) and (a.n_layers, a.hidden, a.layers[0].heads, a.vocab) == (layers, hidden, heads, vocab)
    assert {la.head_dim: la.kv_heads for la in a.layers if la.kv_heads} == kv
    assert max((la.window or 0) for la in a.layers) == (window or 0)
    assert sum(1 for la in a.layers if not la.kv_heads) == shared and a.per_layer_input == ple
    assert (a.layers[0].experts, a.layers[0].top_k) == (experts, top_k)
    assert any(la.kv_heads and la.head_dim == 512 and not any(x.name.endswith("v_proj") for x in la.linears)
               for la in a.layers) == k_eq_v  # global layers that project keys but no values
    assert abs((a.params.total / 1e9 + towers) / billions - 1) < 0.04, (name, a.params.total)


def test_gemma4_effective_and_active_sizes():
    """Google's other published Gemma 4 figures: E2B 2.3B / E4B 4.5B without the per-layer-embedding table, 26B-A4B
    3.8B active (8 of 128 experts); and the table itself is ~2.35B / ~2.82B parameters that 4-bit does not shrink."""
    e2b, e4b, moe = (resolve_arch(f"google/gemma-4-{n}-it") for n in ("E2B", "E4B", "26B-A4B"))
    assert abs((e2b.params.total - e2b.params.per_layer_embedding) / 2.3e9 - 1) < 0.04
    assert abs((e4b.params.total - e4b.params.per_layer_embedding) / 4.5e9 - 1) < 0.04
    assert abs(e2b.params.per_layer_embedding / 2.35e9 - 1) < 0.01 and abs(e4b.params.per_layer_embedding / 2.82e9 - 1) < 0.01
    active = moe.params.total - moe.params.experts + moe.params.experts * 8 // 128
    assert abs(active / 3.8e9 - 1) < 0.04
    for a in (e2b, e4b, moe):
        assert a.params.unquantized >= a.params.per_layer_embedding + a.params.experts


@pytest.mark.parametrize("spec, file", [
    ("google/gemma-4-E2B-it", "gemma-4-E2B"), ("google/gemma-4-e4b", "gemma-4-E4B"),
    ("unsloth/gemma-4-E2B-it-unsloth-bnb-4bit", "gemma-4-E2B"), ("unsloth/gemma-4-26B-A4B-it", "gemma-4-26B-A4B"),
    ("google/gemma-3-4b-pt", "gemma-3-4b"), ("unsloth/gemma-7b-it-bnb-4bit", "gemma-7b"), ("google/gemma-1.1-2b-it", "gemma-2b"),
    ("embedded:gemma-3-270m", None),
])
def test_hub_ids_resolve_to_the_shipped_configs(spec, file, monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_FAST_CACHE", str(tmp_path))  # the embedded model not converted yet: its shipped config
    path, _ = config_path(spec)
    assert path == shipped_configs()[(file or "gemma-3-270m").lower()]


def test_a_local_folder_wins_and_an_unknown_model_is_one_clear_line(tiny_model_dir):
    assert resolve_arch(str(tiny_model_dir)).family == "gemma3"
    with pytest.raises(UserError) as err:
        resolve_arch("someone/llama-13b")
    message = str(err.value)
    assert "\n" not in message and "--set model=/path/to/folder" in message and "gemma-4-E2B" in message
    with pytest.raises(UserError, match="no such folder"):
        resolve_arch("./no/such/model")


def test_a_terse_hub_config_builds_with_the_class_defaults(tmp_path):
    """google/gemma-3-4b-it's config.json gives only a few text_config fields; the rest are Gemma3TextConfig's defaults."""
    folder = tmp_path / "gemma-3-4b-it"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "mm_tokens_per_image": 256,
        "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
                        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
        "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304, "model_type": "siglip_vision_model",
                          "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False}}))
    assert resolve_arch(str(folder)).params == resolve_arch("google/gemma-3-4b-it").params


def test_shipped_configs_load_with_autoconfig():
    from transformers import AutoConfig

    for path in shipped_configs().values():
        raw = read_config(path)
        full = AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k != "model_type"})
        assert text_config_of(raw, str(path)).model_type == full.get_text_config().model_type


# ---------------------------------------------------------------- the plan


def test_no_bfloat16_on_t4_or_v100_but_on_h100(recipe):
    for gpu in ("t4", "v100"):
        for backend in ("auto", "hf"):
            plan = preflight(recipe("kaggle_docs", f"backend={backend}"), gpu)
            assert plan.dtype in ("float16", "float32"), (gpu, backend, plan.dtype)
    assert preflight(recipe("kaggle_docs", "backend=hf"), "t4").dtype == "float32"  # fp16 overflows Gemma on the plain path
    assert preflight(recipe("kaggle_docs"), "h100").dtype == "bfloat16"
    assert not GPUS["t4"].bf16 and not GPUS["v100"].bf16 and GPUS["l4"].bf16 and GPUS["a100-40gb"].bf16


@pytest.mark.parametrize("model", ["embedded:gemma-3-270m", "google/gemma-3-4b-it", "google/gemma-4-E2B-it",
                                   "google/gemma-4-E4B-it"])
def test_gemma3_and_4_take_unsloths_float32_path_on_a_t4(recipe, model):
    plan = preflight(recipe("quickstart", f"model={model}", "train.method=qlora"), "t4")
    assert (plan.backend, plan.method, plan.dtype, plan.weights_dtype) == ("unsloth", "qlora", "float32", "float16")
    assert any("FORCE_FLOAT32" in note for note in plan.notes) and plan.verdict in ("fits", "tight", "does not fit")
    on_l4 = preflight(recipe("quickstart", f"model={model}", "train.method=qlora"), "l4")
    assert (on_l4.dtype, on_l4.weights_dtype) == ("bfloat16", "bfloat16") and not any("FORCE_FLOAT32" in n for n in on_l4.notes)
    assert preflight(recipe("kaggle_docs"), "t4").dtype == "float16"  # Gemma 1 trains in float16 there


def test_kaggle_docs_plan_on_a_gpu(recipe):
    plan = preflight(recipe("kaggle_docs"), "a100-80gb")
    assert (plan.backend, plan.method, plan.optimizer) == ("unsloth", "qlora", "paged_adamw_32bit")
    assert plan.verdict == "fits" and plan.eval_verdict == "fits" and not plan.suggestions
    assert plan.effective_batch == 8 * 16 and plan.steps is None and "unknown" in plan.steps_source
    assert plan.tokens_per_step == 128 * 512
    assert plan.eval.four_bit and plan.eval.decode_buffer == 513  # evaluated as trained: 4-bit, Unsloth's decode


@pytest.mark.parametrize("gpu", ["t4", None])
def test_every_recipe_plans(recipe, gpu, monkeypatch):
    """Each shipped recipe's --plan on a T4 and on this machine (CPU here): a training and an evaluation estimate, each
    with a verdict, and JSON that round-trips."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        plan = preflight(recipe(path.stem), gpu)
        assert plan.estimate.total > 0 and plan.eval_estimate.total > plan.arch.params.linear * 0.5, path.stem
        assert {plan.verdict, plan.eval_verdict} <= {"fits", "tight", "does not fit"}
        assert json.loads(json.dumps(plan.to_dict()))["evaluation"]["memory"]["verdict"] == plan.eval_verdict


def test_too_big_does_not_fit_and_the_suggestion_does(recipe):
    big = recipe("kaggle_docs", "train.method=lora", "train.batch_size=16", "train.max_seq_length=2048")
    plan = preflight(big, "t4")
    assert plan.method == "lora" and plan.verdict == "does not fit"
    assert plan.suggestions and all(s.verdict == "fits" for s in plan.suggestions)
    fixed = preflight(recipe("kaggle_docs", "train.method=lora", "train.batch_size=16", "train.max_seq_length=2048",
                             *plan.suggestions[0].overrides), "t4")
    assert fixed.verdict == "fits" and round(fixed.estimate.gib(), 1) == plan.suggestions[0].total_gib


def _setup(model="google/gemma-2b", **changes):
    base = Setup(resolve_arch(model), "cuda", "hf", "lora", "float16", "adamw_torch", batch_size=4, seq_len=512,
                 gradient_checkpointing="off", lora_r=16, lora_targets=GEMMA_LINEAR, lora_dropout=0.05)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("backend,checkpointing", [("hf", "off"), ("hf", "on"), ("unsloth", "offloaded")])
def test_estimate_grows_with_batch_and_sequence_length(backend, checkpointing):
    by_batch = [estimate(_setup(backend=backend, gradient_checkpointing=checkpointing, batch_size=b)).total for b in (1, 2, 4, 8, 16)]
    by_seq = [estimate(_setup(backend=backend, gradient_checkpointing=checkpointing, seq_len=n)).total for n in (128, 256, 512, 1024, 2048)]
    assert by_batch == sorted(by_batch) and by_batch[0] < by_batch[-1]
    assert by_seq == sorted(by_seq) and by_seq[0] < by_seq[-1]


def test_gradient_checkpointing_and_4bit_lower_the_estimate():
    assert estimate(_setup(gradient_checkpointing="on")).total < estimate(_setup(gradient_checkpointing="off")).total
    assert estimate(_setup(method="qlora")).total < estimate(_setup(method="lora")).total
    assert estimate(_setup(optimizer="adamw_8bit")).total < estimate(_setup(optimizer="adamw_torch")).total


def test_the_float32_path_prices_activations_at_4_bytes():
    half = activation_bytes(_setup("google/gemma-4-E2B-it", dtype="float16"))[0]
    full = activation_bytes(_setup("google/gemma-4-E2B-it", dtype="float32", weights_dtype="float16"))[0]
    assert 1.6 < full / half <= 2.0  # e -> 4 bytes everywhere; the RMSNorms' fp32 copies were 4 bytes already


def test_qlora_leaves_embeddings_and_experts_in_16_bit():
    e2b = _setup("google/gemma-4-E2B-it", method="qlora", backend="unsloth")
    base = estimate(e2b).components[0]
    assert base.bytes > e2b.arch.params.per_layer_embedding * 2 and "per-layer-embedding table 2.35B" in base.detail
    moe = estimate(_setup("google/gemma-4-26B-A4B-it", method="qlora", backend="unsloth")).components[0]
    assert moe.bytes > 22e9 * 2 and "MoE experts" in moe.detail  # bitsandbytes replaces nn.Linear only


def test_attention_scores_where_the_attention_keeps_them():
    """Gemma 2 (eager: softcapping) everywhere; Gemma 3 on Unsloth below Ampere (eager, no flex); Gemma 4's 512-wide
    global layers (no FlashAttention above head_dim 256: SDPA's math kernel assumed)."""
    def scored(setup):
        return "S x S scores" in activation_bytes(setup)[1]

    assert scored(_setup("google/gemma-2-2b-it")) and not scored(_setup())
    assert scored(_setup("google/gemma-3-1b-it", backend="unsloth", below_ampere=True))
    assert not scored(_setup("google/gemma-3-1b-it", backend="unsloth")) and not scored(_setup("google/gemma-3-1b-it"))
    assert "on 7 of 35 layers" in activation_bytes(_setup("google/gemma-4-E2B-it"))[1]
    longer = [activation_bytes(_setup("google/gemma-4-E2B-it", seq_len=n, batch_size=1))[0] / n for n in (512, 2048)]
    assert longer[1] > longer[0]  # per token, it grows with the sequence: the S x S term


def test_the_loss_path_that_runs():
    """Unsloth's chunked cross-entropy is sized by free memory (at most 2 GiB); the hf path's answer-position head adds
    a bf16 copy of the fp32 head under autocast with QLoRA."""
    unsloth = _setup("google/gemma-7b-it", backend="unsloth", method="qlora", batch_size=8, seq_len=512)
    roomy = estimate(dataclasses.replace(unsloth, memory_bytes=80 * GIB)).components[4]
    tight = estimate(dataclasses.replace(unsloth, memory_bytes=12 * GIB)).components[4]
    assert "chunked cross-entropy" in roomy.detail and roomy.bytes > tight.bytes and roomy.bytes <= 2 * GIB + 8 * 512 * 3072 * 4
    hf = [estimate(_setup("google/gemma-7b-it", method=m, dtype="bfloat16")).components[4] for m in ("qlora", "lora")]
    assert "copy of the fp32 head" in hf[0].detail and hf[0].bytes - hf[1].bytes == 256000 * 3072 * 2


def test_unknown_gpu_lists_the_valid_names(recipe):
    with pytest.raises(UserError) as err:
        preflight(recipe("quickstart"), "rtx9090")
    assert "rtx9090" in str(err.value) and all(name in str(err.value) for name in GPUS)


def test_cpu_plan_is_what_the_run_would_do(recipe, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = preflight(recipe("kaggle_docs", "model=embedded:gemma-3-270m"), None)
    assert (plan.device.kind, plan.dtype, plan.method, plan.optimizer) == ("cpu", "float32", "lora", "adamw_torch")
    assert any("qlora" in note for note in plan.notes)
    assert [c.name for c in plan.estimate.components][-1] == "process runtime"
    assert not plan.eval.four_bit and plan.eval.decode_buffer == 0


def test_steps_and_tokens_from_prepared_data(recipe, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(100)))
    (data / "prep_report.json").write_text(json.dumps({"tokens": {"train": {"mean": 50.5, "p95": 90, "max": 120},
                                                                  "test": {"mean": 60.0, "p95": 99, "max": 140}}}))
    plan = preflight(recipe("quickstart", "train.epochs=2", "train.batch_size=8", "train.grad_accum=2"), "t4")
    assert plan.steps == 2 * math.ceil(math.ceil(100 / 8) / 2)
    assert plan.seq_len == 120 and plan.tokens_per_step == int(16 * 50.5)
    assert (plan.eval.max_prompt, plan.eval.max_example) == (140, 140) and "prep_report.json" in plan.eval_lengths_source
    assert preflight(recipe("quickstart", "train.max_steps=7"), "t4").steps == 7
    rag = preflight(recipe("quickstart", "rag.index=rag/x"), "t4")
    assert rag.eval.max_prompt == 256 and "rag.index" in rag.eval_lengths_source  # passages are not in the prepared lengths


def test_kv_cache_per_layer_with_gemma4_head_dims_and_sharing():
    assert kv_bytes_per_token(resolve_arch("google/gemma-7b"), 2) == 448 * 1024  # 28 layers x 16 heads x 256 x K,V
    # E2B: 15 layers cache (the 20 KV-shared read them): 12 sliding x 1 head x 256 and 3 global x 1 head x 512
    assert kv_bytes_per_token(resolve_arch("google/gemma-4-E2B"), 2) == 2 * 2 * (12 * 256 + 3 * 512)


def test_evaluation_estimate_grows_with_batch_tokens_and_fits_kaggle_docs_on_a_t4(recipe):
    plan = preflight(recipe("kaggle_docs"), "t4")
    totals = [eval_estimate(dataclasses.replace(plan.eval, batch_tokens=n)).total for n in (1024, 2048, 4096, 8192, 16384, 65536)]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    fixed_count = dataclasses.replace(plan.eval, batch_tokens=10**9)  # the old behaviour: 16 prompts whatever their length
    assert eval_estimate(fixed_count).total > plan.device.memory_gib * GIB  # HIGH 1: the longest batches run out of memory
    names = [c.name for c in plan.eval_estimate.components]
    assert {"base weights", "adapter", "KV cache, largest batch", "prefill K/V copy"} <= set(names)


def test_an_evaluation_that_does_not_fit_suggests_a_smaller_token_budget(recipe):
    plan = preflight(recipe("kaggle_docs", "eval.batch_tokens=1000000"), "t4")
    assert plan.eval_verdict != "fits" and plan.eval_suggestions
    fix = plan.eval_suggestions[0]
    assert fix.overrides[0].startswith("eval.batch_tokens=") and fix.verdict == "fits"
    assert preflight(recipe("kaggle_docs", *fix.overrides), "t4").eval_verdict == "fits"


def test_dict_is_json_and_render_prints(recipe):
    from rich.console import Console

    plan = preflight(recipe("kaggle_docs"), "t4")
    out = json.loads(json.dumps(plan.to_dict()))
    assert out["plan"]["dtype"] == "float16" and out["memory"]["verdict"] == plan.verdict
    assert abs(sum(c["bytes"] for c in out["memory"]["components"]) / 2**30 - out["memory"]["total_gib"]) < 0.01
    assert out["architecture"]["parameters"]["total"] == plan.arch.params.total
    console = Console(record=True, width=160)
    console.print(render(plan))
    text = console.export_text()
    assert "estimated peak memory: training step" in text and "estimated peak memory: evaluation" in text


def test_paged_optimizer_states_that_can_spill_make_it_tight_not_a_failure(recipe):
    paged = preflight(recipe("kaggle_docs", "train.gradient_checkpointing=true", "train.batch_size=16", "train.optimizer=paged_adamw_32bit"), "t4")
    plain = preflight(recipe("kaggle_docs", "train.gradient_checkpointing=true", "train.batch_size=16", "train.optimizer=adamw_torch"), "t4")
    assert paged.estimate.total == plain.estimate.total and paged.estimate.spillable > 0
    assert (paged.verdict, plain.verdict) == ("tight", "does not fit")


@pytest.mark.parametrize("text, pattern", [
    ("{not json", r"config\.json: not valid JSON"),
    ("[1, 2]", r"config\.json: expected a JSON object .* found a list"),
    ('{"model_type": "gemma", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 0, '
     '"intermediate_size": 16}', r"num_attention_heads must be a positive integer, found 0"),
    ('{"model_type": "gemma", "vocab_size": 10, "hidden_size": "2048", "num_hidden_layers": 1, "num_attention_heads": 1, '
     '"intermediate_size": 16}', r"hidden_size must be a positive integer, found \"2048\""),
    ('{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, '
     '"intermediate_size": 16}', r"model_type 'llama' is not a Gemma generation"),
    ('{"model_type": "gemma3_text", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 1, '
     '"intermediate_size": 16, "layer_types": ["x"]}', r"transformers cannot read this config"),
    ('{"model_type": "gemma4_text", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 1, '
     '"intermediate_size": 16, "num_kv_shared_layers": 2}', r"cannot build the model from its config"),
])
def test_a_bad_config_is_one_clear_line(tmp_path, text, pattern):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    with pytest.raises(UserError, match=pattern) as err:
        resolve_arch(str(folder))
    assert "\n" not in str(err.value) and str(folder / "config.json") in str(err.value)


@pytest.mark.parametrize("report, pattern", [
    ("{oops", r"is not valid JSON"), ("[]", r"is not a JSON object"), ('{"tokens": [1]}', r"tokens must be an object"),
    ('{"tokens": {"train": {"mean": "x", "max": 5}}}', r"tokens\.train\.mean must be a non-negative number"),
    ('{"tokens": {"test": {"mean": 3, "max": -1}}}', r"tokens\.test\.max must be a non-negative number"),
])
def test_a_malformed_prep_report_is_one_clear_line(recipe, tmp_path, report, pattern):
    data = tmp_path / "data"
    data.mkdir()
    (data / "prep_report.json").write_text(report)
    with pytest.raises(UserError, match=pattern) as err:
        preflight(recipe("quickstart"), "t4")
    assert str(Path(data / "prep_report.json")) in str(err.value) and "prepare_data.py" in str(err.value)

"""configs/accelerate_fsdp.yaml and what it sets up. accelerate 1.15 does not shard on a CPU (an FSDP config there runs
as MULTI_CPU data parallel; tests/unit/test_train.py launches two ranks), so these tests check the configuration the
launch produces: the environment each rank gets, the layer class wrapped for each Gemma generation, the 4-bit storage
dtype and placement at load, and the loss head under a DTensor."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml

from gemma_fast.families import FAMILIES
from gemma_fast.testing.tiny import save_tiny_model
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "accelerate_fsdp.yaml"


@pytest.fixture(scope="module")
def launch_env(tmp_path_factory):
    """The environment accelerate launch gives each of the two ranks with the shipped config."""
    folder = tmp_path_factory.mktemp("launch")
    script = folder / "env.py"
    script.write_text("import json, os, sys\n"
                      "open(sys.argv[1] + os.environ['RANK'], 'w').write(json.dumps(dict(os.environ)))\n")
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), str(script),
                             str(folder / "rank")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads((folder / f"rank{r}").read_text()) for r in (0, 1)]


def fsdp_env(monkeypatch, env):
    for key in [k for k in env if k.startswith(("ACCELERATE_", "FSDP_"))]:
        monkeypatch.setenv(key, env[key])


@pytest.mark.slow  # builds accelerate's launch environment: the full tier (make test)
def test_the_config_leaves_dtype_and_wrap_class_to_gemma_fast(launch_env):
    config = yaml.safe_load(CONFIG.read_text())
    assert config["mixed_precision"] == "no" and "fsdp_transformer_layer_cls_to_wrap" not in config["fsdp_config"]
    for env in launch_env:  # both ranks: FSDP on, no precision override, no hard-coded layer class
        assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
        assert env["ACCELERATE_MIXED_PRECISION"] == "no" and "FSDP_TRANSFORMER_CLS_TO_WRAP" not in env
    assert sorted(env["RANK"] for env in launch_env) == ["0", "1"]


@pytest.mark.slow  # accelerate launch in real processes (launch_env): the full tier (make test)
@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3", "gemma4"])
def test_each_family_wraps_its_own_decoder_layer(tmp_path, monkeypatch, launch_env, family):
    """The family table's class, exported as accelerate reads it; accelerate's FSDP2 policy then wraps every decoder
    layer. (Gemma 4's _no_split_modules names vision/audio layers a text-only model lacks: accelerate would refuse.)"""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from peft import LoraConfig, get_peft_model

    from gemma_fast.models.loader import load_model
    from gemma_fast.training.run import fsdp_wrap_class

    fsdp_env(monkeypatch, launch_env[0])
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP", raising=False)
    loaded = load_model(str(save_tiny_model(family, tmp_path / family)), backend="hf")
    notes: list[str] = []
    assert fsdp_wrap_class(loaded.model, loaded.family, notes) == FAMILIES[family].fsdp_layer and notes == []
    model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), model)
    wrapped = [m for m in model.modules() if policy(m)]
    assert len(wrapped) == loaded.model.config.get_text_config().num_hidden_layers
    assert {type(m).__name__ for m in wrapped} == {FAMILIES[family].fsdp_layer}
    if family == "gemma":  # the old config's Gemma3DecoderLayer, given for kaggle_docs's gemma-7b: replaced, and said
        monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "Gemma3DecoderLayer")
        assert fsdp_wrap_class(loaded.model, loaded.family, notes) == "GemmaDecoderLayer"
        assert "Gemma3DecoderLayer is not in this Gemma model" in notes[0]


@pytest.mark.slow  # an accelerate launch
def test_fsdp_runs_on_the_hf_backend(monkeypatch, launch_env):
    from gemma_fast.errors import UserError
    from gemma_fast.recipe import load_recipe
    from gemma_fast.training.run import plan_run

    fsdp_env(monkeypatch, launch_env[0])
    plan = plan_run(load_recipe("kaggle_docs"), cuda=True, has_unsloth=True)
    assert plan.backend == "hf" and "FSDP runs on transformers + peft, not Unsloth" in plan.notes
    with pytest.raises(UserError, match="backend=unsloth does not run under FSDP"):
        plan_run(load_recipe("kaggle_docs", ["backend=unsloth"]), cuda=True, has_unsloth=True)


@pytest.mark.slow  # accelerate launch in real processes (launch_env): the full tier (make test)
def test_qlora_under_fsdp_stores_4bit_weights_in_the_compute_dtype(tmp_path, monkeypatch, launch_env):
    """bnb_4bit_quant_storage = the compute dtype, or accelerate leaves the uint8 weights unsharded; no device_map, so
    FSDP places the shards (spoofed A100: bf16)."""
    import transformers

    from gemma_fast.models.loader import load_model

    folder = save_tiny_model("gemma", tmp_path / "g")
    seen = {}

    def capture(path, **kwargs):
        seen.update(kwargs)
        return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(path))

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", capture)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setenv("LOCAL_RANK", "1")
    fsdp_env(monkeypatch, launch_env[1])
    load_model(str(folder), backend="hf", load_in_4bit=True)
    quant = seen["quantization_config"]
    assert quant.bnb_4bit_quant_storage == torch.bfloat16 == quant.bnb_4bit_compute_dtype
    assert "device_map" not in seen
    monkeypatch.delenv("ACCELERATE_USE_FSDP")  # DDP: each rank on its own GPU, plain uint8 storage
    seen.clear()
    load_model(str(folder), backend="hf", load_in_4bit=True)
    assert seen["device_map"] == {"": 1} and seen["quantization_config"].bnb_4bit_quant_storage == torch.uint8


def test_the_loss_head_gathers_a_sharded_dtensor(tmp_path):
    """Under FSDP2 the tied head is a DTensor after the forward; the answer-position loss gathers it whole."""
    import torch.distributed as dist
    from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor

    from gemma_fast.training.loss import head_of

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'store'}")
    try:
        weight = torch.randn(16, 4)
        head = torch.nn.Linear(4, 16, bias=False)
        head.weight = torch.nn.Parameter(distribute_tensor(weight, DeviceMesh("cpu", [0]), [Shard(0)]))
        model = SimpleNamespace(get_output_embeddings=lambda: head,
                                config=SimpleNamespace(get_text_config=lambda: SimpleNamespace(final_logit_softcapping=None)))
        gathered, softcap = head_of(model)
        assert type(gathered) is torch.Tensor and torch.equal(gathered, weight) and softcap is None
    finally:
        dist.destroy_process_group()

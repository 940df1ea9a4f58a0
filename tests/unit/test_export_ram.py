"""The exports after training: refused before training when this machine's RAM cannot hold them (the available-RAM
probe monkeypatched), and run in a fresh process after it (never beside Unsloth's patched classes)."""

import json
import shutil
import sys

import pytest
import torch

from gemma_fast.export import ram as export_ram
from gemma_fast.errors import UserError
from gemma_fast.export.ram import GIB, available_ram, base_parameters, check_export_ram, export_command, needed, run_export_process
from gemma_fast.recipe import load_recipe
from gemma_fast.training.run import Exports, train
from tests.conftest import ROOT

COLAB = int(12.7 * GIB)


@pytest.fixture(scope="module")
def gemma_7b(tmp_path_factory):
    """gemma-7b's config alone (gemma_fast/assets/model_configs): enough to count its parameters, no weights."""
    folder = tmp_path_factory.mktemp("gemma-7b")
    shutil.copyfile(ROOT / "gemma_fast" / "assets" / "model_configs" / "gemma-7b.json", folder / "config.json")
    return folder


def test_available_ram_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:         1000 kB\nMemAvailable:   13316915 kB\n")
    assert available_ram(meminfo) == 13316915 * 1024
    meminfo.write_text("MemTotal: 1 kB\n")
    assert available_ram(meminfo) is None and available_ram(tmp_path / "absent") is None


def test_the_estimate_per_export(gemma_7b):
    params = base_parameters(str(gemma_7b))
    assert abs(params / 1e9 - 8.54) < 0.01  # counted on the meta device: gemma-7b's published size
    steps = needed(params, merge=True, merge_dtype=torch.bfloat16, gguf=True, roundtrip=8)
    assert round(steps["--merge"] / GIB) == 18  # bf16 merge after a GPU run
    assert round(steps["--gguf"] / GIB) == 66  # float32 merge + the round trip's second float32 copy
    assert round(needed(params, False, torch.float32, True, 0)["--gguf"] / GIB) == 34


def test_training_refuses_exports_this_machine_cannot_hold_before_any_work(gemma_7b, tmp_path, monkeypatch):
    monkeypatch.setattr(export_ram, "available_ram", lambda: COLAB)
    with pytest.raises(UserError) as refused:
        train(load_recipe("quickstart", [f"model={gemma_7b}"]), tmp_path / "run", exports=Exports(merge=True))
    line = str(refused.value)
    assert "\n" not in line and "--merge needs about 34 GiB" in line and "8.54 B parameters" in line
    assert "12.7 GiB available" in line and "nothing was trained" in line
    assert f"-m gemma_fast.cli.export --recipe {tmp_path / 'run' / 'recipe.yaml'} --run {tmp_path / 'run'} --merge" in line
    assert not (tmp_path / "run").exists()


def test_gguf_refusal_names_the_lighter_round_trip_free_export(gemma_7b):
    later = export_command(ROOT / "r.yaml", ROOT / "run", False, "q8_0", 8)
    with pytest.raises(UserError, match=r"--gguf needs about 66 GiB .*round trip's second float32 copy.*gemma_fast\.cli\.export "
                                         r"--recipe \S+r\.yaml --run \S+run --gguf q8_0 --roundtrip 8; --roundtrip 0 .* needs about 34 GiB"):
        check_export_ram(str(gemma_7b), False, "q8_0", 8, torch.float32, later, available=COLAB)
    assert check_export_ram(str(gemma_7b), False, "q8_0", 8, torch.float32, later, available=80 * GIB) > 60 * GIB
    assert check_export_ram(str(gemma_7b), False, "", 8, torch.float32, later, available=1) is None  # nothing to export


def finished_run(folder):
    """A run folder that passes the export's cheap checks (a LoRA adapter's config and header), without training."""
    from safetensors.torch import save_file

    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(4, 8)}, folder / "adapter" / "adapter_model.safetensors")
    return folder


@pytest.mark.parametrize("script, args, said", [
    ("export", ["--run"], "nothing was exported; export on a machine with more RAM: "),
    ("train", ["--export-only", "--out"], "nothing was exported; export on a machine with more RAM: "),  # its alias
])
def test_the_export_stage_refuses_too(gemma_7b, tmp_path, monkeypatch, capsys, script, args, said):
    import importlib

    from gemma_fast.cli import common as cli

    run = finished_run(tmp_path / "run")
    monkeypatch.setattr(export_ram, "available_ram", lambda: COLAB)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--recipe", "quickstart", "--set", f"model={gemma_7b}", *args,
                                      str(run), "--merge", "--merge-dtype", "bfloat16"])
    with pytest.raises(SystemExit):
        cli.run(importlib.import_module(f"gemma_fast.cli.{script}").main)
    err = " ".join(capsys.readouterr().err.split())
    assert "--merge needs about 18 GiB" in err and "bfloat16" in err and "Traceback" not in err
    assert said in err and f"gemma_fast.cli.export --recipe quickstart --run {run} --set model={gemma_7b} --merge " \
                           "--merge-dtype bfloat16" in err
    assert sorted(p.name for p in run.iterdir()) == ["adapter"]  # nothing written


@pytest.mark.slow  # a fresh export process
def test_exports_run_in_a_fresh_process(tmp_path, tiny_model_dir, monkeypatch):
    """merge_adapter is broken in this process: the merge still happens, so it ran elsewhere (a fresh Python that
    imports no Unsloth); the summary names what it wrote."""
    from gemma_fast.export import merge
    from gemma_fast.data.pipeline import prepare
    from gemma_fast.testing.tiny import tiny_tokenizer

    prepare(load_recipe("quickstart", ["data.max_records=24", "train.max_seq_length=256"]), tmp_path / "data", tiny_tokenizer())
    monkeypatch.setattr(merge, "merge_adapter", lambda *a, **k: pytest.fail("merged inside the training process"))
    recipe = load_recipe("quickstart", [f"model={tiny_model_dir}", f"data.dir={tmp_path / 'data'}", "train.max_steps=2",
                                        "train.batch_size=4", "train.max_seq_length=256", "lora.r=4", "lora.alpha=8"])
    summary = train(recipe, tmp_path / "run", exports=Exports(merge=True))
    assert summary["exports"]["merged"] == str(tmp_path / "run" / "merged")
    assert (tmp_path / "run" / "merged" / "config.json").is_file()
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["exports"]["merged"] == summary["exports"]["merged"]


def test_a_failed_export_process_is_one_line_with_the_retry_command(tmp_path):
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(UserError, match=r"^the exports failed in their own process \(exit 3; .*retry them with .*sys.exit\(3\)") as failed:
        run_export_process(command, tmp_path)
    assert "\n" not in str(failed.value)

"""`gemma-fast export` (scripts/export.py) as its own stage: an export added as one EXPORTERS entry runs through it,
bad input is one line before any work, and --out follows the output guard (outputs.py). The real exports (merge,
GGUF, round trip) run end to end in test_export.py; here a run is a LoRA adapter saved untrained (B = 0), which
merges in a second. CLIs run in this process (tests.unit.test_hostile_input.cli)."""

import contextlib
import io
import json
import os
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from gemma_fast.export import exporters
from gemma_fast.errors import UserError
from gemma_fast.export.exporters import Exporter
from tests.conftest import ROOT
from tests.unit.test_hostile_input import Result, assert_one_line_error, cli, tree_digest


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """tiny.yaml (the tiny random Gemma 3), runs/r1 (a saved LoRA adapter, its recipe.yaml, marked a run) and runs/r2."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from gemma_fast.outputs import mark
    from gemma_fast.recipe import load_recipe

    work = tmp_path_factory.mktemp("export_stage")
    (work / "tiny.yaml").write_text(yaml.safe_dump({"model": str(tiny_model_dir), "lora": {"r": 4, "alpha": 8},
                                                    "train": {"max_seq_length": 128}}))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    for name in ("r1", "r2"):
        run = work / "runs" / name
        model.save_pretrained(run / "adapter")
        load_recipe(str(work / "tiny.yaml")).save(run / "recipe.yaml")
        mark(run, "run")
    return work


def stage(*args: str, cwd: Path) -> tuple[Result, str]:
    """scripts/export.py in this process, as test_hostile_input.cli runs a script, keeping its stdout (the summary)."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    sys.argv = [str(ROOT / "scripts" / "export.py"), *args]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    return Result(code, err.getvalue()), out.getvalue()


def test_a_new_export_is_one_registry_entry(world, monkeypatch):
    """A toy exporter registered only here: --to runs it after its tool check, hands it the merged model (merged
    once, in a temporary folder removed afterwards), and --list, the summary and the --out guard know it."""
    seen = {}

    def toy(job) -> str:
        config = json.loads((job.merged / "config.json").read_text())
        seen["merged"] = job.merged
        (job.out / "toy.txt").write_text(f"{config['architectures'][0]} merged from {job.run_dir.name}\n")
        return str(job.out / "toy.txt")

    monkeypatch.setitem(exporters.EXPORTERS, "toy", Exporter("toy", "the merged model's architecture, as text", ("toy.txt",), toy,
                                                           needs_merged=True, tools=(lambda: seen.setdefault("tool", True),)))
    before = tree_digest(world / "runs" / "r1")
    result, stdout = stage("--run", "runs/r1", "--to", "toy", cwd=world)
    assert result.code == 0, result.stderr[-3000:]
    assert (world / "runs" / "r1" / "toy.txt").read_text() == "Gemma3ForCausalLM merged from r1\n"
    assert seen["tool"] and seen["merged"] == Path("runs/r1") / exporters.WORK / "merged"  # (paths as given, relative)
    assert not (world / "runs" / "r1" / exporters.WORK).exists() and not (world / "runs" / "r1" / "merged").exists()
    assert "toy" in stdout and "toy.txt" in stdout  # the summary table
    (world / "runs" / "r1" / "toy.txt").unlink()
    assert tree_digest(world / "runs" / "r1") == before  # the run itself is not changed
    # into a folder of its own; a rerun recognises the toy's file as an export's (its `writes`), not a stranger's
    for _ in range(2):
        result, _ = stage("--run", "runs/r1", "--to", "toy", "--out", "exports/toy", cwd=world)
        assert result.code == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (world / "exports" / "toy").iterdir()) == [".gemma_fast", "recipe.yaml", "toy.txt"]
    _, listing = stage("--list", cwd=world)
    assert all(name in listing for name in ("merged", "gguf-q4_k_m", "ollama", "toy"))


def test_a_tool_that_is_missing_stops_the_export_before_any_work(world, monkeypatch):
    def missing():
        raise UserError("toy needs the toy converter: pip install toy")

    monkeypatch.setitem(exporters.EXPORTERS, "toy", Exporter("toy", "", ("toy.txt",), lambda job: pytest.fail("ran"),
                                                           needs_merged=True, tools=(missing,)))
    before = tree_digest(world / "runs" / "r1")
    assert_one_line_error(stage("--run", "runs/r1", "--to", "toy", cwd=world)[0], r"toy needs the toy converter")
    assert tree_digest(world / "runs" / "r1") == before


def test_merge_into_an_out_folder(world):
    """--merge into --out: merged/ with its record there, the folder marked as an export with the recipe it ran; the
    run is unchanged, and a GGUF export from that folder would reuse this merge (merge.merged_mismatch)."""
    from gemma_fast.export.merge import merged_mismatch

    before = tree_digest(world / "runs" / "r1")
    result, _ = stage("--recipe", "tiny.yaml", "--run", "runs/r1", "--merge", "--out", "exports/merged", cwd=world)
    assert result.code == 0, result.stderr[-3000:]
    out = world / "exports" / "merged"
    assert merged_mismatch(out / "merged", world / "runs" / "r1" / "adapter", yaml.safe_load((world / "tiny.yaml").read_text())["model"]) is None
    assert json.loads((out / ".gemma_fast").read_text())["kind"] == "export" and (out / "recipe.yaml").is_file()
    assert tree_digest(world / "runs" / "r1") == before


@pytest.mark.parametrize("args, pattern", [
    (["--merge"], r"export needs --run: the folder of the finished training run"),
    (["--out", "runs/r1", "--merge"], r"export needs --run.*; --out is where the exports go"),  # --export-only's habit
    (["--run", "runs/nope", "--merge"], r"export: runs/nope does not exist \(--run names the folder of a finished training run\)"),
    (["--recipe", "tiny.yaml", "--run", "runs/nope", "--merge"], r"export: runs/nope does not exist"),
    (["--run", "runs"], r"export: runs/recipe\.yaml not found: name the run's recipe with --recipe"),
    (["--recipe", "tiny.yaml", "--run", "runs", "--merge"], r"export: runs holds no finished run \(no adapter/adapter_config\.json\)"),
    (["--run", "runs/r1"], r"export needs something to export: --merge and/or --gguf TYPE, or --to NAME"),
    (["--run", "runs/r1", "--gguf", "q5_k"], r"--gguf q5_k: 'q5_k' is not one of f16, bf16, q8_0, q4_k_m"),
    (["--run", "runs/r1", "--merge", "--to", "onnx"], r"--to: 'onnx' is not an export; valid: merged, gguf-f16, gguf-bf16, gguf-q8_0, "
                                           r"gguf-q4_k_m, ollama"),
    (["--run", "runs/r1", "--to", "ollama"], r"ollama reads what a gguf-\* export writes; ask for one too"),
    (["--run", "runs/r1", "--merge", "--roundtrip", "-1"], r"--roundtrip -1: must be >= 0"),
    (["--run", "runs/r1", "--merge", "--set", "model=elsewhere/model"], r"export: adapter runs/r1/adapter was trained on model '.*', but the recipe's model is 'elsewhere/model'"),
    # --out: the guard every stage uses (outputs.check_out_dir)
    (["--run", "runs/r1", "--merge", "--out", "a_file"], r"--out a_file is a file, not a folder"),
    (["--run", "runs/r1", "--merge", "--out", "mine"], r"mine holds files gemma_fast did not write \(notes\.txt\): --overwrite "
                                                       r"writes the export outputs beside them"),
    (["--run", "runs/r1", "--merge", "--out", "runs/r2"], r"refusing to write export outputs into runs/r2: it holds a gemma_fast "
                                                          r"run folder"),
    (["--run", "runs/r1", "--merge", "--out", "runs/r1/adapter"], r"it is the run's adapter folder, which the exports read"),
    (["--run", "runs/r1", "--merge", "--out", ".", "--overwrite"], r"refusing to write export outputs into \.: it is the working "
                                                                   r"directory"),
])
def test_bad_input_is_one_line_before_any_work(world, args, pattern):
    (world / "a_file").write_text("x")
    (world / "mine").mkdir(exist_ok=True)
    (world / "mine" / "notes.txt").write_text("my notes")
    before = {name: tree_digest(world / "runs" / name) for name in ("r1", "r2")}
    assert_one_line_error(stage(*args, cwd=world)[0], pattern)
    assert {name: tree_digest(world / "runs" / name) for name in ("r1", "r2")} == before
    assert sorted(p.name for p in (world / "mine").iterdir()) == ["notes.txt"]


def test_the_alias_says_its_own_name(world):
    """train_qlora.py --export-only is the stage under its older spelling: same checks, errors named after it."""
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/r1", "--export-only", cwd=world),
                          r"^error: --export-only needs something to export: --merge and/or --gguf TYPE$")
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/r1", "--export-only", "--gguf", "q5_k", cwd=world),
                          r"'q5_k' is not one of f16, bf16, q8_0, q4_k_m")
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/nope", "--export-only", "--merge", cwd=world),
                          r"--export-only: runs/nope does not exist")


def test_the_stage_is_one_installed_command(monkeypatch, capsys):
    from gemma_fast.cli import main
    from gemma_fast.export.ram import export_command

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main.main sets it for the stage
    assert main.STAGES["export"][0] == "export"
    with pytest.raises(SystemExit) as done:
        main.main(["export", "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert "gemma-fast export" in shown and "--run DIR" in shown and "--to NAME" in shown and "--export-only" in shown
    assert export_command(Path("r.yaml"), Path("run"), True, "q8_0", 4, to="toy", out=Path("o"))[1:] == [
        "-m", "gemma_fast.cli.export", "--recipe", "r.yaml", "--run", "run", "--out", "o", "--merge", "--gguf", "q8_0",
        "--to", "toy", "--roundtrip", "4"]
    assert exporters.names_for(merge=True, gguf="q8_0,F16", to="merged") == ["merged", "gguf-q8_0", "gguf-f16", "ollama"]
    assert [e.name for e in exporters.choose(["ollama", "gguf-q4_k_m", "gguf-bf16"])] == ["gguf-bf16", "gguf-q4_k_m", "ollama"]

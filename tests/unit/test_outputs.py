"""Data loss: every replace goes through outputs.replace_guard; nothing a user did not ask to lose is deleted."""

import errno
import json
import os
import subprocess

import pytest
import yaml

from gemma_fast.data.pipeline import load_split, prepare
from gemma_fast.errors import UserError
from gemma_fast.testing.tiny import tiny_tokenizer
from gemma_fast.outputs import check_replaceable, mark, replace_guard
from gemma_fast.recipe import load_recipe
from gemma_fast.training.run import train
from tests.conftest import run_script



def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def a_run(folder, text="old adapter"):
    mark(folder, "run")
    (folder / "adapter").mkdir()
    (folder / "adapter" / "weights").write_text(text)
    return folder


@pytest.mark.parametrize("where", [".", "..", "cwd", "home", "root", "repo"])
def test_protected_folders_are_never_replaced(tmp_path, monkeypatch, where):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    folder = {".": work / ".", "..": work / "..", "cwd": work, "home": tmp_path / "a", "root": work.anchor, "repo": tmp_path / "repo"}[where]
    with pytest.raises(UserError, match="refusing to replace .*: it is"):
        check_replaceable(type(work)(folder), "run")


def test_only_our_own_kind_of_folder_is_replaced(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("three years of work")
    with pytest.raises(UserError, match="holds no gemma_fast output"):
        check_replaceable(thesis, "run")
    index = tmp_path / "index"
    mark(index, "rag")
    with pytest.raises(UserError, match="holds a gemma_fast rag folder, not a gemma_fast run"):
        check_replaceable(index, "run")
    legacy = tmp_path / "legacy"  # a run from before the marker: recipe.yaml + checkpoints/
    (legacy / "checkpoints").mkdir(parents=True)
    (legacy / "recipe.yaml").write_text("name: x\n")
    check_replaceable(legacy, "run")


def test_the_old_folder_comes_back_when_the_new_one_fails(tmp_path):
    run = a_run(tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(RuntimeError), replace_guard(run, "run", overwrite=True) as aside:
        assert aside == tmp_path / "run.replaced" and not run.exists()
        mark(run, "run")
        (run / "half").write_text("a stub")
        raise RuntimeError("crash before the first checkpoint")
    assert snapshot(run) == before and not aside.exists()
    with replace_guard(run, "run", overwrite=True):
        a_run(run, "new adapter")
    assert (run / "adapter" / "weights").read_text() == "new adapter" and not aside.exists()


def test_a_resumable_new_run_is_kept_and_so_is_the_old_one(tmp_path):
    run = a_run(tmp_path / "run")
    with pytest.raises(UserError, match="kept in .*run.replaced"), \
            replace_guard(run, "run", overwrite=True, keep_on_failure=lambda f: True):
        a_run(run, "new")
        raise UserError("interrupted at step 3")
    assert (run / "adapter" / "weights").read_text() == "new"
    assert (tmp_path / "run.replaced" / "adapter" / "weights").read_text() == "old adapter"


# ---------------------------------------------------------------- through train(), build_index() and prepare()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    prepare(load_recipe("quickstart", ["data.max_records=24", "train.max_seq_length=256"]), out, tiny_tokenizer())
    return out


def recipe(model_dir, data_dir, *overrides):
    return load_recipe("quickstart", [f"model={model_dir}", f"data.dir={data_dir}", "train.max_steps=2", "train.batch_size=4",
                                      "train.max_seq_length=256", "lora.r=4", "lora.alpha=8", *overrides])


@pytest.mark.slow  # trains or generates with a tiny model: the full tier (make test)
def test_overwrite_keeps_the_old_run_until_the_new_one_is_checked(tmp_path, tiny_data, tiny_model_dir):
    run = tmp_path / "run"
    train(recipe(tiny_model_dir, tiny_data), run)
    before = snapshot(run)
    with pytest.raises(UserError, match="not found"):  # a typo in the model: checked before anything moves
        train(recipe(tmp_path / "typo", tiny_data), run, overwrite=True)
    with pytest.raises(UserError, match="the prompt alone is"):  # fails after the model loaded, still before --out
        train(recipe(tiny_model_dir, tiny_data, "train.max_seq_length=8"), run, overwrite=True)
    assert snapshot(run) == before
    train(recipe(tiny_model_dir, tiny_data, "train.max_steps=1"), run, overwrite=True)
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 1
    assert not (tmp_path / "run.replaced").exists()


def test_a_full_disk_at_the_adapter_save_names_the_checkpoint(tmp_path, tiny_data, tiny_model_dir, monkeypatch):
    import peft

    real = peft.PeftModel.save_pretrained

    def disk_full(self, folder, *args, **kwargs):  # checkpoints still save; the final adapter hits a full disk
        if str(folder).endswith("adapter.partial"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, folder, *args, **kwargs)

    monkeypatch.setattr(peft.PeftModel, "save_pretrained", disk_full)
    with pytest.raises(UserError, match="saving the adapter to .*No space left on device.*newest complete checkpoint is .*checkpoint-2"):
        train(recipe(tiny_model_dir, tiny_data, "train.save_steps=2"), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (tmp_path / "run" / "adapter").exists() and not (tmp_path / "run" / "adapter.partial").exists()


def test_prepare_refuses_to_overwrite_its_source(tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    source = mine / "train.jsonl"
    source.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(30)))
    before = source.read_bytes()
    r = load_recipe("quickstart", [f"data.source={source}", "data.length_filter=false"])
    with pytest.raises(UserError, match="refusing to write .*train.jsonl: it is an input of this run"):
        prepare(r, mine)
    assert source.read_bytes() == before


def test_a_dataset_cut_off_mid_write_is_refused_not_mixed(tmp_path, monkeypatch):
    import gemma_fast.data.pipeline as data

    r = load_recipe("quickstart", ["data.max_records=20", "data.length_filter=false"])
    prepare(r, tmp_path)
    real = data.write_jsonl

    def full_at_test(path, rows):
        if path.name == "test.jsonl":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, rows)

    monkeypatch.setattr(data, "write_jsonl", full_at_test)
    with pytest.raises(UserError, match="No space left on device.*marked incomplete"):  # one line, not a traceback
        prepare(load_recipe("quickstart", ["data.max_records=30", "data.length_filter=false"]), tmp_path)
    monkeypatch.setattr(data, "write_jsonl", real)
    with pytest.raises(UserError, match="holds an incomplete dataset"):
        load_split(tmp_path, "train")
    prepare(r, tmp_path)
    assert len(load_split(tmp_path, "train")) == 14


# ---------------------------------------------------------------- the CLI in a clone: --out . and --out ..


@pytest.fixture
def clone(tmp_path, tiny_model_dir):
    repo = tmp_path / "clone"
    repo.mkdir()
    (repo / "README.md").write_text("a project\n")
    (repo / "r.yaml").write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "data": {"source": "asset:quickstart_docs_qa.jsonl", "max_records": 20},
        "train": {"max_steps": 1, "batch_size": 2, "max_seq_length": 128},
        "rag": {"corpus": ["README.md"], "chunk_size": 200, "chunk_overlap": 0}}))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def git_status(repo):
    return subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=repo, capture_output=True, text=True).stdout


def test_out_dot_overwrite_in_a_clone_refuses_and_changes_nothing(clone):
    assert run_script("prepare_data", "--recipe", "r.yaml", "--out", "prepared", cwd=clone).returncode == 0
    subprocess.run(["git", "clean", "-qfdx"], cwd=clone, check=True)
    for args in (["--out", "."], ["--out", ".", "--overwrite"], ["--out", "..", "--overwrite"]):
        result = run_script("train_qlora", "--recipe", "r.yaml", *args, cwd=clone)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "already holds files" in result.stderr or "refusing to replace" in result.stderr
        assert git_status(clone) == ""
    for args in (["--out", ".."], ["--out", ".", "--overwrite"], ["--out", "..", "--overwrite"]):
        result = run_script("build_rag", "--recipe", "r.yaml", *args, cwd=clone)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert git_status(clone) == ""
    assert (clone / "README.md").read_text() == "a project\n" and (clone.parent / "clone").is_dir()


def test_build_rag_replaces_only_its_own_index(clone):
    notes = clone / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    result = run_script("build_rag", "--recipe", "r.yaml", "--out", "notes", "--overwrite", cwd=clone)
    assert result.returncode == 2 and "holds no gemma_fast output" in result.stderr
    assert (notes / "todo.txt").read_text() == "mine"
    assert run_script("build_rag", "--recipe", "r.yaml", "--out", "idx", cwd=clone).returncode == 0
    again = run_script("build_rag", "--recipe", "r.yaml", "--out", "idx", cwd=clone)
    assert again.returncode == 2 and "--overwrite replaces it" in again.stderr
    replaced = run_script("build_rag", "--recipe", "r.yaml", "--out", "idx", "--overwrite", cwd=clone)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert (clone / "idx" / "manifest.json").is_file() and not (clone / "idx.replaced").exists()

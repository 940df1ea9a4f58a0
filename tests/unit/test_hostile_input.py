"""Hostile and careless input (issue #16), one row per defect class of reliability_review.md, plus rows that already
passed there so they stay passing.

Each row runs a real CLI (scripts/*.py, in this process through runpy, so the fixtures' tiny model, prepared data
and trained run are shared and the table stays fast; a few rows use a real subprocess) or, where the CLI adds
nothing, the library function. The expected outcome: exit code 2 with exactly one `error:` line matching a regex
and no traceback, or exit 0 with the right result; and earlier outputs unchanged where that matters.

`BEFORE` is the review's verdict for the case at commit 47f21c3 (clear, misleading, traceback, silent-wrong,
data-loss, resource, ok), or for review 2 rows at 0476664 (hang: no result in time, or killed for memory);
test_table_counts prints the table's counts per category.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import re
import runpy
import shutil
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.conftest import ROOT, run_script

# ---------------------------------------------------------------- running a CLI


@dataclass
class Result:
    code: int | str  # the exit code, or "traceback" when an exception escaped cli.run
    stderr: str

    @property
    def flat(self) -> str:
        """stderr with rich's line wrapping undone (warnings are wrapped at the console width)."""
        return " ".join(self.stderr.split())

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def cli(script: str, *args: str, cwd: Path) -> Result:
    """Run scripts/<script>.py's real main through cli.run in this process, as `python scripts/<script>.py args`."""
    err = io.StringIO()
    saved_argv, saved_path, saved_cwd = sys.argv, list(sys.path), os.getcwd()
    sys.argv = [str(ROOT / "scripts" / f"{script}.py"), *args]
    code: int | str = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what a user would see as a traceback
        code = "traceback"
        err.write("Traceback (most recent call last):\n" + traceback.format_exc())
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
    return Result(code, err.getvalue())


def assert_one_line_error(result: Result, pattern: str) -> None:
    assert result.code == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(result.error_lines) == 1, result.stderr[-3000:]
    assert re.search(pattern, result.error_lines[0]), (pattern, result.error_lines[0])


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- shared world: one prepared dataset, one trained run


@pytest.fixture(scope="module")
def world(tiny_world):
    """The session's tiny world (conftest.tiny_world_master): tiny.yaml, data/tiny, runs/r1 with checkpoint-1 and
    checkpoint-2, eval_r1/ and other_model/ (a tiny Gemma 1, for the wrong-base rows); this module's own copy."""
    return tiny_world


@pytest.fixture(scope="module")
def data_world(tiny_data_world):
    """The same without runs/r1 and eval_r1/: the rows that need no trained run (Row.trained False), fast tier."""
    return tiny_data_world


def copy_run(world: Path, name: str) -> Path:
    target = world / "runs" / name
    shutil.copytree(world / "runs" / "r1", target)
    return target


@contextlib.contextmanager
def logged(name: str):
    """The messages the library logs under `name` while the block runs (the library logs; the commands print)."""
    import logging

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def prepared_copy(world: Path, name: str, test_lines: list[str]) -> str:
    """A copy of data/tiny whose test.jsonl is hand-edited; returns the --set for it."""
    folder = world / "data" / name
    shutil.copytree(world / "data" / "tiny", folder)
    (folder / "test.jsonl").write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    return f"data.dir=data/{name}"


def rec(i, **kw) -> str:
    return json.dumps({"id": f"t{i}", "instruction": f"What is item {i}?", "input": "", "output": f"Item {i}.", "lang": "en",
                       "source": "x", **kw})


# ---------------------------------------------------------------- the table


@dataclass
class Row:
    case: str  # the review's case id (or a new one)
    klass: int  # the review's defect number (0: a case that already passed)
    before: str  # the review's verdict at 47f21c3 (round 1) or 0476664 (round 2)
    run: Callable[[Path], None]  # performs the case and asserts the expected outcome
    tags: list[str] = field(default_factory=list)
    review: int = 1  # 1: reliability_review.md; 2: reliability_review_2.md (klass = its ranked defect number)
    slow: bool = False  # a real subprocess or signal, or a training run of its own: the full tier only (make test)
    trained: bool = False  # reads the world's trained run (runs/r1, eval_r1): the full tier, where that run is built

    @property
    def full_tier(self) -> bool:
        return self.slow or self.trained


def expect_error(script: str, args: list[str], pattern: str, setup: Callable[[Path], None] | None = None,
                 unchanged: str | None = None) -> Callable[[Path], None]:
    """A row that must end in one clear error line; `unchanged` names a folder that must not change."""
    def run(world: Path) -> None:
        if setup:
            setup(world)
        before = tree_digest(world / unchanged) if unchanged else None
        assert_one_line_error(cli(script, *args, cwd=world), pattern)
        if unchanged:
            assert tree_digest(world / unchanged) == before, f"{unchanged} changed"
    return run


def prep(*sets: str) -> list[str]:
    return ["--recipe", "tiny.yaml", "--out", "data/out_should_not_exist", *[a for s in sets for a in ("--set", s)]]


def recipe_row(case: str, klass: int, before: str, setting: str, pattern: str) -> Row:
    return Row(case, klass, before, expect_error("prepare_data", prep(setting), pattern))


# -- data (prepare_data.py)

def _csv_comma(world: Path) -> None:
    write(world / "in" / "comma.csv", "instruction,output\nWhat does it do?,It loads the data, cleans it and splits it\n")
    assert_one_line_error(cli("prepare_data", *prep("data.source=in/comma.csv"), cwd=world),
                          r"comma\.csv:2: 3 fields where the header has 2")


def _csv_bom(world: Path) -> None:
    rows = "".join(f"What is {i}?,Answer {i}.\n" for i in range(12))
    write(world / "in" / "bom.csv", b"\xef\xbb\xbf" + f"instruction,output\n{rows}".encode())
    result = cli("prepare_data", "--recipe", "tiny.yaml", "--out", "data/bom", "--set", "data.source=in/bom.csv",
                 "--set", "data.max_records=0", cwd=world)
    assert result.code == 0, result.stderr[-2000:]
    report = json.loads((world / "data" / "bom" / "prep_report.json").read_text())
    assert sum(report["kept"].values()) == 12 and report["dropped"] == {}


def _huge_record(world: Path) -> None:
    """A 1 MB answer is dropped as too_long by its character count, before the tokenizer sees it."""
    from gemma_fast.prompts import PromptFormat

    lines = [json.dumps({"instruction": f"q{i}?", "output": f"a{i}."}) for i in range(10)]
    lines.append(json.dumps({"instruction": "huge?", "output": "x" * 1_000_000}))
    write(world / "in" / "huge.jsonl", "\n".join(lines) + "\n")
    seen = []
    real = PromptFormat.example_lengths
    PromptFormat.example_lengths = lambda self, records: seen.extend(records) or real(self, records)
    try:
        result = cli("prepare_data", "--recipe", "tiny.yaml", "--out", "data/huge", "--set", "data.source=in/huge.jsonl",
                     "--set", "data.max_records=0", cwd=world)
    finally:
        PromptFormat.example_lengths = real
    assert result.code == 0, result.stderr[-2000:]
    assert json.loads((world / "data" / "huge" / "prep_report.json").read_text())["dropped"] == {"too_long": 1}
    assert all(len(r["output"]) < 1000 for r in seen)


def _bad_everything(world: Path) -> None:
    write(world / "in" / "allbad.jsonl", "\n".join(json.dumps({"instruction": "q"}) for _ in range(5)) + "\n")
    assert_one_line_error(cli("prepare_data", *prep("data.source=in/allbad.jsonl", "data.on_bad_record=skip"), cwd=world),
                          r"no training records left \(drops: \{'bad_record:missing_field': 5\}\)")


def _test_source_same(world: Path) -> None:
    write(world / "in" / "same.jsonl", "\n".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(5)) + "\n")
    assert_one_line_error(cli("prepare_data", *prep("data.source=in/same.jsonl", "data.test_source=in/same.jsonl"), cwd=world),
                          r"no training records left \(drops: \{'overlaps_test': 5\}\)")


def _deep_json(world: Path) -> None:
    write(world / "in" / "deep.json", "[" * 100_000 + "]" * 100_000)
    assert_one_line_error(cli("prepare_data", *prep("data.source=in/deep.json"), cwd=world), r"deep\.json: JSON nested too deeply")


def _diskfull_prepare(world: Path) -> None:
    """ENOSPC while writing test.jsonl: one line; the half-replaced dataset is marked incomplete and refused."""
    import gemma_fast.data.pipeline as data

    assert cli("prepare_data", "--recipe", "tiny.yaml", "--out", "data/full", cwd=world).code == 0
    real = data.write_jsonl

    def full(path, rows):
        if Path(path).name == "test.jsonl":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, rows)

    data.write_jsonl = full
    try:
        result = cli("prepare_data", "--recipe", "tiny.yaml", "--out", "data/full", "--set", "seed=4", cwd=world)
    finally:
        data.write_jsonl = real
    assert_one_line_error(result, r"test\.jsonl: No space left on device\); the folder is marked incomplete")
    from gemma_fast.errors import UserError

    with pytest.raises(UserError, match="incomplete dataset"):
        data.load_split(world / "data" / "full", "train")


def _readonly_prepare(world: Path) -> None:
    """EROFS on the first write into --out (injected: tests may run as root): one line naming the path."""
    import gemma_fast.data.pipeline as data

    real = data.mark

    def readonly(folder, kind):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder / ".gemma_fast"))

    data.mark = readonly
    try:
        result = cli("prepare_data", "--recipe", "tiny.yaml", "--out", "data/ro", cwd=world)
    finally:
        data.mark = real
    assert_one_line_error(result, r"data/ro.*Read-only file system.*the folder is marked incomplete")


DATA_ROWS = [
    Row("d-csv-unquoted-comma", 7, "silent-wrong", _csv_comma),
    Row("d-bom.csv", 20, "misleading", _csv_bom),
    Row("d-unterminated_quote.csv", 20, "misleading", expect_error(
        "prepare_data", prep("data.source=in/quote.csv"), r"quote\.csv:3: malformed CSV from this line on.*unterminated quote",
        setup=lambda w: write(w / "in" / "quote.csv", 'instruction,output\nq1,a1\nq2,"a2 never closed\nq3,a3\n'))),
    Row("d-adir.jsonl", 20, "misleading", expect_error(
        "prepare_data", prep("data.source=in/adir.jsonl"), r"data source in/adir\.jsonl is a folder, not a file",
        setup=lambda w: (w / "in" / "adir.jsonl").mkdir(parents=True, exist_ok=True))),
    Row("d-relpath-typo", 20, "misleading", expect_error(
        "prepare_data", prep("data.source=mydata/train.jsonl"), r"data source not found: mydata/train\.jsonl \(no such file relative to")),
    Row("d-deep-json", 22, "traceback", _deep_json),
    Row("d-corrupt-parquet", 22, "traceback", expect_error(
        "prepare_data", prep("data.source=in/bad.parquet"), r"bad\.parquet: not a readable parquet file",
        setup=lambda w: write(w / "in" / "bad.parquet", b"PAR1 this is not parquet at all PAR1"))),
    Row("d-skip-all-bad", 15, "traceback", _bad_everything),
    Row("d-test-source-same", 15, "traceback", _test_source_same),
    Row("d-huge-record", 19, "resource", _huge_record),
    Row("d-out-overwrites-source", 6, "data-loss", expect_error(
        "prepare_data", ["--recipe", "tiny.yaml", "--out", "src", "--set", "data.source=src/train.jsonl"],
        r"refusing to write src/train\.jsonl: it is an input of this run",
        setup=lambda w: write(w / "src" / "train.jsonl", "\n".join(json.dumps({"instruction": f"q{i}", "output": "a"}) for i in range(9)) + "\n"),
        unchanged="src")),
    Row("d-out-is-file", 12, "traceback", expect_error(
        "prepare_data", ["--recipe", "tiny.yaml", "--out", "afile.txt"], r"--out afile\.txt is a file, not a folder",
        setup=lambda w: write(w / "afile.txt", "keep me"))),
    Row("d-diskfull", 5, "data-loss", _diskfull_prepare),
    Row("d-readonly-out", 12, "traceback", _readonly_prepare),
    Row("d-unknown-format (ok)", 0, "clear", expect_error(
        "prepare_data", prep("data.format=parquetish"), r"'data\.format' must be one of alpaca, dolly")),
]

# -- recipes and --set (every script loads them the same way; prepare_data fails fastest)

RECIPE_ROWS = [
    recipe_row("t-lr-neg", 10, "traceback", "train.lr=-1", r"'train\.lr' must be > 0, got -1\.0"),
    recipe_row("t-lr-nan", 10, "traceback", "train.lr=nan", r"'train\.lr' must be a finite number"),
    recipe_row("t-batch-0", 10, "traceback", "train.batch_size=0", r"'train\.batch_size' must be >= 1, got 0"),
    recipe_row("t-grad-accum-0", 10, "traceback", "train.grad_accum=0", r"'train\.grad_accum' must be >= 1"),
    recipe_row("t-logging-steps-0", 10, "traceback", "train.logging_steps=0", r"'train\.logging_steps' must be >= 1"),
    recipe_row("t-optimizer-foo", 10, "traceback", "train.optimizer=foo", r"'train\.optimizer' 'foo' is not a transformers optimizer; valid: adamw_torch, .*paged_adamw_32bit"),
    recipe_row("t-seed-neg", 10, "traceback", "seed=-1", r"'seed' must be >= 0 and <= 4294967295, got -1"),
    recipe_row("d-max-records-neg", 10, "traceback", "data.max_records=-1", r"'data\.max_records' must be >= 0"),
    recipe_row("e-eval-batch-0", 10, "traceback", "eval.batch_size=0", r"'eval\.batch_size' must be >= 1"),
    recipe_row("e-max-new-tokens-0", 10, "traceback", "eval.max_new_tokens=0", r"'eval\.max_new_tokens' must be >= 1"),
    Row("e-sample-temp-0", 10, "traceback", expect_error(
        "prepare_data", prep("eval.do_sample=true", "eval.temperature=0"), r"eval\.do_sample=true needs eval\.temperature > 0")),
    recipe_row("g-chunk-overlap-neg", 10, "traceback", "rag.chunk_overlap=-5", r"'rag\.chunk_overlap' must be >= 0, got -5"),
    recipe_row("set-bad-yaml", 10, "traceback", "lora.target_modules=[a, b", r"--set lora\.target_modules: the value '\[a, b' is not valid YAML"),
    Row("recipe-latin1", 10, "traceback", expect_error(
        "prepare_data", ["--recipe", "latin1.yaml"], r"latin1\.yaml: not valid UTF-8 \(byte \d+\)",
        setup=lambda w: write(w / "latin1.yaml", "name: caf\xe9\n".encode("latin-1")))),
    Row("recipe-duplicate-key", 21, "silent-wrong", expect_error(
        "prepare_data", ["--recipe", "dup.yaml"], r"dup\.yaml:4:\d+: malformed YAML: duplicate key 'lr' \(first on line 3\)",
        setup=lambda w: write(w / "dup.yaml", "name: dup\ntrain:\n  lr: 1e-4\n  lr: 1e-1\n"))),
    Row("t-epochs-0", 9, "silent-wrong", expect_error(
        "prepare_data", prep("train.epochs=0", "train.max_steps=-1"), r"set train\.epochs > 0 or train\.max_steps > 0")),
    recipe_row("t-epochs-neg", 9, "silent-wrong", "train.epochs=-1", r"'train\.epochs' must be >= 0"),
    recipe_row("e-max-examples-neg", 21, "silent-wrong", "eval.max_examples=-3", r"'eval\.max_examples' must be >= 0, got -3"),
    recipe_row("t-lora-r-0", 20, "misleading", "lora.r=0", r"'lora\.r' must be >= 1, got 0"),
    recipe_row("t-lora-dropout-2", 20, "misleading", "lora.dropout=2", r"'lora\.dropout' must be >= 0 and < 1, got 2\.0"),
    recipe_row("d-fractions", 20, "misleading", "data.val_fraction=1.5", r"'data\.val_fraction' must be >= 0 and < 1"),
    recipe_row("t-batchsize-typo (ok)", 0, "clear", "train.batchsize=2", r"unknown key 'train\.batchsize'; valid: train\.method"),
]

# -- training (train_qlora.py)


def _ckpt_corrupt(world: Path) -> None:
    """A truncated newest checkpoint is skipped with a note; the resume continues from checkpoint-1; metrics.jsonl
    ends with each step once (rows after the checkpoint, logged by the run that was cut off, are dropped)."""
    run = copy_run(world, "ckpt")
    weights = run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/ckpt", "--resume", "--set", "train.max_steps=3", cwd=world)
    assert result.code == 0, result.stderr[-3000:]
    assert "skipped checkpoint-2: adapter_model.safetensors is truncated" in result.flat
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open() if "loss" in json.loads(line)]
    assert steps == [1, 2, 3]
    assert json.loads((run / "train_summary.json").read_text())["resumed_from"].endswith("checkpoint-1")


def _ckpt_all_corrupt(world: Path) -> None:
    run = copy_run(world, "ckpt_bad")
    for ckpt in (run / "checkpoints").glob("checkpoint-*"):
        (ckpt / "trainer_state.json").write_text("{ not json")
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/ckpt_bad", "--resume", cwd=world),
                          r"no usable checkpoint .*checkpoint-2: trainer_state\.json unreadable")


def _resume_other_r(world: Path) -> None:
    run = copy_run(world, "other_r")
    before = tree_digest(run)
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/other_r", "--resume", "--set", "lora.r=8", cwd=world),
                          r"was trained with lora\.r=4 \(recipe: 8\).*nothing was changed")
    assert tree_digest(run) == before  # recipe.yaml not rewritten


def _resume_other_model_no_recipe(world: Path) -> None:
    run = copy_run(world, "other_model_run")
    (run / "recipe.yaml").unlink()
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/other_model_run", "--resume",
                              "--set", f"model={world / 'other_model'}", cwd=world), r"was trained on model .*\(their weights differ\)")


def _resume_relpath(world: Path) -> None:
    """The same model named by a relative path from another folder is the same model."""
    from gemma_fast.recipe import load_recipe
    from gemma_fast.training.run import check_run_dir

    model = Path(yaml.safe_load((world / "tiny.yaml").read_text())["model"])
    elsewhere = world / "sub"
    elsewhere.mkdir(exist_ok=True)
    saved = os.getcwd()
    os.chdir(elsewhere)
    try:
        recipe = load_recipe(str(world / "tiny.yaml"), [f"model={os.path.relpath(model)}"])
        assert check_run_dir(world / "runs" / "r1", recipe, resume=True, overwrite=False).endswith("checkpoint-2")
    finally:
        os.chdir(saved)


def _trim_metrics(world: Path) -> None:
    from gemma_fast.training.run import trim_metrics

    path = write(world / "m" / "metrics.jsonl", "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    trim_metrics(path, Path("checkpoint-2"))
    assert [json.loads(line)["step"] for line in path.open()] == [1, 2]


def _readonly_train(world: Path) -> None:
    import gemma_fast.training.run as train

    real = train.mark

    def readonly(folder, kind):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))

    train.mark = readonly
    try:
        result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/ro", cwd=world)
    finally:
        train.mark = real
    assert_one_line_error(result, r"runs/ro: Permission denied \(PermissionError\).*nothing earlier was lost")
    assert not (world / "runs" / "ro").exists()


def _lora_error_wording(world: Path) -> None:
    """peft's own LoraConfig errors are not blamed on target_modules (the recipe check comes first; this is the fallback)."""
    from types import SimpleNamespace

    import torch

    import gemma_fast.training.run as train
    from gemma_fast.families import FAMILIES
    from gemma_fast.errors import UserError
    from gemma_fast.recipe import load_recipe

    recipe = load_recipe(str(world / "tiny.yaml"), ["lora.use_dora=true", "lora.target_modules=nothing_here"])
    import peft

    real = peft.get_peft_model
    peft.get_peft_model = lambda model, config: (_ for _ in ()).throw(ValueError("r must be positive"))
    try:
        with pytest.raises(UserError, match=r"^lora \(r=4, alpha=8, dropout=0\.05\): r must be positive"):
            train.attach_adapter(SimpleNamespace(model=torch.nn.Linear(1, 1), backend="hf", family=FAMILIES["gemma3"]), recipe, "lora")
    finally:
        peft.get_peft_model = real


TRAIN_ROWS = [
    Row("t-ckpt-truncated-adapter", 11, "traceback", _ckpt_corrupt, slow=True),
    Row("t-ckpt-all-bad", 11, "traceback", _ckpt_all_corrupt, trained=True),
    Row("t-resume-other-lora-r", 13, "traceback", _resume_other_r, trained=True),
    Row("t-resume-other-model-no-recipe", 14, "silent-wrong", _resume_other_model_no_recipe, trained=True),
    Row("t-resume-otherdir-relpath", 14, "misleading", _resume_relpath, trained=True),
    Row("t-sigkill-mid-resume (metrics)", 21, "silent-wrong", _trim_metrics),
    Row("t-readonly-out", 12, "traceback", _readonly_train),
    Row("t-lora-peft-error-wording", 20, "misleading", _lora_error_wording),
    Row("t-lr-neg then t-retry-after-fail", 18, "misleading", lambda w: (
        assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/retry", "--set", "train.lr=-1", cwd=w),
                              r"'train\.lr' must be > 0"),
        assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/retry", "--set", "train.max_seq_length=4", cwd=w),
                              r"'train\.max_seq_length' must be >= 8"),
        (w / "runs" / "retry").exists() and pytest.fail("a failed run left a stub folder"))),
    Row("t-out-dot-overwrite", 1, "data-loss", expect_error(
        "train_qlora", ["--recipe", "tiny.yaml", "--out", ".", "--overwrite"], r"refusing to replace \.: it is the working directory",
        unchanged="data/tiny")),
    Row("t-overwrite-nonrun-folder", 1, "data-loss", expect_error(
        "train_qlora", ["--recipe", "tiny.yaml", "--out", "thesis", "--overwrite"], r"refusing to replace thesis with --overwrite: it holds no gemma_fast output",
        setup=lambda w: write(w / "thesis" / "thesis.txt", "years of work"), unchanged="thesis")),
]

# -- evaluation (evaluate.py) and robustness


def _preds(world: Path, name: str, rows: list) -> str:
    split = [json.loads(line) for line in (world / "data" / "tiny" / "test.jsonl").open()][:3]
    lines = [json.dumps(r) if isinstance(r, dict) else r for r in rows(split)] if callable(rows) else rows
    write(world / "preds" / name, "\n".join(lines) + "\n")
    return f"preds/{name}"


def _preds_one_empty(world: Path) -> None:
    path = _preds(world, "empty.jsonl", lambda split: [{"id": r["id"], "prediction": "" if i == 0 else r["output"]} for i, r in enumerate(split)])
    result = cli("evaluate", "--recipe", "tiny.yaml", "--predictions", path, "--out", "ev_empty", cwd=world)
    assert result.code == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (world / "ev_empty" / "predictions.jsonl").open()]
    assert rows[0]["predictions"]["bertscore_f1"] == 0.0 and rows[1]["predictions"]["bertscore_f1"] > 0.9


def _preds_duplicate(world: Path) -> None:
    path = _preds(world, "dup.jsonl", lambda split: [{"id": r["id"], "prediction": "x"} for r in split] + [{"id": split[0]["id"], "prediction": "y"}])
    assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--predictions", path, "--out", "ev_dup", cwd=world),
                          r"dup\.jsonl:4: duplicate id '.+' \(first on line 1\)")


def _preds_blank_then_bad(world: Path) -> None:
    path = _preds(world, "blank.jsonl", ['{"id": "a", "prediction": "x"}', "", '{"id": "b"}'])
    assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--predictions", path, "--out", "ev_blank", cwd=world),
                          r"blank\.jsonl:3: each line needs 'id' and a string 'prediction'")


def _eval_cache(world: Path) -> None:
    """Answers are reused only for the same adapter weights and the same prompt/reference; a torn last line is dropped."""
    args = ["--recipe", "tiny.yaml", "--adapter", "runs/cache", "--out", "ev_cache"]
    run = copy_run(world, "cache")
    first = cli("evaluate", *args, cwd=world)
    assert first.code == 0, first.stderr[-3000:]
    partial = world / "ev_cache" / "partial" / "fine-tuned.jsonl"
    assert len(partial.read_text().splitlines()) == 3
    with partial.open("a") as handle:
        handle.write('{"id": "torn", "predic')
    again = cli("evaluate", *args, cwd=world)
    assert again.code == 0 and "dropping a cut-off last line" in again.flat, again.stderr[-3000:]
    assert "starting over" not in again.flat
    # retrain in place (here: change the weights): nothing stale is reused
    from safetensors.torch import load_file, save_file

    weights = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v + 0.5 for k, v in tensors.items()}, weights)
    stale = cli("evaluate", *args, cwd=world)
    assert stale.code == 0 and "another model or other settings; starting over" in stale.flat, stale.stderr[-3000:]


def _torn_partial(world: Path) -> None:
    from gemma_fast.evaluation.run import read_partial

    path = write(world / "torn" / "fine-tuned.jsonl", '{"id": "a", "prediction": "x"}\n{"id": "b", "predic')
    with logged("gemma_fast.evaluation.run") as notes:
        assert read_partial(path) == [{"id": "a", "prediction": "x"}]
    assert any("dropping a cut-off last line" in note for note in notes)


def _eval_row_keys(world: Path) -> None:
    """A cached answer belongs to one prompt and reference: an edited test record is answered again."""
    from gemma_fast.evaluation.run import row_key

    base = {"id": "1", "instruction": "q?", "input": "", "output": "a."}
    assert row_key(base) == row_key(dict(base))
    assert row_key(base) != row_key({**base, "output": "b."}) != row_key({**base, "instruction": "other?"})


def _adapter_copied_to_other_base(world: Path) -> None:
    shutil.copytree(world / "runs" / "r1" / "adapter", world / "copied_adapter")
    assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--set", f"model={world / 'other_model'}",
                              "--adapter", "copied_adapter", "--out", "ev_copied", cwd=world),
                          r"adapter copied_adapter was trained on model .*\(their weights differ\)")
    (world / "copied_adapter" / "gemma_fast_base.json").unlink()  # peft's adapter_config.json still names the base
    assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--set", f"model={world / 'other_model'}",
                              "--adapter", "copied_adapter", "--out", "ev_copied", cwd=world), r"was trained on model")
    assert not (world / "ev_copied").exists()


def _readonly_eval(world: Path) -> None:
    import gemma_fast.evaluation.run as evaluation

    path = _preds(world, "ok.jsonl", lambda split: [{"id": r["id"], "prediction": r["output"]} for r in split])
    real = evaluation.write_jsonl

    def readonly(target, rows):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

    evaluation.write_jsonl = readonly
    try:
        result = cli("evaluate", "--recipe", "tiny.yaml", "--predictions", path, "--out", "ev_ro", cwd=world)
    finally:
        evaluation.write_jsonl = real
    assert_one_line_error(result, r"ev_ro/predictions\.jsonl: Read-only file system")


def _robustness_sign(world: Path) -> None:
    from gemma_fast.evaluation.robustness import relative_drop

    assert relative_drop(2.0, 2.2, "answer_loss") == pytest.approx(0.1)  # loss went up: the model got worse
    assert relative_drop(0.5, 0.4, "rougeL") == pytest.approx(0.2)
    assert relative_drop(0.0, 0.4, "rougeL") is None


EVAL_ROWS = [
    Row("e-preds-one-empty", 3, "traceback", _preds_one_empty),
    Row("e-preds-duplicate-id", 21, "silent-wrong", _preds_duplicate),
    Row("e-preds-blank_then_bad", 20, "misleading", _preds_blank_then_bad),
    Row("e-split-duplicate-id", 21, "silent-wrong", expect_error(
        "evaluate", ["--recipe", "tiny.yaml", "--set", "data.dir=data/dupsplit", "--predictions", "nofile.jsonl"],
        r"dupsplit/test\.jsonl:2: duplicate id 't1' \(first on line 1\)",
        setup=lambda w: prepared_copy(w, "dupsplit", [rec(1), rec(1)]))),
    Row("e-split-numeric-output", 22, "traceback", expect_error(
        "evaluate", ["--recipe", "tiny.yaml", "--set", "data.dir=data/numsplit", "--predictions", "nofile.jsonl"],
        r"numsplit/test\.jsonl:2: field 'output' must be a string, got int",
        setup=lambda w: prepared_copy(w, "numsplit", [rec(1), rec(2, output=42)]))),
    Row("t-split-numeric-output", 22, "traceback", expect_error(
        "train_qlora", ["--recipe", "tiny.yaml", "--set", "data.dir=data/numtrain", "--out", "runs/numtrain"],
        r"numtrain/train\.jsonl:3: field 'instruction' must be a string, got list",
        setup=lambda w: (shutil.copytree(w / "data" / "tiny", w / "data" / "numtrain"),
                         write(w / "data" / "numtrain" / "train.jsonl", "\n".join([rec(1), "", rec(2, instruction=["a"])]) + "\n")))),
    Row("e-split-missing-field-lineno", 20, "misleading", expect_error(
        "evaluate", ["--recipe", "tiny.yaml", "--set", "data.dir=data/gapsplit", "--predictions", "nofile.jsonl"],
        r"gapsplit/test\.jsonl:5: missing field 'output'",
        setup=lambda w: prepared_copy(w, "gapsplit", [rec(1), "", rec(2), "", json.dumps({"id": "t3", "instruction": "q"})]))),
    Row("e-stale-eval-reuses + e-partial-truncated-line", 4, "silent-wrong", _eval_cache, slow=True),
    Row("e-partial-row-keys", 4, "silent-wrong", _eval_row_keys),
    Row("e-partial-truncated-line", 16, "traceback", _torn_partial),
    Row("e-adapter-other-model-copied", 14, "silent-wrong", _adapter_copied_to_other_base, trained=True),
    Row("e-readonly-out", 12, "traceback", _readonly_eval),
    Row("b-metric-loss-sign", 17, "silent-wrong", _robustness_sign),
    Row("e-no-adapter (ok)", 0, "clear", expect_error(
        "evaluate", ["--recipe", "tiny.yaml", "--adapter", "no_run"], r"no adapter found at no_run")),
]

# -- RAG (build_rag.py and loading an index)


def _forged_manifest(world: Path) -> None:
    """A planted index.pkl with a manifest carrying its recomputed checksum is refused, never unpickled."""
    from gemma_fast.errors import UserError
    from gemma_fast.rag import load_index
    from gemma_fast.recipe import RagConfig

    folder = world / "forged"
    marker = world / "PWNED"

    class Plant:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    write(folder / "index.pkl", pickle.dumps(Plant()))
    write(folder / "index.faiss", b"x")
    write(folder / "manifest.json", json.dumps({
        "written_by": "gemma_fast", "embedding_model": "embedded:all-minilm-l6-v2",
        "files_sha256": {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("index.pkl", "index.faiss")}}))
    with pytest.raises(UserError, match="rebuild it with build_rag.py --overwrite"):
        load_index(RagConfig(index=str(folder)))
    assert not marker.exists()


def _damaged_manifest(world: Path) -> None:
    from gemma_fast.errors import UserError
    from gemma_fast.rag import load_index
    from gemma_fast.recipe import RagConfig

    folder = world / "damaged"
    write(folder / "manifest.json", json.dumps({"written_by": "gemma_fast", "files_sha256": ["index.faiss"]}))
    with pytest.raises(UserError, match="damaged"):
        load_index(RagConfig(index=str(folder)))


RAG_ROWS = [
    Row("g-load-forged-manifest", 8, "silent-wrong", _forged_manifest),
    Row("g-manifest-damaged", 22, "traceback", _damaged_manifest),
    Row("g-out-existing-folder", 2, "data-loss", expect_error(
        "build_rag", ["--recipe", "tiny.yaml", "--out", "notes", "--set", "rag.corpus=notes/*.md"],
        r"notes already holds files: --overwrite replaces it",
        setup=lambda w: write(w / "notes" / "mine.md", "my notes"), unchanged="notes")),
    Row("g-out-dotdot", 2, "data-loss", lambda w: _dotdot(w)),
]


def _dotdot(world: Path) -> None:
    """From a sub-folder, `--out .. --overwrite` names the work folder itself: refused, nothing removed."""
    (world / "sub").mkdir(exist_ok=True)
    write(world / "notes" / "mine.md", "my notes")
    assert_one_line_error(cli("build_rag", "--recipe", "../tiny.yaml", "--out", "..", "--overwrite",
                              "--set", "rag.corpus=../notes/*.md", cwd=world / "sub"),
                          r"refusing to replace \.\.: it is the working directory or one of its parents")
    assert (world / "tiny.yaml").is_file() and (world / "notes" / "mine.md").is_file()

# ---------------------------------------------------------------- round 2 (reliability_review_2.md)


def _user_files(world: Path, folder: str, names: tuple[str, ...]) -> None:
    for name in names:
        write(world / folder / name, f"my own {name}, not a gemma_fast output\n")


def _out_with_user_files(script: str, args: list[str], folder: str, names: tuple[str, ...]) -> Callable[[Path], None]:
    """The user's own files in --out: refused without --overwrite, every file unchanged."""
    pattern = rf"{folder} holds files gemma_fast did not write \({re.escape(', '.join(sorted(names)))}\): --overwrite writes"
    return expect_error(script, [*args, "--out", folder], pattern, setup=lambda w: _user_files(w, folder, names), unchanged=folder)


def _overwrite_keeps_user_files(world: Path) -> None:
    """--overwrite writes our outputs beside the user's files and removes nothing; a rerun into our own folder needs
    no --overwrite."""
    _user_files(world, "mixed", ("notes.txt",))
    assert cli("prepare_data", "--recipe", "tiny.yaml", "--out", "mixed", cwd=world).code == 2
    assert cli("prepare_data", "--recipe", "tiny.yaml", "--out", "mixed", "--overwrite", cwd=world).code == 0
    assert (world / "mixed" / "notes.txt").read_text() == "my own notes.txt, not a gemma_fast output\n"
    assert (world / "mixed" / "train.jsonl").is_file()
    assert cli("prepare_data", "--recipe", "tiny.yaml", "--out", "ours", cwd=world).code == 0
    rerun = cli("prepare_data", "--recipe", "tiny.yaml", "--out", "ours", "--set", "seed=5", cwd=world)
    assert rerun.code == 0, rerun.stderr[-2000:]


def _eval_into_run_folder(world: Path) -> None:
    """An evaluation never writes into a training run's own folder (another gemma_fast kind), --overwrite or not."""
    copy_run(world, "evalinto")
    for extra in ([], ["--overwrite"]):
        assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--adapter", "runs/evalinto", "--out", "runs/evalinto",
                                  *extra, cwd=world), r"refusing to write eval outputs into runs/evalinto: it holds a gemma_fast run folder")


def _symlinked_overwrite(world: Path) -> None:
    """train --overwrite through a symlinked --out, twice: the folder behind the link is replaced, the link stays, and
    no `.replaced` is left to block the next run."""
    copy_run(world, "behind")
    (world / "link").symlink_to(world / "runs" / "behind")
    for _ in range(2):
        result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "link", "--overwrite", cwd=world)
        assert result.code == 0, result.stderr[-3000:]
    assert (world / "link").is_symlink() and (world / "link" / "adapter" / "adapter_config.json").is_file()
    assert not list((world / "runs").glob("*.replaced")) and not (world / "link.replaced").exists()


def _alias_bomb(levels: int = 9) -> str:
    """A flow list whose aliases stand for 9**levels values in about 300 bytes (y-bomb-*)."""
    text = "&a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"
    for i in range(1, levels):
        text = f"&a{i} [{text}," + ",".join([f"*a{i - 1}"] * 8) + "]"
    return text


def _bounded_repr(world: Path) -> None:
    """coerce() builds its message only on failure, from a bounded repr: a value sharing one list 10^9 times (what
    an alias bomb constructs) is refused at once with a short line."""
    import dataclasses

    from gemma_fast.errors import UserError
    from gemma_fast.recipe import Recipe, coerce

    value: list = ["lol"] * 9
    for _ in range(9):
        value = [value] * 9
    fld = next(f for f in dataclasses.fields(Recipe) if f.name == "seed")
    with pytest.raises(UserError) as info:
        coerce(value, int, fld, "seed", "r.yaml")
    assert len(str(info.value)) < 300 and str(info.value).startswith("r.yaml: 'seed' must be int, got [[[")


def _chat_long(flag: str) -> Callable[[Path], None]:
    """A 100 KB --prompt or --context is refused by its length in characters, before it is tokenized or a token is
    generated (review 2: a 21 GB attention buffer, OOM-killed): one line, nothing on stdout."""
    def run(world: Path) -> None:
        from gemma_fast.prompts import PromptFormat

        real = PromptFormat.encode

        def encode(self, prompt):  # a guard, so that a missing check fails here instead of exhausting memory
            if sum(len(str(s)) for s in prompt) > 10_000:
                raise AssertionError("a 100 KB prompt reached the tokenizer")
            return real(self, prompt)

        PromptFormat.encode = encode
        try:
            args = ["--prompt", "x " * 50_000] if flag == "--prompt" else ["--prompt", "What is it?", "--context", "y " * 50_000]
            result = cli("chat", "--recipe", "tiny.yaml", *args, cwd=world)
        finally:
            PromptFormat.encode = real
        assert_one_line_error(result, r"the prompt is 100,\d{3} characters; with --max-new-tokens 256 it must fit in 128 tokens "
                                      r"\(train\.max_seq_length.*nothing was generated")
    return run


NOTES = {"resume.md": "Resume a run with --resume: it continues from the newest checkpoint.",
         "export.md": "Export a run to GGUF with --export-only --gguf q8_0.",
         "chat.md": "Chat with a run through scripts/chat.py --adapter."}


def _index(world: Path, name: str = "notes") -> Path:
    """rag/<name>: a three-passage index of NOTES, built once through build_rag.py; a fresh copy for each caller
    that will damage it (name != "notes")."""
    base = world / "rag" / "notes"
    if not base.is_dir():
        for file, text in NOTES.items():
            write(world / "notes_src" / file, text)
        built = cli("build_rag", "--recipe", "tiny.yaml", "--out", "rag/notes", "--set", "rag.corpus=notes_src/*.md", cwd=world)
        assert built.code == 0, built.stderr[-3000:]
    if name == "notes":
        return base
    target = world / "rag" / name
    shutil.copytree(base, target)
    return target


def _huge_k(world: Path) -> None:
    """rag.k=10^9 retrieves every passage (3), for evaluation and for training alike: k is capped at the index size
    when the index loads (review 2: faiss asked for k results per query, OOM-killed at 21.7 GB)."""
    from langchain_community.vectorstores import FAISS

    _index(world)
    asked: list[int] = []
    real = FAISS.similarity_search_with_score

    def search(self, query, k=4, **kw):  # a guard: an uncapped k fails here instead of exhausting memory
        if k > 1000:
            raise AssertionError(f"faiss asked for k={k}")
        hits = real(self, query, k=k, **kw)
        asked.append((k, len(hits)))
        return hits

    FAISS.similarity_search_with_score = search
    try:
        preds = _preds(world, "k.jsonl", lambda split: [{"id": r["id"], "prediction": r["output"]} for r in split])
        sets = ["--set", "rag.index=rag/notes", "--set", "rag.k=1000000000"]
        scored = cli("evaluate", "--recipe", "tiny.yaml", "--predictions", preds, "--out", "ev_k", *sets, cwd=world)
        assert scored.code == 0, scored.stderr[-3000:]
        trained = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/k", "--set", "train.max_steps=1",
                        "--set", "train.max_seq_length=512", *sets, cwd=world)
        assert trained.code == 0, trained.stderr[-3000:]
    finally:
        FAISS.similarity_search_with_score = real
    assert len(asked) > 3 and set(asked) == {(3, 3)}  # every passage, for each test and each train question


def _stale_merged(world: Path) -> None:
    """<run>/merged is reused for the GGUF only when its record says it is this adapter merged into this base: the
    plain base planted there (newer than the adapter, as in x-export-stale-merged), a merge without a record, and a
    merge of the adapter before it was retrained are merged afresh, and <run>/merged is left as it is."""
    from gemma_fast.export.merge import MERGED_FILE, merged_for_export, merged_mismatch
    from gemma_fast.recipe import load_recipe

    run = copy_run(world, "stale")
    recipe = load_recipe(str(world / "tiny.yaml"))
    work = world / "stale_work"
    shutil.copytree(recipe.model, run / "merged")  # the plain base, written after the adapter
    planted = tree_digest(run / "merged")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        merged, temporary = merged_for_export(recipe, run, work)
    assert (merged, temporary) == (work / "merged", True)
    assert f"no readable {MERGED_FILE}" in err.getvalue() and tree_digest(run / "merged") == planted
    shutil.rmtree(run / "merged")
    done = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/stale", "--export-only", "--merge", cwd=world)
    assert done.code == 0, done.stderr[-3000:]
    assert merged_for_export(recipe, run, work) == (run / "merged", False)  # this adapter, this base: reused
    assert "made from the base" in merged_mismatch(run / "merged", run / "adapter", str(world / "other_model"))
    from safetensors.torch import load_file, save_file

    weights = run / "adapter" / "adapter_model.safetensors"
    save_file({k: v + 0.5 for k, v in load_file(weights).items()}, weights)  # retrained in place
    assert "made from another adapter" in merged_mismatch(run / "merged", run / "adapter", recipe.model)
    with contextlib.redirect_stderr(io.StringIO()):
        assert merged_for_export(recipe, run, work) == (work / "merged", True)


def _worse_file_near_tie(world: Path) -> None:
    """A file whose own measured error is large no longer earns a loose near-tie check: the tolerance is the budget
    of its type (a share of the merged model's logit scale), so a divergence with margin 1.0 fails q8_0 although the
    file's |Δlogit| is 3.0; a true near tie (margin 0.1) still passes, and f16's budget is tighter than q8_0's."""
    from types import SimpleNamespace

    from gemma_fast.export.roundtrip import NEAR_TIE_SHARE, Item, compare

    def check(kind: str, margin: float) -> dict:
        item = Item("q1", "p", "t", [1, 2], [1, 2, 5, 6], [1, 2], ref_top=[[5, 9], [6, 9]], ref_top_logits=[[4.0, 1.0], [4.0, 1.0]],
                    ref_argmax=[5, 6], greedy=[5, 6])
        ref = SimpleNamespace(items=[item], end_of_turn=106, text=str, margin=lambda it, step, other: (margin, 20.0))
        worse = {"rows": [{"ids": [1, 2, 5, 6], "argmax": [5, 6], "at_ref_top": [[7.0, 1.0], [4.0, 4.0]], "greedy": [5, 7]}]}
        return compare(ref, worse, kind)

    loose = check("q8_0", 1.0)
    assert loose["max_abs_dlogit_top5"] == 3.0 and not loose["pass"]
    assert "exceeds the q8_0 near-tie budget 0.320" in loose["problems"][0]
    assert check("q8_0", 0.1)["pass"] and check("q8_0", 0.1)["greedy_near_ties"] == 1
    assert not check("f16", 0.1)["pass"] and NEAR_TIE_SHARE["f16"] < NEAR_TIE_SHARE["q8_0"] < NEAR_TIE_SHARE["q4_k_m"]


EXPORT_ROWS = [  # review 2, class 6: an export that cannot pass wrongly
    Row("x-export-stale-merged", 6, "silent-wrong", _stale_merged, review=2, slow=True),
    Row("x-roundtrip-worse-file", 6, "silent-wrong", _worse_file_near_tie, review=2),
]

def _tiny_gguf(path: Path, cut: int = 0) -> Path:
    """A small well-formed GGUF (two float tensors), its last `cut` bytes removed."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tensor("token_embd.weight", np.ones((64, 16), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((16,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    return path


def _chat_stdin(data: bytes, *args: str) -> Callable[[Path], Result]:
    """chat.py with `data` on a non-terminal stdin."""
    def run(world: Path) -> Result:
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        try:
            return cli("chat", "--recipe", "tiny.yaml", *args, cwd=world)
        finally:
            sys.stdin = saved
    return run


def _stdin_error(data: bytes, args: list[str], pattern: str) -> Callable[[Path], None]:
    return lambda world: assert_one_line_error(_chat_stdin(data, *args)(world), pattern)


def _tampered_index(name: str, damage: Callable[[Path], None], pattern: str) -> Callable[[Path], None]:
    """index.faiss damaged and the manifest's checksum recomputed to match (so only the file itself can tell):
    retrieval for an evaluation refuses it in one line before faiss reads a vector."""
    def run(world: Path) -> None:
        folder = _index(world, name)
        damage(folder / "index.faiss")
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files_sha256"]["index.faiss"] = hashlib.sha256((folder / "index.faiss").read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
        preds = _preds(world, f"{name}.jsonl", lambda split: [{"id": r["id"], "prediction": r["output"]} for r in split])
        assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--predictions", preds, "--out", f"ev_{name}",
                                  "--set", f"rag.index=rag/{name}", cwd=world), pattern)
    return run


def _huge_ntotal(path: Path) -> None:
    import struct

    data = bytearray(path.read_bytes())
    d = struct.unpack_from("<i", data, 4)[0]
    struct.pack_into("<q", data, 8, 10**12)  # ntotal
    struct.pack_into("<Q", data, 37, 10**12 * d)  # and the vector count with it
    path.write_bytes(bytes(data))


def _other_dimension(path: Path) -> None:
    import faiss
    import numpy as np

    index = faiss.IndexFlatIP(8)
    index.add(np.ones((3, 8), dtype="float32"))
    faiss.write_index(index, str(path))


def _truncated_adapter_export(world: Path) -> None:
    run = copy_run(world, "cut_adapter")
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/cut_adapter", "--export-only", "--merge", cwd=world),
                          r"--export-only: adapter runs/cut_adapter/adapter: adapter_model\.safetensors is truncated \(tensor data\); retrain")
    assert not (run / "merged").exists() and not (run / "merged.partial").exists()


def _deep_jsonl(world: Path) -> None:
    """A 100,000-deep JSON value on a JSONL line: one line naming the file and line, wherever JSONL is read (a
    predictions file, chat --input, a data source with on_bad_record=error)."""
    write(world / "in" / "deep.jsonl", '{"id": "a", "prediction": "x", "instruction": "q", "output": "a"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--predictions", "in/deep.jsonl", "--out", "ev_deep", cwd=world),
                          r"in/deep\.jsonl:2: JSON nested too deeply to read")
    assert_one_line_error(cli("chat", "--recipe", "tiny.yaml", "--input", "in/deep.jsonl", cwd=world),
                          r"--input in/deep\.jsonl:2: JSON nested too deeply to read")
    assert_one_line_error(cli("prepare_data", *prep("data.source=in/deep.jsonl"), cwd=world),
                          r"in/deep\.jsonl:2: JSON nested too deeply to read")


TRACEBACK_ROWS = [  # review 2, class 7: one clear line instead of a traceback
    Row("c-gguf-not-gguf", 7, "traceback", expect_error(
        "chat", ["--gguf", "in/notes.gguf", "--prompt", "hi"], r"--gguf in/notes\.gguf is not a GGUF file \(it starts with b'my n'",
        setup=lambda w: write(w / "in" / "notes.gguf", "my notes, not a model\n")), review=2),
    Row("c-gguf-empty", 7, "traceback", expect_error(
        "chat", ["--gguf", "in/empty.gguf", "--prompt", "hi"], r"--gguf in/empty\.gguf is empty",
        setup=lambda w: write(w / "in" / "empty.gguf", b"")), review=2),
    Row("c-gguf-truncated", 7, "traceback", expect_error(
        "chat", ["--gguf", "in/cut.gguf", "--prompt", "hi"], r"--gguf in/cut\.gguf is truncated \(its tensors need 4,352 bytes; the file has 4,252\)",
        setup=lambda w: _tiny_gguf(w / "in" / "cut.gguf", cut=100)), review=2),
    Row("c-gguf-truncated-header", 7, "traceback", expect_error(
        "chat", ["--gguf", "in/head.gguf", "--prompt", "hi"], r"--gguf in/head\.gguf is truncated",
        setup=lambda w: write(w / "in" / "head.gguf", _tiny_gguf(w / "in" / "whole.gguf").read_bytes()[:40])), review=2),
    Row("c-input-latin1", 7, "traceback", expect_error(
        "chat", ["--recipe", "tiny.yaml", "--input", "in/latin1.jsonl"], r"--input in/latin1\.jsonl:2: not valid UTF-8 \(byte 20 of the line\)",
        setup=lambda w: write(w / "in" / "latin1.jsonl", '{"instruction": "ok"}\n'.encode() + '{"instruction": "caf\xe9"}\n'.encode("latin-1"))),
        review=2),
    Row("c-input-numeric-input", 7, "traceback", expect_error(
        "chat", ["--recipe", "tiny.yaml", "--input", "in/numinput.jsonl"],
        r"--input in/numinput\.jsonl:2: field 'input' \(the context passage\) must be a string, got int",
        setup=lambda w: write(w / "in" / "numinput.jsonl", '{"instruction": "a"}\n{"instruction": "b", "input": 42}\n')), review=2),
    Row("c-input-list-input", 7, "traceback", expect_error(
        "chat", ["--recipe", "tiny.yaml", "--input", "in/listinput.jsonl"],
        r"--input in/listinput\.jsonl:1: field 'input' \(the context passage\) must be a string, got list",
        setup=lambda w: write(w / "in" / "listinput.jsonl", '{"instruction": "b", "input": ["x"]}\n')), review=2),
    Row("c-input-numeric-instruction", 7, "traceback", expect_error(
        "chat", ["--recipe", "tiny.yaml", "--input", "in/numq.jsonl"],
        r"--input in/numq\.jsonl:1: expected a non-empty string in 'instruction' \(or 'prompt'\); 'instruction' is int",
        setup=lambda w: write(w / "in" / "numq.jsonl", '{"instruction": 7}\n')), review=2),
    Row("c-stdin-binary", 7, "traceback", _stdin_error(b"What is it?\n\xff\xfe binary\n", ["--max-new-tokens", "2"],
                                                      r"^error: stdin:2: not valid UTF-8 \(byte 0 of the line\)"), review=2),
    Row("c-stdin-binary --input -", 7, "traceback", _stdin_error(b'{"instruction": "q"}\n\x80\n', ["--input", "-"],
                                                                r"--input - \(stdin\):2: not valid UTF-8"), review=2),
    Row("g-faiss-garbage", 7, "traceback", _tampered_index(
        "garbage", lambda p: p.write_bytes(os.urandom(4096)), r"rag/garbage/index\.faiss is not a flat FAISS index as build_rag\.py writes"),
        review=2),
    Row("g-faiss-other-dimension", 7, "traceback", _tampered_index(
        "otherdim", _other_dimension, r"rag/otherdim/index\.faiss holds 8-dimensional vectors, but its embedding model gives 384"),
        review=2),
    Row("g-faiss-huge-ntotal", 7, "hang", _tampered_index(
        "huge", _huge_ntotal, r"rag/huge/index\.faiss does not hold the 1,000,000,000,000 vectors of dimension 384 its header announces"),
        review=2),
    Row("x-export-truncated-adapter", 7, "traceback", _truncated_adapter_export, review=2, trained=True),
    Row("y-deep-50000", 7, "traceback", expect_error(
        "prepare_data", ["--recipe", "deep.yaml"], r"deep\.yaml:1:\d+: malformed YAML: nested more than 100 levels deep",
        setup=lambda w: write(w / "deep.yaml", "model: " + "[" * 50_000 + "]" * 50_000 + "\n")), review=2),
    Row("d-deep-jsonl", 7, "traceback", _deep_jsonl, review=2),
]

@contextlib.contextmanager
def _full_disk(module, name: str, match: str):
    """Patch the writer `module.name` so that a call whose path contains `match` runs under a 64-byte file-size limit
    (RLIMIT_FSIZE, SIGXFSZ ignored): the real write fails as on a full disk, with the library's own exception
    (safetensors' SafetensorError, faiss' RuntimeError, an OSError from a plain write). Yields the calls that failed."""
    import resource
    import signal

    real, failed = getattr(module, name), []

    def limited(*args, **kwargs):
        if not any(match in str(a) for a in (*args, *kwargs.values()) if isinstance(a, (str, Path))):
            return real(*args, **kwargs)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
        try:
            return real(*args, **kwargs)
        except BaseException as exc:
            failed.append(type(exc).__name__)
            raise
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)

    setattr(module, name, limited)
    try:
        yield failed
    finally:
        setattr(module, name, real)


def _diskfull_checkpoint(world: Path) -> None:
    """safetensors fails while Trainer writes checkpoint-2: one line naming the folder and the newest complete
    checkpoint, the half-written checkpoint-2 removed; --resume then finishes the run."""
    import peft.peft_model

    with _full_disk(peft.peft_model, "safe_save_file", "checkpoint-2") as failed:
        result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/df_ckpt", cwd=world)
    assert failed == ["SafetensorError"]
    assert_one_line_error(result, r"writing a checkpoint in runs/df_ckpt/checkpoints failed \(runs/df_ckpt/checkpoints/checkpoint-2: "
                                  r"File too large\); the half-written checkpoint-2 was removed; the newest complete checkpoint is "
                                  r"runs/df_ckpt/checkpoints/checkpoint-1: free space and --resume")
    assert sorted(p.name for p in (world / "runs" / "df_ckpt" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1"]
    resumed = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/df_ckpt", "--resume", cwd=world)
    assert resumed.code == 0, resumed.stderr[-3000:]


def _diskfull_adapter(world: Path) -> None:
    import peft.peft_model

    with _full_disk(peft.peft_model, "safe_save_file", "adapter.partial") as failed:
        result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/df_adapter", cwd=world)
    assert failed == ["SafetensorError"]
    assert_one_line_error(result, r"saving the adapter to runs/df_adapter/adapter failed \(File too large\); nothing half-written "
                                  r"was left; the newest complete checkpoint is runs/df_adapter/checkpoints/checkpoint-2: --resume")
    assert not (world / "runs" / "df_adapter" / "adapter").exists() and not (world / "runs" / "df_adapter" / "adapter.partial").exists()


def _diskfull_export(world: Path) -> None:
    """The export's merge fails to write (--merge, and the merge for --gguf): one line naming the folder; no
    merged.partial, no merged/, and no empty gguf/ left."""
    import transformers.modeling_utils

    import gemma_fast.export.exporters as exporters

    run = copy_run(world, "df_export")
    with _full_disk(transformers.modeling_utils, "safe_save_file", "merged.partial") as failed:
        result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/df_export", "--export-only", "--merge", cwd=world)
    assert failed == ["SafetensorError"]
    assert_one_line_error(result, r"runs/df_export/merged\.partial: File too large \(OSError\); outputs are written to temporary names")
    assert not (run / "merged").exists() and not (run / "merged.partial").exists()
    real = exporters.check_tools
    exporters.check_tools = lambda chosen: None  # the tools are not needed: the merge fails first
    try:
        with _full_disk(transformers.modeling_utils, "safe_save_file", "merged.partial"):
            result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/df_export", "--export-only", "--gguf", "q8_0", cwd=world)
    finally:
        exporters.check_tools = real
    assert_one_line_error(result, r"runs/df_export/\.export_work/merged\.partial: File too large \(OSError\)")
    assert not (run / "gguf").exists() and not (run / ".export_work").exists()


def _diskfull_rag(world: Path) -> None:
    import faiss

    for file, text in NOTES.items():
        write(world / "df_src" / file, text)
    with _full_disk(faiss, "write_index", "index.faiss") as failed:
        result = cli("build_rag", "--recipe", "tiny.yaml", "--out", "rag/df", "--set", "rag.corpus=df_src/*.md", cwd=world)
    assert failed == ["RuntimeError"]
    assert_one_line_error(result, r"rag/\.df\.partial/index\.faiss: File too large \(OSError\)")
    assert not (world / "rag" / "df").exists() and not (world / "rag" / ".df.partial").exists()


def _diskfull_eval_path(world: Path) -> None:
    """A plain write that fails (predictions.jsonl): the line names the file (review 2: 'disk full without a path')."""
    import gemma_fast.evaluation.run as evaluation

    preds = _preds(world, "full.jsonl", lambda split: [{"id": r["id"], "prediction": r["output"]} for r in split])
    with _full_disk(evaluation, "write_jsonl", "predictions.jsonl") as failed:
        result = cli("evaluate", "--recipe", "tiny.yaml", "--predictions", preds, "--out", "ev_full", cwd=world)
    assert failed == ["OSError"]
    assert_one_line_error(result, r"ev_full/predictions\.jsonl: File too large \(OSError\)")
    assert not [p for p in (world / "ev_full").glob(".*.tmp")]


def _damaged_checkpoint(damage: Callable[[Path], None], reason: str, resume: bool = False) -> Callable[[Path], None]:
    """The newest checkpoint damaged in one of the files resume reads: skipped with a note naming the reason, the
    resume continues from checkpoint-1 (through the CLI when `resume`, else check_run_dir's choice)."""
    def run(world: Path) -> None:
        from gemma_fast.recipe import load_recipe
        from gemma_fast.training.run import check_run_dir

        name = "dmg_" + re.sub(r"\W", "", reason)[:20]
        target = copy_run(world, name)
        damage(target / "checkpoints" / "checkpoint-2")
        if resume:
            result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", f"runs/{name}", "--resume", "--set", "train.max_steps=3", cwd=world)
            assert result.code == 0, result.stderr[-3000:]
            assert f"skipped checkpoint-2: {reason}" in result.flat
            assert json.loads((target / "train_summary.json").read_text())["resumed_from"].endswith("checkpoint-1")
            return
        notes: list[str] = []
        saved = os.getcwd()
        os.chdir(world)
        try:
            chosen = check_run_dir(Path("runs") / name, load_recipe("tiny.yaml"), resume=True, overwrite=False, notes=notes)
        finally:
            os.chdir(saved)
        assert chosen.endswith("checkpoint-1") and reason in notes[0], notes
    return run


def _truncate(name: str) -> Callable[[Path], None]:
    return lambda ckpt: (ckpt / name).write_bytes((ckpt / name).read_bytes()[:200])


def _state_types(ckpt: Path) -> None:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["global_step"] = "2"
    (ckpt / "trainer_state.json").write_text(json.dumps(state))


def _wrong_rank(ckpt: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(ckpt / "adapter_model.safetensors")
    save_file({k: torch.zeros(8, v.shape[1]) if ".lora_A." in k else torch.zeros(v.shape[0], 8) for k, v in tensors.items()},
              ckpt / "adapter_model.safetensors")


DISK_ROWS = [  # review 2, class 8: disk full outside the OSError net, damaged checkpoints
    Row("t-diskfull-train", 8, "traceback", _diskfull_checkpoint, review=2, slow=True),
    Row("t-diskfull-adapter-save", 8, "traceback", _diskfull_adapter, review=2, slow=True),
    Row("x-export-diskfull", 8, "traceback", _diskfull_export, review=2, trained=True),
    Row("df-rag", 8, "traceback", _diskfull_rag, review=2),
    Row("df-evaluate (no path)", 10, "misleading", _diskfull_eval_path, review=2),
    Row("r-rng-truncated", 8, "traceback", _damaged_checkpoint(_truncate("rng_state.pth"), "rng_state.pth unreadable", resume=True), review=2, slow=True),
    Row("r-scheduler-truncated", 8, "traceback", _damaged_checkpoint(_truncate("scheduler.pt"), "scheduler.pt unreadable"), review=2, trained=True),
    Row("r-state-types", 8, "traceback", _damaged_checkpoint(
        _state_types, "trainer_state.json field 'global_step' is str, expected int"), review=2, trained=True),
    Row("r-wrong-rank-weights", 8, "traceback", _damaged_checkpoint(
        _wrong_rank, "adapter_model.safetensors holds rank-8 LoRA weights"), review=2, trained=True),
]

def _poll(path: Path, proc, timeout: float = 300) -> None:
    """Wait until `path` exists (polled, no sleep as synchronisation), failing if the process ends first or time runs out."""
    import select
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        select.select([], [], [], 0.05)


def _sigterm_resume(world: Path) -> None:
    """SIGTERM during training (a real subprocess, train.save_steps=0): a checkpoint is saved and the run exits 143
    with the command that resumes it; --resume then gives the adapter of an uninterrupted run (|Δ| < 1e-5)."""
    import signal
    import subprocess

    from safetensors.torch import load_file

    sets = ["--set", "train.max_steps=20", "--set", "train.save_steps=0", "--set", "lora.dropout=0.0", "--set", "train.batch_size=2"]
    straight = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/term_straight", *sets, cwd=world)
    assert straight.code == 0, straight.stderr[-3000:]
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train_qlora.py"), "--recipe", "tiny.yaml", "--out", "runs/term", *sets],
                            cwd=world, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _poll(world / "runs" / "term" / "metrics.jsonl", proc)  # training has begun
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    result = Result(proc.returncode, stderr)
    assert result.code == 143 and "Traceback" not in stderr and len(result.error_lines) == 1, stderr[-3000:]
    assert re.search(r"stopped by SIGTERM at step \d+: checkpoint saved in runs/term/checkpoints/checkpoint-\d+; continue with "
                     r"--resume: python \S*train_qlora\.py --recipe tiny\.yaml --out runs/term .*--resume$", result.error_lines[0]), stderr
    step = int(re.search(r"at step (\d+)", result.error_lines[0]).group(1))
    assert 0 < step < 20 and not (world / "runs" / "term" / "adapter").exists()
    resumed = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/term", "--resume", *sets, cwd=world)
    assert resumed.code == 0, resumed.stderr[-3000:]
    a = load_file(world / "runs" / "term_straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(world / "runs" / "term" / "adapter" / "adapter_model.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    sys.__stdout__.write(f"\nSIGTERM at step {step} then --resume: adapter max abs diff {diff:.3g} against an uninterrupted run\n")
    assert a.keys() == b.keys() and diff < 1e-5


def _sigterm_before_checkpoint(world: Path) -> None:
    """A real SIGTERM to this process after the run folder was started and before training (no checkpoint yet): the
    script stops with exit 143 and one line, and leaves no stub folder, so the same command runs again as is."""
    import signal

    import gemma_fast.training.run as train

    real = train.write_base

    def write_base_then_term(folder, spec):
        real(folder, spec)
        os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, frame):  # a guard: without the scripts' handler this fails instead of killing the tests
        raise AssertionError("SIGTERM reached no gemma_fast handler")

    previous = signal.signal(signal.SIGTERM, unhandled)
    train.write_base = write_base_then_term
    try:
        result = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/term_early", cwd=world)
    finally:
        train.write_base = real
        signal.signal(signal.SIGTERM, previous)
    assert result.code == 143 and "terminated (SIGTERM)" in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (world / "runs" / "term_early").exists()
    assert signal.getsignal(signal.SIGTERM) is previous  # cli.run put the caller's handler back


def _killed_stub(world: Path) -> None:
    """What a run killed outright (SIGKILL) before its first checkpoint leaves: the rerun's advice is --overwrite
    (nothing to resume), --resume says so too, and --overwrite then works."""
    stub = world / "runs" / "stub"
    write(stub / ".gemma_fast", json.dumps({"written_by": "gemma_fast", "kind": "run"}))
    shutil.copyfile(world / "runs" / "r1" / "gemma_fast_base.json", stub / "gemma_fast_base.json")
    write(stub / "metrics.jsonl", "")
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/stub", cwd=world),
                          r"runs/stub already holds files: it holds a run that stopped before its first checkpoint, so there is "
                          r"nothing to resume: --overwrite replaces it")
    assert_one_line_error(cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/stub", "--resume", cwd=world),
                          r"--resume: runs/stub holds a run that stopped before its first checkpoint .* start it again with --overwrite")
    again = cli("train_qlora", "--recipe", "tiny.yaml", "--out", "runs/stub", "--overwrite", cwd=world)
    assert again.code == 0, again.stderr[-3000:]


def _duplicate_docstore_ids(world: Path) -> None:
    folder = _index(world, "dupids")
    rows = [json.loads(line) for line in (folder / "docstore.json").open()]
    rows[2]["id"] = rows[0]["id"]
    (folder / "docstore.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files_sha256"]["docstore.json"] = hashlib.sha256((folder / "docstore.json").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    preds = _preds(world, "dupids.jsonl", lambda split: [{"id": r["id"], "prediction": r["output"]} for r in split])
    assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--predictions", preds, "--out", "ev_dupids",
                              "--set", "rag.index=rag/dupids", cwd=world),
                          r"rag/dupids/docstore\.json:3: duplicate id '.+' \(first on line 1\): rebuild the index")


def _folders_for_files(world: Path) -> None:
    for name in ("afolder.jsonl", "afolder.gguf", "afolder.yaml"):
        (world / name).mkdir(exist_ok=True)
    for script, args, pattern in [
        ("prepare_data", ["--recipe", "afolder.yaml"], r"recipe afolder\.yaml is a folder, not a file"),
        ("evaluate", ["--recipe", "tiny.yaml", "--predictions", "nofile.jsonl", "--set", "eval.ids=afolder.jsonl"],
         r"eval\.ids: afolder\.jsonl is a folder, not a file"),
        ("build_rag", ["--recipe", "tiny.yaml", "--out", "rag/gl", "--set", "rag.glossary=afolder.jsonl"],
         r"rag\.glossary: afolder\.jsonl is a folder, not a file"),
        ("evaluate", ["--recipe", "tiny.yaml", "--predictions", "afolder.jsonl", "--out", "ev_folder"], r"afolder\.jsonl is a folder, not a file"),
        ("chat", ["--recipe", "tiny.yaml", "--input", "afolder.jsonl"], r"--input afolder\.jsonl is a folder, not a file"),
        ("chat", ["--gguf", "afolder.gguf", "--prompt", "hi"], r"--gguf afolder\.gguf is a folder, not a file")]:
        assert_one_line_error(cli(script, *args, cwd=world), pattern)


def _deselected_ids(world: Path) -> None:
    """Predictions for the whole split scored with eval.max_examples=1: the other two are ids the selection leaves out,
    not unknown ids; an id not in the split is still called that."""
    preds = _preds(world, "all3.jsonl", lambda split: [{"id": r["id"], "prediction": r["output"]} for r in split] + [{"id": "zz", "prediction": "x"}])
    assert_one_line_error(cli("evaluate", "--recipe", "tiny.yaml", "--predictions", preds, "--out", "ev_desel",
                              "--set", "eval.max_examples=1", cwd=world),
                          r"4 predictions for 1 references \(0 ids missing, e\.g\. \[\]; 2 for ids of the test split that the "
                          r"selection \(the first 1\) leaves out, e\.g\. \['.+'\]; 1 for ids not in the test split, e\.g\. \['zz'\]\)")


def _merge_keys(world: Path) -> None:
    """YAML merge keys load as YAML defines them (keys written beside them win); a key written twice is still refused."""
    from gemma_fast.recipe import load_recipe

    write(world / "merge.yaml", "name: merge\ntrain: &t\n  lr: 1e-3\n  batch_size: 2\neval:\n  <<: {batch_size: 5, max_new_tokens: 7}\n"
                                "  batch_size: 3\n")
    recipe = load_recipe(str(world / "merge.yaml"))
    assert (recipe.eval.batch_size, recipe.eval.max_new_tokens, recipe.train.lr) == (3, 7, 1e-3)
    write(world / "merge_dup.yaml", "name: m\neval:\n  <<: {batch_size: 5}\n  batch_size: 3\n  batch_size: 4\n")
    assert_one_line_error(cli("prepare_data", "--recipe", "merge_dup.yaml", cwd=world), r"merge_dup\.yaml:5:\d+: malformed YAML: duplicate key 'batch_size'")


def _long_set_path(world: Path) -> None:
    """A 100 KB --set path is an unusable name, said in one short line; not a failed write of an output."""
    result = cli("prepare_data", *prep("data.source=" + "x" * 100_000), cwd=world)
    assert_one_line_error(result, r"cannot use the path x{120}… \(100,000 characters\): File name too long \(OSError\); shorten the name")
    assert len(result.error_lines[0]) < 400 and "outputs are written" not in result.stderr


LOW_ROWS = [  # review 2, class 10: SIGTERM is a stop like Ctrl-C; accepted-but-meaningless values; misleading messages
    Row("sig-term-nosave + resume", 10, "data-loss", _sigterm_resume, review=2, slow=True),
    Row("sig-term-before-checkpoint (no stub)", 10, "misleading", _sigterm_before_checkpoint, review=2),
    Row("sig-term-nosave-rerun (stub advice)", 10, "misleading", _killed_stub, review=2, slow=True),
    Row("c-temperature-neg", 10, "silent-wrong", expect_error(
        "chat", ["--recipe", "tiny.yaml", "--temperature", "-1", "--prompt", "hi"], r"--temperature must be a finite number >= 0 \(0: greedy\), got -1"),
        review=2),
    Row("c-temperature-nan", 10, "silent-wrong", expect_error(
        "chat", ["--recipe", "tiny.yaml", "--temperature", "nan", "--prompt", "hi"], r"--temperature must be a finite number >= 0 \(0: greedy\), got nan"),
        review=2),
    Row("g-docstore-duplicate-ids", 10, "silent-wrong", _duplicate_docstore_ids, review=2),
    Row("path-folder-as-file", 10, "misleading", _folders_for_files, review=2),
    Row("e-ids-deselected-called-unknown", 10, "misleading", _deselected_ids, review=2),
    Row("e-where-lang-semicolon", 10, "silent-wrong", expect_error(
        "prepare_data", prep("eval.where=lang=en;context=with"), r"eval\.where: lang=en;context=with: not a language code \(e\.g\. en, zh\); "
                                                                  r"separate conditions with commas"), review=2),
    Row("y-merge-keys", 10, "misleading", _merge_keys, review=2),
    Row("path-100k-set", 10, "misleading", _long_set_path, review=2),
]

MEMORY_ROWS = [  # review 2, classes 3-5: bounded memory and time
    Row("c-prompt-100k", 3, "hang", _chat_long("--prompt"), review=2),
    Row("c-context-100k", 3, "hang", _chat_long("--context"), review=2),
    Row("g-k-huge", 4, "hang", _huge_k, review=2, slow=True),
    Row("y-bomb-model", 5, "hang", expect_error(
        "prepare_data", ["--recipe", "bomb.yaml", "--out", "data/bomb"],
        r"bomb\.yaml:2:\d+: malformed YAML: its aliases \(\*name\) expand to more than 100,000 values",
        setup=lambda w: write(w / "bomb.yaml", f"name: bomb\nmodel: {_alias_bomb()}\n")), review=2),
    Row("y-bomb-set", 5, "traceback", expect_error(
        "prepare_data", prep(f"robustness.perturbations={_alias_bomb()}"),
        r"--set robustness\.perturbations: the value '&a8 \[.{30,80}\.\.\..{5,60}' is not valid YAML \(its aliases \(\*name\) expand to more than"),
        review=2),
    Row("y-bomb-coerce-message", 5, "hang", _bounded_repr, review=2),
]

ROUND2_ROWS = [
    Row("d-out-user-files", 1, "data-loss", _out_with_user_files("prepare_data", ["--recipe", "tiny.yaml"], "userdata",
                                                                ("train.jsonl", "notes.txt")), review=2),
    Row("e-out-user-files", 1, "data-loss", _out_with_user_files("evaluate", ["--recipe", "tiny.yaml", "--adapter", "runs/r1"],
                                                                "usereval", ("metrics.json", "report.md")), review=2),
    Row("b-out-user-files", 1, "data-loss", _out_with_user_files("robustness", ["--recipe", "tiny.yaml", "--adapter", "runs/r1",
                                                                              "--perturb", "casing"], "userrob", ("report.md",)), review=2),
    Row("d-out-user-files --overwrite", 1, "data-loss", _overwrite_keeps_user_files, review=2),
    Row("e-out-run-folder", 1, "data-loss", _eval_into_run_folder, review=2, trained=True),
    Row("path-symlink-overwrite-run", 9, "misleading", _symlinked_overwrite, review=2, slow=True),
]

# -- --plan on hostile model configs and prep reports (reliability_review_2 defect 7: these ended in tracebacks)


def _plan_with(folder: str, file: str, text: str, pattern: str, *sets: str) -> Callable[[Path], None]:
    """`train_qlora.py --plan --gpu t4` with `text` written to <folder>/<file>: one clear line naming the file."""
    args = ["--recipe", "tiny.yaml", "--plan", "--gpu", "t4", *[a for s in sets for a in ("--set", s)]]
    return expect_error("train_qlora", args, rf"{folder}/{re.escape(file)}: {pattern}",
                        setup=lambda w: write(w / folder / file, text))


_SIZES = '"model_type": "gemma", "vocab_size": 512, "num_hidden_layers": 2, "intermediate_size": 64'
PLAN_ROWS = [
    Row("plan-config-malformed", 7, "traceback", _plan_with("cfg_bad", "config.json", '{"model_type": "gemma",',
                                                            r"not valid JSON", "model=cfg_bad"), review=2),
    Row("plan-config-list", 7, "traceback", _plan_with("cfg_list", "config.json", "[1, 2, 3]",
                                                       r"expected a JSON object .*found a list", "model=cfg_list"), review=2),
    Row("plan-config-zero-heads", 7, "traceback", _plan_with(
        "cfg_zero", "config.json", f'{{{_SIZES}, "hidden_size": 32, "num_attention_heads": 0}}',
        r"num_attention_heads must be a positive integer, found 0", "model=cfg_zero"), review=2),
    Row("plan-config-string-sizes", 7, "traceback", _plan_with(
        "cfg_str", "config.json", f'{{{_SIZES}, "hidden_size": "32", "num_attention_heads": 2}}',
        r'hidden_size must be a positive integer, found "32"', "model=cfg_str"), review=2),
    Row("plan-prep-report-malformed", 7, "traceback", _plan_with(
        "data/prep_bad", "prep_report.json", '{"tokens": {"train": {"mean": "long", "max": 9}}}',
        r"tokens\.train\.mean must be a non-negative number", "data.dir=data/prep_bad"), review=2),
]

TABLE = (DATA_ROWS + RECIPE_ROWS + TRAIN_ROWS + EVAL_ROWS + RAG_ROWS + ROUND2_ROWS + MEMORY_ROWS + EXPORT_ROWS + TRACEBACK_ROWS
         + DISK_ROWS + LOW_ROWS + PLAN_ROWS)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.case, marks=[pytest.mark.slow] if r.full_tier else []) for r in TABLE])
def test_hostile_input(row: Row, request):
    row.run(request.getfixturevalue("world" if row.full_tier else "data_world"))


# ---------------------------------------------------------------- real subprocesses: the scripts as a user runs them


@pytest.mark.slow
@pytest.mark.parametrize("args, pattern", [
    (["prepare_data", "--recipe", "tiny.yaml", "--set", "train.grad_accum=0"], r"'train\.grad_accum' must be >= 1"),
    (["prepare_data", "--recipe", "tiny.yaml", "--out", "data/x", "--set", "data.source=in/comma.csv"], r"comma\.csv:2: 3 fields"),
])
def test_real_subprocess(world: Path, args, pattern):
    write(world / "in" / "comma.csv", "instruction,output\nWhat does it do?,It loads the data, cleans it and splits it\n")
    result = run_script(args[0], *args[1:], cwd=world, process=True)
    assert_one_line_error(Result(result.returncode, result.stderr), pattern)


def test_table_counts(capsys):
    """Counts per verdict before the fix; every row now passes (a clear error or the right result)."""
    for review, expected in ((1, set(range(1, 23))), (2, {1, 3, 4, 5, 6, 7, 8, 9, 10})):
        rows = [r for r in TABLE if r.review == review]
        classes = sorted({r.klass for r in rows if r.klass})
        with capsys.disabled():
            print(f"\nhostile-input table, review {review}: {len(rows)} rows, classes covered: {classes}; "
                  f"before the fix: {dict(Counter(r.before for r in rows))}")
        assert expected == set(classes)

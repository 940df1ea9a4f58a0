"""The whole pipeline on tiny random Gemma 4 (E-style: per-layer embeddings, KV sharing, sliding 256 / global 512
head dims) and Gemma 3n, with SentencePiece tokenizers that carry each generation's control tokens and chat template:
prepare -> train (LoRA, --merge, --gguf q8_0 with its round trip) -> evaluate (--compare base) -> robustness -> chat,
through the real CLIs in this process (tests.unit.test_hostile_input.cli)."""

import json

import pytest
import yaml

from gemma_fast.inference import llama_tools as gf_tools
from gemma_fast.errors import UserError
from gemma_fast.testing.tiny_spm import save_tiny_spm_model
from tests.unit.test_hostile_input import assert_one_line_error, cli

pytestmark = pytest.mark.slow  # every stage, GGUF export included


@pytest.fixture(scope="module", params=["gemma4", "gemma3n"])
def pipeline(request, tmp_path_factory):
    family = request.param
    try:
        gf_tools.converter_script()
    except UserError as exc:
        pytest.skip(f"GGUF tools unavailable: {exc}")
    work = tmp_path_factory.mktemp(family)
    model = save_tiny_spm_model(family, work / "model")
    (work / "tiny.yaml").write_text(yaml.safe_dump({
        "model": str(model), "seed": 3, "prompt": {"system": "Answer from the gemma_fast docs."},
        "data": {"source": "asset:quickstart_docs_qa.jsonl", "max_records": 24},
        "lora": {"r": 4, "alpha": 8},
        "train": {"max_steps": 3, "batch_size": 4, "max_seq_length": 256, "lr": 5e-3},
        "eval": {"max_examples": 3, "max_new_tokens": 6, "batch_size": 3}}))
    steps = {}
    for name, args in (("prepare", ["prepare_data"]),
                       ("train", ["train_qlora", "--out", "run", "--merge", "--gguf", "q8_0", "--roundtrip", "2"]),
                       ("evaluate", ["evaluate", "--adapter", "run", "--compare", "base"]),
                       ("robustness", ["robustness", "--adapter", "run", "--perturb", "casing"]),
                       ("chat", ["chat", "--adapter", "run", "--max-new-tokens", "8", "--prompt", "How do I resume training?"])):
        steps[name] = cli(args[0], "--recipe", "tiny.yaml", *args[1:], cwd=work) if name != "chat" else \
            cli("chat", *args[1:], cwd=work)
        assert steps[name].code == 0, f"{family} {name}: {steps[name].stderr[-3000:]}"
    return family, work, steps


def test_every_stage_ran_on_the_generation(pipeline):
    family, work, _ = pipeline
    summary = json.loads((work / "run" / "train_summary.json").read_text())
    assert summary["backend"] == "hf" and summary["steps"] == 3 and summary["batches"].startswith("padding-free")
    assert summary["guards"]["first_batch"]["checked"] and summary["guards"]["movement"]["moved"] > 0
    assert summary["licence"]["name"] == ("Apache-2.0" if family == "gemma4" else "Gemma Terms of Use")
    card = (work / "run" / "adapter" / "README.md").read_text()
    assert ("license: apache-2.0" if family == "gemma4" else "license: gemma") in card
    metrics = json.loads((work / "run" / "eval" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"base", "fine-tuned"} and metrics["examples"] == 3
    assert json.loads((work / "run" / "robustness" / "robustness.json").read_text())["perturbations"]["casing"]
    prompt = json.loads((work / "run" / "eval" / "predictions.jsonl").read_text().splitlines()[0])["prompt"]
    turn = "<|turn>system\nAnswer from the gemma_fast docs.<turn|>\n<|turn>user\n" if family == "gemma4" else \
        "<start_of_turn>user\nAnswer from the gemma_fast docs.\n\n"
    assert prompt.startswith("<bos>" + turn)  # the recipe's system message, as the generation writes it


def test_the_gguf_export_is_checked_where_a_runtime_runs_it_exactly(pipeline):
    family, work, _ = pipeline
    saved = json.loads((work / "run" / "gguf" / "roundtrip.json").read_text())["q8_0"]
    assert saved["vocabulary"]["equal"] and (work / "run" / "gguf" / "model-q8_0.Modelfile").is_file()
    if family == "gemma4":  # transformers reads it into the run's config; ik_llama 0.1.5 does not run Gemma 4 exactly
        checks = saved["checks"]
        assert checks["pass"] and set(checks["runtimes"]) == {"transformers"}, checks
        result = checks["runtimes"]["transformers"]
        assert result["tokenisation_identical"] == result["prompts"] == 2 and result["top1_agreement"] >= 0.95
    else:  # Gemma 3n: no runtime here loads it; the files are written and said to be unverified
        assert saved["checks"]["checked"] is False and saved["checks"]["pass"] is None


def test_chat_from_the_gguf(pipeline):
    family, work, _ = pipeline
    result = cli("chat", "--gguf", "run/gguf/model-q8_0.gguf", "--max-new-tokens", "8", "--prompt", "How do I resume training?",
                 cwd=work)
    if family == "gemma4":
        assert result.code == 0, result.stderr[-3000:]
    else:
        assert_one_line_error(result, r"no runtime here runs Gemma 3n GGUFs exactly")

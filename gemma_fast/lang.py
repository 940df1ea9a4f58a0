"""Which language a text or a question is in: 'zh' or 'en' (the languages gemma_fast's metrics and recipes know)."""

from __future__ import annotations

import re


def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs make up a good share of the letters, else 'en'."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and cjk / letters > 0.3 else "en"


_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")


def question_lang(fields: dict) -> str:
    """The language the user asked in: the question's, whatever the answer's (a Chinese question answered with code
    or English text is still zh). A Chinese character counts as much as an English word, so a Chinese question that
    quotes an English phrase ("解释成语“Painting the town red”的意思。") is zh, and an English question with a
    Chinese term ("What does 数据集 mean on Kaggle?") is en. The question is the instruction, or instruction + input
    when the instruction has no letters; a record without letters there falls back to detect_lang on everything."""
    for text in (fields["instruction"], fields["instruction"] + " " + fields.get("input", "")):
        cjk, words = len(_CJK_CHAR.findall(text)), len(_LATIN_WORD.findall(text))
        if cjk or words:
            return "zh" if cjk >= words else "en"
    return detect_lang(fields["instruction"] + fields.get("input", "") + fields.get("output", ""))

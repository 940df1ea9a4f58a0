"""Robustness perturbations: named, seeded, deterministic changes to a record's question or context, never its answer.

A spec is `name` or `name:rate`, composed with `+` (e.g. `typos:0.05+casing:0.2`). Each record gets its own random
stream from (seed, spec, record id), so a perturbed copy is the same on every run and independent of record order.
Most perturbations edit one record at a time (`fn`); those that need something outside the record (a parallel file,
the model under test) edit the whole copy (`batch`) from a Context the runner gives.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.clean import opencc
from ..errors import UserError

Fn = Callable[[dict, random.Random, float], dict]


@dataclass
class Context:
    """What whole-copy perturbations read: the parallel file, and the model under test as a translator (questions ->
    translations into `translate_to`); without a translator, model steps are skipped (a dry run that checks files)."""

    parallel_file: str = ""
    translate_to: str = "English"
    translator: Callable[[list[str], str], list[str]] | None = None


Batch = Callable[[list[dict], Context], list[dict]]


@dataclass(frozen=True)
class Perturbation:
    name: str
    description: str
    fn: Fn | None = None  # per record
    default_rate: float | None = None  # None: takes no rate
    needs_model: bool = False  # done by the model under test: labelled as such in every report
    batch: Batch | None = None  # the whole copy at once, from the Context


REGISTRY: dict[str, Perturbation] = {}


def perturbation(name: str, description: str, default_rate: float | None = None):
    def register(fn: Fn) -> Fn:
        REGISTRY[name] = Perturbation(name, description, fn, default_rate)
        return fn
    return register


def whole_copy(name: str, description: str, needs_model: bool = False):
    def register(batch: Batch) -> Batch:
        REGISTRY[name] = Perturbation(name, description, needs_model=needs_model, batch=batch)
        return batch
    return register


def _question(record: dict, fn: Callable[[str], str]) -> dict:
    return {**record, "instruction": fn(record["instruction"])}


def _both(record: dict, fn: Callable[[str], str]) -> dict:
    return {**record, "instruction": fn(record["instruction"]), "input": fn(record.get("input", ""))}


# ---------------------------------------------------------------- language


@perturbation("t2s", "traditional -> simplified Chinese (OpenCC), question and context")
def t2s(record, rng, rate):
    return _both(record, opencc("t2s").convert)


@perturbation("s2t", "simplified -> traditional Chinese (OpenCC), question and context")
def s2t(record, rng, rate):
    return _both(record, opencc("s2t").convert)


@whole_copy("translate", "the question replaced by its translation from a parallel file (robustness.parallel_file)")
def translate(records, ctx):
    parallel = read_parallel(ctx.parallel_file, records)
    return [{**r, "instruction": parallel[r["id"]]} for r in records]


@whole_copy("self_translate", "the question translated by the model under test itself (robustness.translate_to)",
            needs_model=True)
def self_translate(records, ctx):
    if ctx.translator is None:
        return records  # dry run
    translated = ctx.translator([r["instruction"] for r in records], ctx.translate_to)
    return [{**r, "instruction": t or r["instruction"]} for r, t in zip(records, translated)]


# ---------------------------------------------------------------- noise

_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)


@perturbation("typos", "character typos: each letter swapped with the next, dropped, or doubled with probability p", 0.05)
def typos(record, rng, rate):
    def noisy(text: str) -> str:
        out, i = [], 0
        while i < len(text):
            ch = text[i]
            if _LETTERS.match(ch) and rng.random() < rate:
                kind = rng.choice(("swap", "drop", "insert"))
                if kind == "swap" and i + 1 < len(text):
                    out += [text[i + 1], ch]
                    i += 2
                    continue
                if kind == "insert":
                    out += [ch, ch]
                # drop: emit nothing
            else:
                out.append(ch)
            i += 1
        return "".join(out)
    return _question(record, noisy)


@perturbation("casing", "each word's case flipped (upper <-> lower) with probability p", 0.2)
def casing(record, rng, rate):
    return _question(record, lambda t: re.sub(r"\w+", lambda m: m.group(0).swapcase() if rng.random() < rate else m.group(0), t))


_FULL = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F) if not chr(c).isalnum()}
_HALF = {v: k for k, v in _FULL.items()} | {"，": ",", "。": ".", "？": "?", "！": "!", "：": ":", "；": ";"}


@perturbation("punct_width", "punctuation width flipped: half-width -> full-width and full-width -> half-width")
def punct_width(record, rng, rate):
    return _question(record, lambda t: "".join(_FULL.get(ch) or _HALF.get(ch) or ch for ch in t))


@perturbation("punct_removal", "every punctuation mark removed from the question (ASCII and CJK)")
def punct_removal(record, rng, rate):
    return _question(record, lambda t: "".join(ch for ch in t if not unicodedata.category(ch).startswith("P")))


@perturbation("whitespace", "extra spaces, tabs or newlines inserted after each character with probability p", 0.1)
def whitespace(record, rng, rate):
    return _question(record, lambda t: "".join(ch + (rng.choice((" ", "  ", "\t", "\n")) if rng.random() < rate else "") for ch in t))


# ---------------------------------------------------------------- wording

PARAPHRASES = {
    "en": ["Please answer this: {q}", "{q} Answer briefly.", "I would like to know: {q}", "Question: {q}", "Can you tell me? {q}"],
    "zh": ["请回答：{q}", "{q} 请简要回答。", "我想知道：{q}", "问题：{q}", "你能告诉我吗？{q}"],
}
# A small bilingual glossary written by this project, for code-switching (English terms <-> Chinese).
GLOSSARY = {"model": "模型", "data": "数据", "dataset": "数据集", "competition": "比赛", "notebook": "笔记本", "answer": "答案",
            "question": "问题", "file": "文件", "team": "团队", "score": "分数", "code": "代码", "training": "训练",
            "submission": "提交", "leaderboard": "排行榜", "user": "用户", "poem": "诗", "moon": "月亮", "spring": "春天",
            "mountain": "山", "river": "江", "wind": "风", "flower": "花", "write": "写", "author": "作者"}


@perturbation("paraphrase", "the question wrapped in one of five instruction templates (per language)")
def paraphrase(record, rng, rate):
    template = rng.choice(PARAPHRASES["zh" if record.get("lang") == "zh" else "en"])
    return _question(record, lambda t: template.format(q=t))


_REVERSE = {v: k for k, v in GLOSSARY.items()}
_SWITCHABLE = re.compile("|".join(sorted(map(re.escape, _REVERSE), key=len, reverse=True)) + r"|[A-Za-z]+")


@perturbation("code_switch", "glossary words switched to the other language (English <-> Chinese) with probability p", 0.5)
def code_switch(record, rng, rate):
    def switch(text: str) -> str:
        def one(match: re.Match) -> str:
            word = match.group(0)
            other = GLOSSARY.get(word.lower()) or _REVERSE.get(word)
            return other if other and rng.random() < rate else word
        # one pass over the original text, so a switched word is never switched back
        return _SWITCHABLE.sub(one, text)

    return _question(record, switch)


# ---------------------------------------------------------------- context

_SENTENCE = re.compile(r"(?<=[.!?。！？])\s*")
DISTRACTORS = {
    "en": "Unrelated note: the office cafeteria serves soup on Tuesdays and closes at three.",
    "zh": "无关说明：食堂每周二供应汤，下午三点关门。",
}


@perturbation("context_removal", "the context passage removed (question only)")
def context_removal(record, rng, rate):
    return {**record, "input": "", "passages": []}


@perturbation("sentence_shuffle", "the context's sentences shuffled")
def sentence_shuffle(record, rng, rate):
    sentences = [s for s in _SENTENCE.split(record.get("input", "")) if s.strip()]
    rng.shuffle(sentences)
    return {**record, "input": " ".join(sentences)}


@perturbation("distractor", "an off-topic sentence inserted at a random place in the context")
def distractor(record, rng, rate):
    sentences = [s for s in _SENTENCE.split(record.get("input", "")) if s.strip()]
    sentences.insert(rng.randint(0, len(sentences)), DISTRACTORS["zh" if record.get("lang") == "zh" else "en"])
    return {**record, "input": " ".join(sentences)}


# ---------------------------------------------------------------- specs


def parse_spec(spec: str) -> list[tuple[Perturbation, float]]:
    """`typos:0.05+casing` -> [(typos, 0.05), (casing, its default rate)], checked."""
    steps = []
    for part in spec.split("+"):
        name, _, rate_text = part.strip().partition(":")
        if name not in REGISTRY:
            raise UserError(f"unknown perturbation '{name}'; valid: {', '.join(REGISTRY)} (see --list)")
        p = REGISTRY[name]
        if rate_text:
            if p.default_rate is None:
                raise UserError(f"perturbation '{name}' takes no rate (got '{part}')")
            try:
                rate = float(rate_text)
            except ValueError:
                raise UserError(f"perturbation '{name}': rate '{rate_text}' is not a number") from None
        else:
            rate = p.default_rate or 0.0
        if not 0.0 <= rate <= 1.0:
            raise UserError(f"perturbation '{name}': rate {rate} is outside [0, 1]")
        steps.append((p, rate))
    return steps


def read_parallel(path: str, records: list[dict]) -> dict[str, str]:
    """id -> translated question, from a JSONL of {id, instruction}; it must cover every test id."""
    from ..io import read_jsonl

    if not path:
        raise UserError("perturbation 'translate' needs robustness.parallel_file: a JSONL of {id, instruction} translations")
    rows = read_jsonl(Path(path))
    table = {str(r.get("id")): r.get("instruction") for r in rows}
    missing = [r["id"] for r in records if not isinstance(table.get(r["id"]), str)]
    if missing:
        raise UserError(f"{path} does not cover {len(missing)} of the {len(records)} test ids (e.g. {missing[0]}): "
                        "every record needs a translated 'instruction'")
    return table


def apply_spec(spec: str, records: list[dict], seed: int, ctx: Context | None = None) -> list[dict]:
    """The perturbed copy of `records` under `spec`, steps in the order written; references ('output') never change."""
    ctx = ctx or Context()
    rngs = {record["id"]: random.Random(f"{seed}:{spec}:{record['id']}") for record in records}  # one stream per record
    out = [dict(record) for record in records]
    for p, rate in parse_spec(spec):
        out = p.batch(out, ctx) if p.batch else [p.fn(r, rngs[r["id"]], rate) for r in out]
    if any(new["output"] != old["output"] for new, old in zip(out, records)):
        raise AssertionError(f"perturbation '{spec}' changed a reference")
    return out


def needs_model(spec: str) -> bool:
    return any(p.needs_model for p, _ in parse_spec(spec))

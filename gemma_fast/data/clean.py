"""Text cleaning rules (chosen per recipe), Unicode NFC, and the keys used for de-duplication.

No rule touches CJK punctuation (，。！？「」《》…): it carries meaning in Chinese text.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable

_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKS = re.compile(r"(\*\*|__|`{1,3}|~~)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_MENTION = re.compile(r"(?<![\w.])@\w+")
_NEWLINES = re.compile(r"\s*\n\s*")
_SPACES = re.compile(r"[ \t\u00a0]{2,}")

RULES: dict[str, Callable[[str], str]] = {
    "html": lambda t: _HTML_TAG.sub(" ", t),
    "markdown": lambda t: _MD_HEADING.sub("", _MD_MARKS.sub("", _MD_LINK.sub(r"\1", t))),
    "mentions": lambda t: _MENTION.sub("", t),
    "newlines": lambda t: _NEWLINES.sub(" ", t),
    "spaces": lambda t: _SPACES.sub(" ", t),
}


def clean_text(text: str, rules: list[str]) -> str:
    text = unicodedata.normalize("NFC", text)
    for rule in rules:
        text = RULES[rule](text)
    return text.strip()


@lru_cache(maxsize=4)
def opencc(config: str):
    """One OpenCC converter per config ("t2s", "s2t"), built once: data cleaning and the perturbations share it."""
    from opencc import OpenCC

    return OpenCC(config)


def to_simplified(text: str) -> str:
    return opencc("t2s").convert(text)


def exact_key(record: dict) -> tuple:
    return record["instruction"], record["input"], record["output"]


def normalized_key(record: dict) -> tuple:
    """Case, width (NFKC), white space and punctuation folded away: near-identical copies share this key."""
    def fold(text: str) -> str:
        text = unicodedata.normalize("NFKC", text).casefold()
        return "".join(ch for ch in text if not (ch.isspace() or unicodedata.category(ch).startswith("P")))

    return fold(record["instruction"]), fold(record["input"]), fold(record["output"])

"""Poem-form helpers shared by data preparation (the continuation task asks for a form) and evaluation (which
checks it): below both, so neither imports the other."""

from __future__ import annotations

import re

HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs (extension A, unified, compatibility): a regex class body
_HAN = re.compile(f"[{HAN_CLASS}]")
_LINE_BREAK = re.compile(r"[，。！？；、,.!?;:：\s]+")


def poem_lines(text: str) -> list[str]:
    """The lines (句) of a classical poem: the text between punctuation marks and line breaks."""
    return [line for line in _LINE_BREAK.split(text) if line]


def regular_length(lines: list[str]) -> int | None:
    """5 or 7 when every line has exactly that many Chinese characters (and nothing else), else None."""
    if not lines or len(lines[0]) not in (5, 7):
        return None
    n = len(lines[0])
    return n if all(len(line) == n and len(_HAN.findall(line)) == n for line in lines) else None


def form_check(prediction: str, requested_lines: int, requested_chars: int) -> dict[str, float]:
    """Is a generated poem in the requested form? line_count: exactly the requested number of lines; chars_5_or_7:
    every line 5 or 7 Chinese characters; chars_match: every line the requested length; in_form: both."""
    lines = poem_lines(prediction)
    han_only = [len(_HAN.findall(line)) == len(line) for line in lines]
    line_count = float(len(lines) == requested_lines)
    five_or_seven = float(bool(lines) and all(ok and len(line) in (5, 7) for line, ok in zip(lines, han_only)))
    chars_match = float(bool(lines) and all(ok and len(line) == requested_chars for line, ok in zip(lines, han_only)))
    return {"line_count": line_count, "chars_5_or_7": five_or_seven, "chars_match": chars_match,
            "in_form": float(bool(line_count and chars_match))}


def continuation_request(reference: str) -> tuple[int, int] | None:
    """(lines, characters per line) the reference continuation has, when it is a regular 5- or 7-character poem."""
    lines = poem_lines(reference)
    length = regular_length(lines) if lines else None
    return (len(lines), length) if length else None

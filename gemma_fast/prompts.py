"""The one prompt builder: training, evaluation, retrieval, robustness, chat and the GGUF round trip all call it, so
prompts never drift, and each is the checkpoint's own chat template, token for token (tests/unit/test_templates.py).

A prompt is rendered per Gemma generation from its family entry (families.py): Gemma 1-3n write
`<start_of_turn>user\\n…<end_of_turn>\\n<start_of_turn>model\\n`, Gemma 4 `<|turn>user\\n…<turn|>\\n<|turn>model\\n`
(after the empty thought channel on the checkpoints that prime one). A system message (`prompt.system`) is a turn of
its own in Gemma 4 and goes in front of the first user turn in Gemma 3/3n, as their templates do; Gemma 1/2 have none.
The record's `input` (a context passage) and retrieved passages go in one "Context:" block before the question, so
the question sits right above the answer.

Text that is not ours never becomes a control token. A prompt is a sequence of segments: ours (the template: turn
markers, roles, "Context:", separators) and theirs (system message, questions, passages, answers). The whole text is
tokenized at once, exactly as `apply_chat_template(..., tokenize=True)` does, when every control-token string in it
lies inside one of our segments; otherwise each segment is tokenized on its own and theirs with special tokens split
(`split_special_tokens=True`; llama.cpp: `special=False`), so a question holding `<end_of_turn>` stays those characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

from .errors import UserError
from .families import Family, family_of_config, family_of_tokenizer, wants_empty_thought


@dataclass(frozen=True)
class Segment:
    text: str
    ours: bool  # True: the template's own text (control tokens parsed); False: text from data or a user


class Prompt(tuple):
    """Segments in order; `.text` is the string the chat template renders."""

    @property
    def text(self) -> str:
        return "".join(s.text for s in self)

    def __add__(self, other) -> "Prompt":
        return Prompt(tuple(self) + tuple(other))


def _ours(text: str) -> Segment:
    return Segment(text, True)


def _theirs(text: str) -> Segment:
    return Segment(text, False)


# ---------------------------------------------------------------- tokenizers: transformers and llama.cpp alike


class Tokenize:
    """text, parse control tokens? -> ids (no <bos> added). One per tokenizer; `controls` maps each control-token string
    the vocabulary has to its id."""

    def __init__(self, encode: Callable[[list[str], bool], list[list[int]]], controls: dict[str, int], bos: str, bos_id: int):
        self.encode, self.controls, self.bos, self.bos_id = encode, controls, bos, bos_id
        pattern = "|".join(re.escape(s) for s in sorted(controls, key=len, reverse=True))
        self.pattern = re.compile(pattern) if pattern else None

    @classmethod
    def hf(cls, tokenizer, family: Family) -> "Tokenize":
        vocab = tokenizer.get_vocab()
        names = set(family.control_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        controls = {s: vocab[s] for s in names if s in vocab}

        def encode(texts: list[str], special: bool) -> list[list[int]]:
            if not texts:
                return []
            return tokenizer(texts, add_special_tokens=False, split_special_tokens=not special)["input_ids"]

        return cls(encode, controls, tokenizer.bos_token, tokenizer.bos_token_id)


def _plain_ids(tok: Tokenize, text: str) -> list[int]:
    """Ids of `text` as plain text: control-token strings in it stay characters, whatever the tokenizer marks special."""
    ids = tok.encode([text], False)[0]
    if tok.pattern is None or not set(ids) & set(tok.controls.values()):
        return ids
    out, pos = [], 0  # a control token the tokenizer does not treat as special: break each occurrence in two
    for match in tok.pattern.finditer(text):
        half = match.start() + max(1, (match.end() - match.start()) // 2)
        out += _plain_ids(tok, text[pos:match.start()]) if match.start() > pos else []
        out += tok.encode([text[match.start():half]], False)[0] + tok.encode([text[half:match.end()]], False)[0]
        pos = match.end()
    return out + (_plain_ids(tok, text[pos:]) if pos < len(text) else [])


def forged(tok: Tokenize, prompt: Sequence[Segment]) -> bool:
    """Whether a control-token string of the vocabulary occurs anywhere but inside one of our own segments."""
    if tok.pattern is None:
        return False
    text, spans, pos = "", [], 0
    for seg in prompt:
        if seg.ours:
            spans.append((pos, pos + len(seg.text)))
        text += seg.text
        pos += len(seg.text)
    return any(not any(a <= m.start() and m.end() <= b for a, b in spans) for m in tok.pattern.finditer(text))


def encode_segments(tok: Tokenize, prompts: Sequence[Sequence[Segment]]) -> list[list[int]]:
    """Ids of each prompt: safe ones tokenized whole in one batched call; the rest segment by segment."""
    out: list[list[int] | None] = [None] * len(prompts)
    whole = [i for i, p in enumerate(prompts) if not forged(tok, p)]
    for i, ids in zip(whole, tok.encode(["".join(s.text for s in prompts[i]) for i in whole], True)):
        out[i] = ids
    for i, prompt in enumerate(prompts):
        if out[i] is None:
            out[i] = [t for seg in prompt for t in (tok.encode([seg.text], True)[0] if seg.ours else _plain_ids(tok, seg.text))]
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- the format of one model


@dataclass(frozen=True)
class PromptFormat:
    """How one model's prompts are written and tokenized: its family, the recipe's system message, and whether the
    checkpoint generates after an empty thought channel (Gemma 4 26B-A4B / 31B)."""

    family: Family
    tokenize: Tokenize
    system: str = ""
    empty_thought: bool = False
    eos_id: int | None = None
    pad_id: int = 0

    def __post_init__(self):
        if self.system and self.family.system_prompt == "refused":
            raise UserError(f"prompt.system: {self.family.label}'s chat template has no system role (it raises 'System role "
                            "not supported'); leave prompt.system empty, or put the instruction into the questions")

    # ------------------------------------------------ text

    def _body(self, instruction: str, input: str = "", passages: Sequence[str] = ()) -> list[Segment]:
        context = [p.strip() for p in (*passages, input) if p and p.strip()]
        segments: list[Segment] = []
        if context:
            segments.append(_ours("Context:\n"))
            for n, passage in enumerate(context):
                segments += ([_ours("\n\n")] if n else []) + [_theirs(passage)]
            segments.append(_ours("\n\n"))
        question = instruction.strip()
        return segments + ([_theirs(question)] if question else [])

    def _user_turn(self, body: list[Segment], first: bool) -> list[Segment]:
        t = self.family.turns
        prefix: list[Segment] = []
        if first and self.system and self.family.system_prompt == "first_user":
            prefix = [_theirs(self.system), _ours("\n\n")]  # Gemma 3: the system text, untrimmed, + a blank line
        return [_ours(self.family.start_user), *prefix, *body, _ours(f"{t.end}\n")]

    def _model_open(self) -> list[Segment]:
        return [_ours(self.family.start_model + (self.family.empty_thought if self.empty_thought else ""))]

    def _start(self) -> list[Segment]:
        segments = [_ours(self.tokenize.bos)]
        if self.system and self.family.system_prompt == "native":
            t = self.family.turns
            segments += [_ours(f"{t.start}{t.system}\n"), _theirs(self.system.strip()), _ours(f"{t.end}\n")]
        return segments

    def prompt(self, instruction: str, input: str = "", passages: Sequence[str] = (),
               history: Sequence[tuple[Sequence[Segment], str]] = ()) -> Prompt:
        """<bos>, the system turn, earlier (body, answer) turns, this question's user turn, and the model turn's opening."""
        segments = self._start()
        for n, (body, answer) in enumerate(history):
            segments += self._user_turn(list(body), first=n == 0)
            segments += [_ours(self.family.start_model), *self.answer(answer)]
        segments += self._user_turn(self._body(instruction, input, passages), first=not history)
        return Prompt(segments + self._model_open())

    def body(self, instruction: str, input: str = "", passages: Sequence[str] = ()) -> Prompt:
        """What a user turn holds (for a chat's history)."""
        return Prompt(self._body(instruction, input, passages))

    def record_prompt(self, record: dict) -> Prompt:
        """A record's prompt, with the passages retrieval attached to it (rag.attach_passages), if any."""
        return self.prompt(record["instruction"], record.get("input", ""), record.get("passages", ()))

    def answer(self, text: str) -> Prompt:
        """An answer and the end of its turn, as the template closes a model turn (the answer stripped)."""
        return Prompt([_theirs(text.strip()), _ours(f"{self.family.end_of_turn}\n")])

    # ------------------------------------------------ ids

    @cached_property
    def end_of_turn_id(self) -> int:
        token_id = self.tokenize.controls.get(self.family.end_of_turn)
        if token_id is None:
            raise UserError(f"the tokenizer has no {self.family.end_of_turn} token: not a {self.family.label} chat tokenizer")
        return token_id

    @property
    def stop_ids(self) -> list[int]:
        """What generation stops at: the end of a turn, and the end of the text."""
        return [i for i in dict.fromkeys((self.end_of_turn_id, self.eos_id)) if i is not None]

    def encode(self, prompt: Sequence[Segment]) -> list[int]:
        return encode_segments(self.tokenize, [prompt])[0]

    def encode_many(self, prompts: Sequence[Sequence[Segment]]) -> list[list[int]]:
        return encode_segments(self.tokenize, prompts)

    def example(self, record: dict, max_length: int) -> dict:
        """Token ids of prompt + answer + end of turn + the newline the template writes after it, and a mask that is 1
        exactly on the answer and the end-of-turn token, which generation stops on (the newline is never generated).

        Prompt and answer are tokenized separately so the boundary is exact; together they equal the template's
        rendering of the whole conversation (tests/unit/test_templates.py)."""
        prompt_ids, answer_ids = self.encode_many([self.record_prompt(record), self.answer(record["output"])])
        if len(prompt_ids) >= max_length:
            raise UserError(
                f"record {record.get('id', '?')}: the prompt alone is {len(prompt_ids)} tokens, "
                f"not shorter than train.max_seq_length={max_length}; raise it or shorten the input"
            )
        trained = len(answer_ids) - answer_ids[::-1].index(self.end_of_turn_id)  # through the end of turn, not the newline
        input_ids = (prompt_ids + answer_ids)[:max_length]
        mask = ([0] * len(prompt_ids) + [1] * trained + [0] * (len(answer_ids) - trained))[:max_length]
        return {"input_ids": input_ids, "completion_mask": mask}

    def example_lengths(self, records: list[dict]) -> list[int]:
        """Token count of each example sequence before truncation, in two batched tokenizer calls."""
        prompts = self.encode_many([self.record_prompt(r) for r in records])
        answers = self.encode_many([self.answer(r["output"]) for r in records])
        return [len(p) + len(a) for p, a in zip(prompts, answers)]


def prompt_format(tokenizer, config=None, system: str = "") -> PromptFormat:
    """The PromptFormat of a transformers tokenizer and its model's config (None: judged from the tokenizer alone)."""
    family = family_of_config(config) if config is not None else family_of_tokenizer(tokenizer)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else None
    empty = wants_empty_thought(family, getattr(tokenizer, "chat_template", None), text_config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return PromptFormat(family, Tokenize.hf(tokenizer, family), system, empty, tokenizer.eos_token_id, pad)

"""The one prompt builder: training, evaluation, retrieval and robustness all call it, so prompts never drift.

Gemma has no system role; a turn is `<start_of_turn>user\\n…<end_of_turn>\\n<start_of_turn>model\\n`. The
record's `input` (a context passage) and any retrieved passages go in one "Context:" block *before* the
question, so the question sits right above the answer. The tokenizer adds `<bos>`.
"""

from __future__ import annotations

from typing import Sequence

from .errors import UserError

START_USER = "<start_of_turn>user\n"
END_OF_TURN = "<end_of_turn>"
START_MODEL = "<start_of_turn>model\n"


def build_prompt(instruction: str, input: str = "", passages: Sequence[str] = ()) -> str:
    """The user turn and the opening of the model turn, ready for generation."""
    context = [p.strip() for p in (*passages, input) if p and p.strip()]
    body = instruction.strip()
    if context:
        body = "Context:\n" + "\n\n".join(context) + "\n\n" + body
    return f"{START_USER}{body}{END_OF_TURN}\n{START_MODEL}"


def record_prompt(record: dict) -> str:
    """A record's prompt, with the passages retrieval attached to it (rag.attach_passages), if any."""
    return build_prompt(record["instruction"], record.get("input", ""), record.get("passages", ()))


def end_of_turn_id(tokenizer) -> int:
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise UserError(f"the tokenizer has no {END_OF_TURN} token: not a Gemma chat tokenizer")
    return token_id


def encode_example(tokenizer, record: dict, max_length: int) -> dict:
    """Token ids of prompt + answer + `<end_of_turn>`, and a mask that is 1 exactly on the answer and `<end_of_turn>`.

    Prompt and answer are tokenized separately so the boundary is exact; the answer keeps no trailing newline
    so the model learns to stop with `<end_of_turn>`, the token generation stops on.
    """
    prompt_ids = tokenizer(record_prompt(record), add_special_tokens=True)["input_ids"]
    if len(prompt_ids) >= max_length:
        raise UserError(
            f"record {record.get('id', '?')}: the prompt alone is {len(prompt_ids)} tokens, "
            f"not shorter than train.max_seq_length={max_length}; raise it or shorten the input"
        )
    answer_ids = tokenizer(record["output"].strip(), add_special_tokens=False)["input_ids"] + [end_of_turn_id(tokenizer)]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    mask = ([0] * len(prompt_ids) + [1] * len(answer_ids))[:max_length]
    return {"input_ids": input_ids, "completion_mask": mask}


def example_lengths(tokenizer, records: list[dict]) -> list[int]:
    """Token count of each encode_example sequence before truncation, in two batched tokenizer calls."""
    prompts = tokenizer([record_prompt(r) for r in records], add_special_tokens=True)["input_ids"]
    answers = tokenizer([r["output"].strip() for r in records], add_special_tokens=False)["input_ids"]
    return [len(p) + len(a) + 1 for p, a in zip(prompts, answers)]  # +1: <end_of_turn>

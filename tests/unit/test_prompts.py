"""The prompt builder: Gemma chat turns per generation, context before the question, the answer mask, and text that is
not ours never becoming control tokens (token-for-token equality with the checkpoints' own templates:
test_templates.py)."""

import pytest

from gemma_fast.errors import UserError
from gemma_fast.families import FAMILIES
from gemma_fast.prompts import prompt_format
from gemma_fast.testing.tiny import tiny_config, tiny_tokenizer


@pytest.fixture(scope="module")
def formats():
    """{family: (tokenizer, PromptFormat)} for every generation in the table."""
    out = {}
    for name in FAMILIES:
        tok = tiny_tokenizer(name)
        out[name] = (tok, prompt_format(tok, tiny_config(name, len(tok))))
    return out


def test_prompt_is_the_generations_chat_turns(formats):
    assert formats["gemma3"][1].prompt("What is X?").text == "<bos><start_of_turn>user\nWhat is X?<end_of_turn>\n<start_of_turn>model\n"
    assert formats["gemma4"][1].prompt("What is X?").text == "<bos><|turn>user\nWhat is X?<turn|>\n<|turn>model\n"


def test_context_and_passages_come_before_the_question(formats):
    fmt = formats["gemma3"][1]
    prompt = fmt.prompt("Q?", input="record context", passages=["retrieved one"])
    assert prompt.text == ("<bos><start_of_turn>user\nContext:\nretrieved one\n\nrecord context\n\nQ?"
                           "<end_of_turn>\n<start_of_turn>model\n")
    assert fmt.record_prompt({"instruction": "Q?", "input": "  "}) == fmt.prompt("Q?")
    with_retrieval = {"instruction": "Q?", "input": "record context", "passages": ["retrieved one"]}
    assert fmt.record_prompt(with_retrieval) == prompt  # retrieval reaches training and evaluation through the record


def test_system_message_follows_each_generations_template(formats):
    tok3, tok4 = formats["gemma3"][0], formats["gemma4"][0]
    gemma3 = prompt_format(tok3, tiny_config("gemma3"), system="Answer from the docs.")
    assert gemma3.prompt("Q?").text.startswith("<bos><start_of_turn>user\nAnswer from the docs.\n\nQ?<end_of_turn>")
    gemma4 = prompt_format(tok4, tiny_config("gemma4"), system="Answer from the docs.")
    assert gemma4.prompt("Q?").text.startswith("<bos><|turn>system\nAnswer from the docs.<turn|>\n<|turn>user\nQ?")
    for refused in ("gemma", "gemma2"):  # their templates raise 'System role not supported'
        with pytest.raises(UserError, match="has no system role"):
            prompt_format(formats[refused][0], tiny_config(refused), system="Answer from the docs.")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_labels_cover_exactly_the_answer_and_end_of_turn(formats, family):
    tok, fmt = formats[family]
    record = {"id": "a", "instruction": "What is gemma?", "input": "ctx", "output": "A model."}
    enc = fmt.example(record, max_length=256)
    prompt_ids = fmt.encode(fmt.record_prompt(record))
    end = FAMILIES[family].end_of_turn
    assert enc["input_ids"][: len(prompt_ids)] == prompt_ids and enc["input_ids"][0] == tok.bos_token_id
    trained = [t for t, m in zip(enc["input_ids"], enc["completion_mask"]) if m]
    assert tok.decode(trained) == f"A model.{end}"
    assert tok.decode(enc["input_ids"][len(prompt_ids):]) == f"A model.{end}\n"  # the template's newline, never trained


def test_long_answers_are_truncated_but_a_prompt_that_fills_max_length_is_an_error(formats):
    fmt = formats["gemma3"][1]
    record = {"id": "r7", "instruction": "Why?", "input": "", "output": "because " * 50}
    prompt_len = len(fmt.encode(fmt.record_prompt(record)))
    enc = fmt.example(record, max_length=prompt_len + 5)
    assert len(enc["input_ids"]) == prompt_len + 5 and sum(enc["completion_mask"]) == 5
    with pytest.raises(UserError, match="record r7: the prompt alone is"):
        fmt.example(record, max_length=prompt_len)


def test_example_lengths_are_the_example_sequences(formats):
    fmt = formats["gemma4"][1]
    records = [{"id": str(i), "instruction": f"Q{i} " * i, "input": "c" * i, "output": "answer " * i} for i in range(1, 5)]
    assert fmt.example_lengths(records) == [len(fmt.example(r, 10_000)["input_ids"]) for r in records]


def test_stop_ids_are_the_end_of_turn_and_end_of_text(formats):
    for family, (tok, fmt) in formats.items():
        assert fmt.stop_ids == [tok.convert_tokens_to_ids(FAMILIES[family].end_of_turn), tok.eos_token_id]

import pytest

from gemma_fast.errors import UserError
from gemma_fast.prompts import build_prompt, encode_example, record_prompt


def test_prompt_is_gemma_chat_turns():
    assert build_prompt("What is X?") == "<start_of_turn>user\nWhat is X?<end_of_turn>\n<start_of_turn>model\n"


def test_context_and_passages_come_before_the_question():
    prompt = build_prompt("Q?", input="record context", passages=["retrieved one"])
    assert prompt == ("<start_of_turn>user\nContext:\nretrieved one\n\nrecord context\n\nQ?"
                      "<end_of_turn>\n<start_of_turn>model\n")
    assert record_prompt({"instruction": "Q?", "input": "  "}) == build_prompt("Q?")
    with_retrieval = {"instruction": "Q?", "input": "record context", "passages": ["retrieved one"]}
    assert record_prompt(with_retrieval) == prompt  # retrieval reaches training and evaluation through the record


def test_labels_cover_exactly_the_answer_and_end_of_turn(tiny_tokenizer):
    record = {"id": "a", "instruction": "What is gemma?", "input": "ctx", "output": "A model."}
    enc = encode_example(tiny_tokenizer, record, max_length=256)
    prompt_ids = tiny_tokenizer(record_prompt(record))["input_ids"]
    answer_ids = tiny_tokenizer("A model.", add_special_tokens=False)["input_ids"]
    eot = tiny_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert enc["input_ids"] == prompt_ids + answer_ids + [eot]
    assert enc["input_ids"][0] == tiny_tokenizer.bos_token_id
    assert enc["completion_mask"] == [0] * len(prompt_ids) + [1] * (len(answer_ids) + 1)
    trained = [t for t, m in zip(enc["input_ids"], enc["completion_mask"]) if m]
    assert tiny_tokenizer.decode(trained) == "A model.<end_of_turn>"


def test_long_answers_are_truncated_but_a_prompt_that_fills_max_length_is_an_error(tiny_tokenizer):
    record = {"id": "r7", "instruction": "Why?", "input": "", "output": "because " * 50}
    prompt_len = len(tiny_tokenizer(record_prompt(record))["input_ids"])
    enc = encode_example(tiny_tokenizer, record, max_length=prompt_len + 5)
    assert len(enc["input_ids"]) == prompt_len + 5 and sum(enc["completion_mask"]) == 5
    with pytest.raises(UserError, match="record r7: the prompt alone is"):
        encode_example(tiny_tokenizer, record, max_length=prompt_len)

import pytest

from gemma_fast.data.formats import BadRecord, alpaca, dolly, poetry, sharegpt
from gemma_fast.data.clean import clean_text, normalized_key, to_simplified
from gemma_fast.recipe import DataConfig


def test_dolly_keeps_or_drops_the_context():
    row = {"instruction": "Summarise", "context": "A long passage.", "response": "Short.", "category": "summarization"}
    assert dolly(row, DataConfig()) == [{"instruction": "Summarise", "input": "A long passage.", "output": "Short."}]
    assert dolly(row, DataConfig(drop_context=True))[0]["input"] == ""
    with pytest.raises(BadRecord, match="missing required field 'response'"):
        dolly({"instruction": "x"}, DataConfig())


def test_sharegpt_conversations_and_messages():
    conv = {"id": "c1", "conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}
    assert sharegpt(conv, DataConfig()) == [{"id": "c1", "instruction": "你好", "input": "", "output": "你好！"}]
    multi = {"id": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A?"},
                                     {"role": "assistant", "content": "a"}, {"role": "user", "content": "B?"},
                                     {"role": "assistant", "content": "b"}]}
    assert sharegpt(multi, DataConfig()) == [
        {"instruction": "A?", "input": "Be brief.", "output": "a", "id": "m-0"},
        {"instruction": "B?", "input": "Be brief.", "output": "b", "id": "m-1"},
    ]
    with pytest.raises(BadRecord, match="no user turn followed by an assistant turn"):
        sharegpt({"conversations": [{"from": "human", "value": "only a question"}]}, DataConfig())
    with pytest.raises(BadRecord, match="needs a known role"):
        sharegpt({"conversations": [{"from": "robot", "value": "x"}]}, DataConfig())


def test_alpaca_with_a_column_mapping():
    row = {"q": "Why?", "a": "Because.", "ctx": "c"}
    cfg = DataConfig(columns={"instruction": "q", "output": "a", "input": "ctx"})
    assert alpaca(row, cfg) == [{"instruction": "Why?", "input": "c", "output": "Because."}]


def test_poetry_tasks_for_a_shi_and_a_ci():
    shi = {"author": "李白", "title": "静夜思", "paragraphs": ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"]}
    tasks = {r["task"]: r for r in poetry(shi, DataConfig())}
    assert tasks["title"]["instruction"] == "以李白的风格写一首题为《静夜思》的诗。"
    assert tasks["title"]["output"] == "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
    assert tasks["continue"]["instruction"].endswith("床前明月光，疑是地上霜。") and tasks["continue"]["output"] == "举头望明月，低头思故乡。"
    assert tasks["author"]["output"] == "李白" and tasks["author"]["input"] == tasks["title"]["output"]
    ci = {"author": "苏轼", "rhythmic": "水调歌头", "paragraphs": ["明月几时有？把酒问青天。"]}
    records = poetry(ci, DataConfig(poetry_tasks=["title", "continue"]))
    assert [r["task"] for r in records] == ["title"]  # a one-line poem has nothing to continue
    assert "词牌《水调歌头》" in records[0]["instruction"]
    with pytest.raises(BadRecord, match="'paragraphs' must be a non-empty list"):
        poetry({"author": "x", "title": "t", "paragraphs": []}, DataConfig())


def test_cleaning_and_normalisation():
    assert clean_text("e\u0301", []) == "\u00e9"  # NFC
    assert clean_text("a  \t b\n\n c", ["newlines", "spaces"]) == "a b c"
    assert clean_text("ping @user and a@b.com", ["mentions"]) == "ping  and a@b.com"
    assert clean_text("# Title\n`code` and ~~old~~", ["markdown"]) == "Title\ncode and old"
    assert to_simplified("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。") == "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
    a = {"instruction": "What is X?", "input": "", "output": "It is Y."}
    b = {"instruction": "what is x", "input": " ", "output": "IT IS Y"}
    assert normalized_key(a) == normalized_key(b)
    assert normalized_key({"instruction": "好吗？", "input": "", "output": "好。"}) == normalized_key({"instruction": "好吗?", "input": "", "output": "好"})

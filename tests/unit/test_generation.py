"""One generation interface (generation.py): a new runtime is one RUNTIMES entry, and chat runs through it end to
end; every runtime stops where its PromptFormat says (PromptFormat.stop_ids), the transformers one on a tiny Gemma 3
and the llama.cpp one on that model's f16 GGUF (skipped, saying why, where the llama.cpp tools cannot be had)."""

import dataclasses
import sys

import pytest

from gemma_fast.errors import UserError
from gemma_fast.inference.generation import RUNTIMES, GenerationSettings, Weights, stripped_stream
from gemma_fast.recipe import Recipe, load_recipe

QUESTION = "How do I resume training?"


class Echo:
    """A toy runtime defined only here: answers each question with itself, all prompts in one batch (as a runtime
    with its own scheduler, e.g. vLLM, would)."""

    runtime = "echo"

    def __init__(self, weights: Weights):
        from transformers import AutoConfig, AutoTokenizer

        from gemma_fast.prompts import prompt_format

        self.name, self.max_length, self.calls = f"echo of {weights.label}", 4096, []
        self.prompts = prompt_format(AutoTokenizer.from_pretrained(weights.model), AutoConfig.from_pretrained(weights.model), weights.system)

    def _answer(self, prompt) -> str:
        return "echo: " + [s.text for s in prompt if not s.ours][-1]  # this turn's question: the last text not ours

    def generate(self, prompts, settings, on_batch=None):
        self.calls.append((len(prompts), settings))
        answers = [self._answer(p) for p in prompts]
        if on_batch:
            on_batch(list(range(len(prompts))), answers)
        return answers

    def stream(self, prompt, settings, on_text=None):
        answer, emit = self._answer(prompt), stripped_stream(on_text)
        for word in answer.split(" "):
            if emit:
                emit(word + " ")
        return answer

    def generate_ids(self, prompt_ids, settings):
        return [self.prompts.encode(self.prompts.answer(self._answer(p)))[:-2] for p in prompt_ids]


@pytest.fixture
def echo(monkeypatch):
    opened = []
    monkeypatch.setitem(RUNTIMES, "echo", lambda weights: opened.append(Echo(weights)) or opened[-1])
    return opened


def test_settings_from_a_recipes_eval_section():
    ev = load_recipe("quickstart", ["eval.batch_size=4", "eval.batch_tokens=900", "eval.max_new_tokens=7", "eval.temperature=0.7"]).eval
    greedy = GenerationSettings.from_eval(ev, 5)
    assert greedy == GenerationSettings(max_new_tokens=7, temperature=0.0, top_p=1.0, seed=5, batch_size=4, batch_tokens=900)
    assert greedy.greedy  # eval.temperature counts only with eval.do_sample
    sampled = GenerationSettings.from_eval(dataclasses.replace(ev, do_sample=True, top_p=0.9), 5)
    assert not sampled.greedy and (sampled.temperature, sampled.top_p) == (0.7, 0.9)


def test_a_new_runtime_is_one_entry_and_chat_runs_through_it(echo, tiny_model_dir, monkeypatch, capsys):
    from gemma_fast.inference.chat import Conversation, Source, open_model

    generator = open_model(Source(model=str(tiny_model_dir), runtime="echo"), Recipe(name="chat"))
    assert echo == [generator] and generator.name == f"echo of {tiny_model_dir}"
    pieces = []
    conversation = Conversation(generator, GenerationSettings(max_new_tokens=8), max_length=256)
    assert conversation.ask(QUESTION, pieces.append) == f"echo: {QUESTION}"
    assert "".join(pieces) == f"echo: {QUESTION}"  # streamed exactly as returned (trailing space held back)
    assert conversation.ask("And then?") == "echo: And then?" and len(conversation.turns) == 2

    # the command line offers it too: --runtime's choices are RUNTIMES
    from gemma_fast.cli import chat as command

    monkeypatch.setattr(sys, "argv", ["chat", "--model", str(tiny_model_dir), "--runtime", "echo", "--prompt", "hi", "--prompt", "bye"])
    command.main()
    assert capsys.readouterr().out == "echo: hi\necho: bye\n"


def test_a_runtime_that_is_not_there_or_cannot_open_it_is_one_line(tiny_model_dir):
    from gemma_fast.inference.chat import Source, open_model

    with pytest.raises(UserError, match=r"--runtime vllm: not a runtime here \(choices: auto, transformers, llama\.cpp\)"):
        open_model(Source(model=str(tiny_model_dir), runtime="vllm"), Recipe(name="chat"))
    with pytest.raises(UserError, match=r"the llama\.cpp runtime runs GGUF files, and .* is not one"):
        open_model(Source(model=str(tiny_model_dir), runtime="llama.cpp"), Recipe(name="chat"))


# ---------------------------------------------------------------- stop tokens come from the PromptFormat


def _stops_where_its_format_says(generator, prompt_ids: list[int]):
    """The first greedy tokens, then the same generation with one of them made a stop id of the generator's
    PromptFormat: every way of generating ends right before it, and leaves it out."""
    settings = GenerationSettings(max_new_tokens=6)
    fmt = generator.prompts
    free = generator.generate_ids([prompt_ids], settings)[0]
    assert len(free) >= 3 and not set(free) & set(fmt.stop_ids), free
    stop = free[2]
    generator.prompts = dataclasses.replace(fmt, eos_id=stop)
    try:
        assert stop in generator.prompts.stop_ids
        assert generator.generate_ids([prompt_ids], settings) == [free[:free.index(stop)]]
        prompt = fmt.prompt(QUESTION)
        expected = generator.generate([prompt], settings)[0]
        assert expected == generator.stream(prompt, settings)
        generator.prompts = dataclasses.replace(fmt, eos_id=free[0])
        assert generator.generate_ids([prompt_ids], settings) == [[]] and generator.stream(prompt, settings) == ""
    finally:
        generator.prompts = fmt
    return free


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory):
    """A tiny Gemma 3 with a SentencePiece vocabulary and 6 layers (what llama.cpp loads)."""
    from gemma_fast.testing.tiny_spm import save_tiny_gemma3_spm

    return save_tiny_gemma3_spm(tmp_path_factory.mktemp("spm") / "model")


@pytest.fixture(scope="module")
def transformers_generator(tiny_spm):
    from gemma_fast.inference.generation import open_transformers

    return open_transformers(Weights(str(tiny_spm), backend="hf"))


def test_transformers_stops_at_its_prompt_formats_stop_ids(transformers_generator):
    gen = transformers_generator
    _stops_where_its_format_says(gen, gen.prompts.encode(gen.prompts.prompt(QUESTION)))


def test_transformers_batches_answer_in_the_prompts_order(transformers_generator):
    gen = transformers_generator
    prompts = [gen.prompts.prompt(q) for q in ("A much longer question than the others, about resuming?", "Hi?", QUESTION)]
    batches = []
    answers = gen.generate(prompts, GenerationSettings(max_new_tokens=4, batch_size=2), on_batch=lambda idx, a: batches.append(idx))
    assert batches == [[1, 2], [0]]  # shortest first, at most batch_size prompts
    assert answers == [gen.generate([p], GenerationSettings(max_new_tokens=4))[0] for p in prompts]


@pytest.fixture(scope="module")
def llama_cpp_generator(tiny_spm, tmp_path_factory):
    from gemma_fast.inference import llama_tools as tools
    from gemma_fast.export.gguf import convert, prepare_export_folder
    from gemma_fast.families import FAMILIES
    from gemma_fast.inference.generation import open_llama_cpp

    try:
        tools.converter_script()
    except UserError as exc:
        pytest.skip(f"GGUF converter unavailable: {exc}")
    folder, why = tools.runtime_dir()
    if folder is None:
        pytest.skip(f"llama.cpp runtime unavailable: {why}")
    work = tmp_path_factory.mktemp("gguf")
    prepare_export_folder(tiny_spm, str(tiny_spm), work / "hf", FAMILIES["gemma3"])
    convert(work / "hf", "f16", work / "model-f16.gguf")
    return open_llama_cpp(Weights(gguf=work / "model-f16.gguf"))


@pytest.mark.slow  # llama.cpp's runtime: the full tier (make test)
def test_llama_cpp_stops_at_its_prompt_formats_stop_ids(llama_cpp_generator, transformers_generator):
    gen = llama_cpp_generator
    assert gen.runtime == "llama.cpp" and gen.prompts.stop_ids == transformers_generator.prompts.stop_ids
    ids = gen.prompts.encode(gen.prompts.prompt(QUESTION))
    assert ids == transformers_generator.prompts.encode(transformers_generator.prompts.prompt(QUESTION))
    free = _stops_where_its_format_says(gen, ids)
    # the same greedy tokens as the transformers model the file was converted from (f16 of a float32 tiny model)
    assert free == transformers_generator.generate_ids([ids], GenerationSettings(max_new_tokens=6))[0]

"""Talk to a model: a base, an adapter run, a merged folder or a GGUF, through the one prompt builder.

Prompts are the model's PromptFormat (prompts.py: its generation's turns, the recipe's system message, question,
context and retrieved passages), exactly as in training and evaluation; earlier turns of an interactive chat are kept
in front as finished turns. Answers stream as they are generated and stop at the end of the turn. A prompt longer than
train.max_seq_length (what the model was trained and evaluated with) is refused before anything runs. The model
answers through a generation.Generator on one of generation.RUNTIMES: a GGUF on llama.cpp (ik-llama-cpp-python) where
it is installed, else through transformers' GGUF loader (slower to load; query_pre_attn_scalar restored as llama.cpp
does); a model folder, embedded model or hub id (with an adapter) on transformers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .generation import RUNTIMES, GenerationSettings, Generator, OnText, Weights
from ..prompts import Prompt
from ..log import console

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- opening a model


@dataclass
class Source:
    model: str = ""  # a base or merged folder, an embedded model, a hub id
    adapter: str = ""  # a run folder or its adapter/
    gguf: str = ""
    runtime: str = "auto"  # auto (a GGUF: llama.cpp where installed, else transformers) | a generation.RUNTIMES name
    notes: list[str] = field(default_factory=list)


def adapter_folder(path: Path) -> Path:
    adapter = path / "adapter" if (path / "adapter").is_dir() else path
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {path}: no adapter_config.json in it or in its adapter/ folder")
    return adapter


def adapter_base(adapter: Path) -> str | None:
    """The base model spec an adapter was trained on (its gemma_fast_base.json, else the run's recipe)."""
    from ..identity import recorded_base

    recorded = recorded_base(adapter) or {}
    if recorded.get("name"):
        return recorded["name"]
    from ..identity import run_recipe

    return run_recipe(adapter).get("model")


def open_model(source: Source, recipe) -> Generator:
    """The model `source` names, on its runtime (generation.RUNTIMES)."""
    if source.runtime != "auto" and source.runtime not in RUNTIMES:
        raise UserError(f"--runtime {source.runtime}: not a runtime here (choices: auto, {', '.join(RUNTIMES)})")
    start = time.perf_counter()
    if source.gguf:
        path = Path(source.gguf)
        runtime = _gguf_runtime(path, source.runtime)
        weights = Weights(gguf=path, system=recipe.prompt.system)
    else:
        spec = source.model or (adapter_base(adapter_folder(Path(source.adapter))) if source.adapter else None) or recipe.model
        adapter = None
        if source.adapter:
            from ..identity import check_adapter_files, check_same_base, recorded_base

            adapter = adapter_folder(Path(source.adapter))
            check_adapter_files(adapter, "--adapter")
            if source.model and recorded_base(adapter) is not None:
                check_same_base(adapter, source.model, "--adapter")
        from ..identity import trained_in_4bit

        run_path = adapter if source.adapter else (Path(source.model) if source.model and Path(source.model).is_dir() else None)
        four_bit = trained_in_4bit(recipe, run_path)  # a QLoRA run answers as it trained and was evaluated: 4-bit on CUDA
        runtime = "transformers" if source.runtime == "auto" else source.runtime
        weights = Weights(spec, adapter, backend=recipe.backend, max_seq_length=recipe.train.max_seq_length,
                          load_in_4bit=four_bit, system=recipe.prompt.system)
    with console.status(f"loading {weights.label} on {runtime}"):
        generator = RUNTIMES[runtime](weights)
    log.info(f"{generator.name} loaded in {time.perf_counter() - start:.1f} s")
    return generator


def _gguf_runtime(path: Path, runtime: str) -> str:
    """The runtime a GGUF opens on: one that runs its generation exactly (families.Family.gguf_runtimes); for auto,
    llama.cpp where it is installed (or installs), else transformers (slower to load)."""
    from ..families import family_of_gguf
    from ..models.gguf_tokenizer import _read_metadata, gguf_problem
    from ..io import require_file

    require_file(path, "--gguf")
    problem = gguf_problem(path)  # before a runtime reads it: a bad file is one line, not a llama.cpp/transformers error
    if problem:
        raise UserError(f"--gguf {path} {problem}")
    family = family_of_gguf(str(_read_metadata(path).get("general.architecture")), f"--gguf {path}")
    exact = family.gguf_runtimes  # the runtimes here that run this generation exactly (families.py)
    if not exact:
        raise UserError(f"--gguf {path}: no runtime here runs {family.label} GGUFs exactly (families.Family.gguf_runtimes); "
                        "run it in llama.cpp or Ollama, or chat with --adapter RUN or --model RUN/merged")
    if runtime != "auto":
        if runtime not in exact:
            raise UserError(f"--runtime {runtime}: it does not run {family.label} GGUFs exactly; use --runtime {exact[0]}")
        return runtime
    if "llama.cpp" in exact:
        from .llama_tools import runtime_dir

        folder, why = runtime_dir(install=True)
        if folder is not None:
            return "llama.cpp"
        log.warning(f"llama.cpp runtime unavailable ({why}); loading the GGUF with transformers (slower)")
    return "transformers"


# ---------------------------------------------------------------- a conversation


class Conversation:
    """Turns in the model's PromptFormat; earlier (question, answer) turns kept in front, the oldest dropped first
    when they no longer fit. `max_length` (train.max_seq_length) bounds prompt + answer, with the model's context."""

    def __init__(self, generator: Generator, settings: GenerationSettings, retriever=None, context: str = "", history: bool = True,
                 max_length: int = 0):
        self.generator, self.settings, self.retriever, self.context, self.keep = generator, settings, retriever, context, history
        self.max_length = min(generator.max_length, max_length) if max_length else generator.max_length
        self.turns: list[tuple[Prompt, str]] = []  # (the user turn's body, the answer)

    def prompt(self, question: str, context: str | None = None) -> tuple[Prompt, Prompt]:
        """(the prompt to generate from, this turn's user body)."""
        passages = self.retriever.passages(question) if self.retriever is not None else []
        context = self.context if context is None else context
        fmt = self.generator.prompts
        body = fmt.body(question, context, passages)
        budget = self.max_length - self.settings.max_new_tokens
        alone = fmt.prompt(question, context, passages)
        if len(alone.text) > 8 * max(budget, 1):  # no tokenizer makes fewer tokens than characters / 8: not tokenized
            raise UserError(f"the prompt is {len(alone.text):,} characters; with --max-new-tokens {self.settings.max_new_tokens} "
                            f"it must fit in {self.max_length} tokens (train.max_seq_length, at most the model's context): "
                            "shorten the question or --context, or raise train.max_seq_length (--set); nothing was generated")
        if budget <= 0:
            raise UserError(f"--max-new-tokens {self.settings.max_new_tokens} leaves no room for a prompt in {self.max_length} "
                            "tokens (train.max_seq_length, at most the model's context): lower it, or raise train.max_seq_length")
        if (tokens := len(fmt.encode(alone))) > budget:
            raise UserError(f"the prompt is {tokens:,} tokens; with --max-new-tokens {self.settings.max_new_tokens} it must fit in "
                            f"{self.max_length} tokens (train.max_seq_length, at most the model's context): shorten the "
                            "question or --context, or raise train.max_seq_length (--set); nothing was generated")
        while self.turns and len(fmt.encode(fmt.prompt(question, context, passages, self.turns))) > budget:
            self.turns.pop(0)
        return fmt.prompt(question, context, passages, self.turns), body

    def ask(self, question: str, on_text: OnText | None = None, context: str | None = None) -> str:
        prompt, body = self.prompt(question, context)
        answer = self.generator.stream(prompt, self.settings, on_text)
        if self.keep:
            self.turns.append((body, answer))
        return answer

    def reset(self) -> None:
        self.turns = []


def retriever_for(recipe, index: str | None):
    """A rag.Retriever for --rag: the recipe's rag.index, or the index folder given (its own embedding model)."""
    if index is None:
        return None
    import dataclasses

    cfg = recipe.rag
    if index:
        from ..io import read_json

        manifest_path = Path(index) / "manifest.json"
        manifest = read_json(manifest_path) if manifest_path.is_file() else {}
        cfg = dataclasses.replace(cfg, index=index, embedding_model=manifest.get("embedding_model", cfg.embedding_model)
                                  if isinstance(manifest, dict) else cfg.embedding_model)
    if not cfg.index:
        raise UserError("--rag without a folder needs rag.index in the recipe (or give the index: --rag rag/NAME)")
    from ..rag import Retriever

    return Retriever(cfg)

"""Talk to a model: a base, an adapter run, a merged folder or a GGUF, through the one prompt builder.

Prompts are the model's PromptFormat (prompts.py: its generation's turns, the recipe's system message, question,
context and retrieved passages), exactly as in training and evaluation; earlier turns of an interactive chat are kept
in front as finished turns. Answers stream as they are generated and stop at the end of the turn. A prompt longer than
train.max_seq_length (what the model was trained and evaluated with) is refused before anything runs. A GGUF runs on
llama.cpp (ik-llama-cpp-python) where it is installed, else through transformers' GGUF loader (slower to load;
query_pre_attn_scalar restored as llama.cpp does).
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError
from .prompts import Prompt, PromptFormat, Tokenize

OnText = Callable[[str], None]


def _stripped_stream(on_text: OnText | None) -> OnText | None:
    """Stream exactly the text answer() returns (answers are strip()ped): leading whitespace dropped, whitespace
    held back until something follows it."""
    if on_text is None:
        return None
    state = {"started": False, "pending": ""}

    def emit(piece: str) -> None:
        if not state["started"]:
            piece = piece.lstrip()
            if not piece:
                return
            state["started"] = True
        body = piece.rstrip()
        if body:
            on_text(state["pending"] + body)
            state["pending"] = piece[len(body):]
        else:
            state["pending"] += piece

    return emit


@dataclass
class Settings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


class TransformersChat:
    """A transformers model (optionally with a PEFT adapter) streaming through TextStreamer."""

    def __init__(self, model, tokenizer, prompts: PromptFormat, name: str):
        self.model, self.tokenizer, self.prompts, self.name = model.eval(), tokenizer, prompts, name
        self.stop_ids = prompts.stop_ids
        self.max_length = getattr(model.config.get_text_config(), "max_position_embeddings", 8192)

    def count(self, prompt: Prompt) -> int:
        return len(self.prompts.encode(prompt))

    def answer(self, prompt: Prompt, settings: Settings, on_text: OnText | None = None) -> str:
        import torch
        from transformers import TextStreamer

        on_text = _stripped_stream(on_text)

        class Stream(TextStreamer):
            def on_finalized_text(self, piece: str, stream_end: bool = False) -> None:
                if on_text and piece:
                    on_text(piece)

        ids = torch.tensor([self.prompts.encode(prompt)], device=next(self.model.parameters()).device)
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
            if settings.temperature > 0 else {"do_sample": False}
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=settings.max_new_tokens, eos_token_id=self.stop_ids,
                                      pad_token_id=self.prompts.pad_id, streamer=Stream(self.tokenizer, skip_prompt=True,
                                                                                                skip_special_tokens=True), **sampling)
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


class LlamaCppChat:
    """A GGUF on llama.cpp's CPU runtime (ik-llama-cpp-python)."""

    def __init__(self, gguf: Path, runtime_folder: Path, n_ctx: int = 4096, system: str = ""):
        from .llama_runtime import LlamaRuntime

        self.runtime = LlamaRuntime(gguf, runtime_folder, n_ctx=n_ctx)
        self.name, self.max_length = f"{gguf.name} (llama.cpp)", n_ctx
        self.prompts = gguf_prompt_format(gguf, self.runtime, system)
        self.stop_ids = set(self.prompts.stop_ids)

    def count(self, prompt: Prompt) -> int:
        return len(self.prompts.encode(prompt))

    def answer(self, prompt: Prompt, settings: Settings, on_text: OnText | None = None) -> str:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        on_text = _stripped_stream(on_text)

        def emit(token: int) -> None:
            piece = decoder.decode(self.runtime.piece(token))
            if piece:
                pieces.append(piece)
                if on_text:
                    on_text(piece)

        ids = self.prompts.encode(prompt)
        self.runtime.generate(ids, min(settings.max_new_tokens, self.max_length - len(ids)), self.stop_ids, emit,
                              temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
        tail = decoder.decode(b"", final=True)
        if tail and on_text:
            on_text(tail)
        return ("".join(pieces) + tail).strip()


def gguf_prompt_format(gguf: Path, runtime, system: str = "") -> PromptFormat:
    """The PromptFormat of a GGUF on llama.cpp: its generation from general.architecture, its control tokens as the
    runtime tokenizes them, the empty thought channel when its own chat template primes one."""
    from .families import family_of_gguf, wants_empty_thought
    from .gguf_tokenizer import _read_metadata

    meta = _read_metadata(gguf)
    family = family_of_gguf(str(meta.get("general.architecture")), str(gguf))
    controls = {}
    for text in family.control_tokens:
        ids = runtime.tokenize(text, special=True)
        if len(ids) == 1:
            controls[text] = ids[0]
    tokens = meta.get("tokenizer.ggml.tokens") or []
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    bos = tokens[bos_id] if isinstance(bos_id, int) and bos_id < len(tokens) else "<bos>"
    tokenize = Tokenize(lambda texts, special: [runtime.tokenize(t, special) for t in texts], controls, bos, bos_id)
    empty = wants_empty_thought(family, meta.get("tokenizer.chat_template"))
    return PromptFormat(family, tokenize, system, empty, meta.get("tokenizer.ggml.eos_token_id"),
                        meta.get("tokenizer.ggml.padding_token_id") or 0)


def run_model_config(gguf: Path):
    """The text config of the model a run's GGUF came from (<run>/gguf/FILE, the run's recipe.yaml names the model),
    or None when the file does not sit in a run folder or that model is not here."""
    import yaml

    recipe = gguf.resolve().parent.parent / "recipe.yaml"
    try:
        spec = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("model") if recipe.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(spec, str):
        return None
    from .families import family_of_config
    from .models import load_config, resolve_model, text_only

    try:
        config = load_config(spec, resolve_model(spec))
        return text_only(config, family_of_config(config)) or config
    except UserError:
        return None


def gguf_query_scalar(gguf: Path) -> float | None:
    """Gemma 3's query_pre_attn_scalar, which GGUF does not store: llama.cpp's rule (hidden/heads for the 62-layer
    27B, else head_dim). None for other architectures."""
    from .gguf_tokenizer import _read_metadata

    meta = _read_metadata(gguf)
    arch = meta.get("general.architecture")
    if arch != "gemma3":
        return None
    if meta.get(f"{arch}.block_count") == 62:
        return meta[f"{arch}.embedding_length"] / meta[f"{arch}.attention.head_count"]
    return meta.get(f"{arch}.attention.key_length", 256)


# ---------------------------------------------------------------- opening a model


@dataclass
class Source:
    model: str = ""  # a base or merged folder, an embedded model, a hub id
    adapter: str = ""  # a run folder or its adapter/
    gguf: str = ""
    runtime: str = "auto"  # for a GGUF: auto | llama.cpp | transformers
    notes: list[str] = field(default_factory=list)


def adapter_folder(path: Path) -> Path:
    adapter = path / "adapter" if (path / "adapter").is_dir() else path
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {path}: no adapter_config.json in it or in its adapter/ folder")
    return adapter


def adapter_base(adapter: Path) -> str | None:
    """The base model spec an adapter was trained on (its gemma_fast_base.json, else the run's recipe)."""
    from .identity import recorded_base

    recorded = recorded_base(adapter) or {}
    if recorded.get("name"):
        return recorded["name"]
    from .evaluation import run_recipe

    return run_recipe(adapter).get("model")


def open_model(source: Source, recipe, console) -> TransformersChat | LlamaCppChat:
    start = time.perf_counter()
    if source.gguf:
        chat = _open_gguf(Path(source.gguf), source.runtime, console, recipe.prompt.system)
    else:
        from .models import load_model

        spec = source.model or (adapter_base(adapter_folder(Path(source.adapter))) if source.adapter else None) or recipe.model
        if source.adapter:
            from .identity import check_adapter_files, check_same_base, recorded_base

            adapter = adapter_folder(Path(source.adapter))
            check_adapter_files(adapter, "--adapter")
            if source.model and recorded_base(adapter) is not None:
                check_same_base(adapter, source.model, "--adapter")
        from .evaluation import trained_in_4bit

        run_path = adapter if source.adapter else (Path(source.model) if source.model and Path(source.model).is_dir() else None)
        four_bit = trained_in_4bit(recipe, run_path)  # a QLoRA run answers as it trained and was evaluated: 4-bit on CUDA
        with console.status(f"loading {spec}{' + ' + source.adapter if source.adapter else ''}"):
            loaded = load_model(spec, recipe.backend, recipe.train.max_seq_length, load_in_4bit=four_bit, system=recipe.prompt.system)
            model = loaded.model
            if source.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter))
        chat = TransformersChat(model, loaded.tokenizer, loaded.prompts, f"{spec}{' + adapter ' + str(adapter) if source.adapter else ''}")
    console.print(f"[dim]{chat.name} loaded in {time.perf_counter() - start:.1f} s[/]", highlight=False)
    return chat


def _open_gguf(path: Path, runtime: str, console, system: str = "") -> TransformersChat | LlamaCppChat:
    from .families import family_of_gguf
    from .gguf_tokenizer import _read_metadata, gguf_problem
    from .io import require_file

    require_file(path, "--gguf")
    problem = gguf_problem(path)  # before a runtime reads it: a bad file is one line, not a llama.cpp/transformers error
    if problem:
        raise UserError(f"--gguf {path} {problem}")
    family = family_of_gguf(str(_read_metadata(path).get("general.architecture")), f"--gguf {path}")
    exact = family.gguf_runtimes  # the runtimes here that run this generation exactly (families.py)
    if not exact:
        raise UserError(f"--gguf {path}: no runtime here runs {family.label} GGUFs exactly (families.Family.gguf_runtimes); "
                        "run it in llama.cpp or Ollama, or chat with --adapter RUN or --model RUN/merged")
    if runtime == "llama.cpp" and "llama.cpp" not in exact:
        raise UserError(f"--runtime llama.cpp: ik-llama-cpp-python does not run {family.label} exactly; use --runtime transformers")
    if runtime == "auto" and "llama.cpp" not in exact:
        runtime = "transformers"
    if runtime in ("auto", "llama.cpp"):
        from .tools import runtime_dir

        folder, why = runtime_dir(install=True)
        if folder is not None:
            with console.status(f"loading {path.name} on llama.cpp"):
                return LlamaCppChat(path, folder, system=system)
        if runtime == "llama.cpp":
            raise UserError(f"--runtime llama.cpp: {why}")
        console.print(f"[yellow]note:[/] llama.cpp runtime unavailable ({why}); loading the GGUF with transformers (slower)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .models import prepare_tokenizer
    from .prompts import prompt_format

    hf_logging.disable_progress_bar()

    extra: dict = {}
    config = run_model_config(path)
    if config is not None:  # the run's own model config: exact where the GGUF's metadata maps loosely (Gemma 4)
        extra["config"] = config
    elif (scalar := gguf_query_scalar(path)) is not None:
        extra["query_pre_attn_scalar"] = scalar
    with console.status(f"loading {path.name} with transformers (dequantising)"):
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
        try:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, **extra)
        except RuntimeError as exc:  # transformers' GGUF config mapping does not fit the weights (Gemma 4)
            raise UserError(f"--gguf {path}: transformers cannot rebuild this {family.label} model's configuration from the "
                            f"GGUF ({str(exc).splitlines()[0][:120]}); open it where its export wrote it (<run>/gguf/), "
                            "so the run's recipe names the model's config") from None
    prompts = prompt_format(tokenizer, model.config, system)
    model.generation_config.eos_token_id = prompts.stop_ids
    return TransformersChat(model, tokenizer, prompts, f"{path.name} (transformers)")


# ---------------------------------------------------------------- a conversation


class Conversation:
    """Turns in the model's PromptFormat; earlier (question, answer) turns kept in front, the oldest dropped first
    when they no longer fit. `max_length` (train.max_seq_length) bounds prompt + answer, with the model's context."""

    def __init__(self, chat, settings: Settings, retriever=None, context: str = "", history: bool = True, max_length: int = 0):
        self.chat, self.settings, self.retriever, self.context, self.keep = chat, settings, retriever, context, history
        self.max_length = min(chat.max_length, max_length) if max_length else chat.max_length
        self.turns: list[tuple[Prompt, str]] = []  # (the user turn's body, the answer)

    def prompt(self, question: str, context: str | None = None) -> tuple[Prompt, Prompt]:
        """(the prompt to generate from, this turn's user body)."""
        passages = self.retriever.passages(question) if self.retriever is not None else []
        context = self.context if context is None else context
        fmt = self.chat.prompts
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
        if (tokens := self.chat.count(alone)) > budget:
            raise UserError(f"the prompt is {tokens:,} tokens; with --max-new-tokens {self.settings.max_new_tokens} it must fit in "
                            f"{self.max_length} tokens (train.max_seq_length, at most the model's context): shorten the "
                            "question or --context, or raise train.max_seq_length (--set); nothing was generated")
        while self.turns and self.chat.count(fmt.prompt(question, context, passages, self.turns)) > budget:
            self.turns.pop(0)
        return fmt.prompt(question, context, passages, self.turns), body

    def ask(self, question: str, on_text: OnText | None = None, context: str | None = None) -> str:
        prompt, body = self.prompt(question, context)
        answer = self.chat.answer(prompt, self.settings, on_text)
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
        from .io import read_json

        manifest_path = Path(index) / "manifest.json"
        manifest = read_json(manifest_path) if manifest_path.is_file() else {}
        cfg = dataclasses.replace(cfg, index=index, embedding_model=manifest.get("embedding_model", cfg.embedding_model)
                                  if isinstance(manifest, dict) else cfg.embedding_model)
    if not cfg.index:
        raise UserError("--rag without a folder needs rag.index in the recipe (or give the index: --rag rag/NAME)")
    from .rag import Retriever

    return Retriever(cfg)

"""One way to generate answers, whatever runs the model: evaluation, robustness, chat, the GGUF round trip and the
benchmarks all call a Generator, with one GenerationSettings.

A Generator answers prompts.Prompt objects written by its own PromptFormat, which is also the one place that decides
where an answer ends (PromptFormat.stop_ids: the end of a turn, and the end of the text). Two runtimes:
- transformers (TransformersGenerator): batched, length-sorted, left-padded; each batch within settings.batch_size
  prompts and settings.batch_tokens tokens of KV cache (rows x (longest prompt + new tokens + Unsloth's decode
  buffer): batching.token_batches);
- llama.cpp (LlamaCppGenerator): a GGUF on ik-llama-cpp-python's CPU runtime, one prompt at a time.
A new runtime is one class and one RUNTIMES entry: a factory from Weights (what to open) to a Generator.
"""

from __future__ import annotations

import codecs
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from ..batching import UNSLOTH_DECODE_BUFFER, token_batches
from ..errors import UserError
from ..prompts import Prompt, PromptFormat, Tokenize

OnText = Callable[[str], None]
OnBatch = Callable[[list[int], list[str]], None]  # (indices into the prompts, their answers), as each batch finishes


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate, for every runtime. Runtimes that run one prompt at a time ignore the batch limits."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0  # sampling only; the caller's random state is as it was afterwards
    batch_size: int = 16  # prompts per batch, at most
    batch_tokens: int | None = None  # tokens of KV cache per batch, at most (batching.token_batches); None: no cap

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @classmethod
    def from_eval(cls, ev, seed: int) -> "GenerationSettings":
        """A recipe's eval section (recipe.EvalConfig) and seed: sampling only with eval.do_sample."""
        return cls(ev.max_new_tokens, ev.temperature if ev.do_sample else 0.0, ev.top_p, seed, ev.batch_size, ev.batch_tokens)


class Generator(Protocol):
    runtime: str  # its RUNTIMES name; part of evaluation's cache key (another runtime, other answers)
    name: str  # what answers, for people: "embedded:gemma-3-270m + adapter runs/x", "model-q8_0.gguf (llama.cpp)"
    prompts: PromptFormat  # writes and tokenizes its prompts; its stop_ids end every answer
    max_length: int  # the model's context: prompt + answer tokens

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings, on_batch: OnBatch | None = None) -> list[str]:
        """Answers to `prompts`, in their order (stripped, stop tokens left out)."""

    def stream(self, prompt: Prompt, settings: GenerationSettings, on_text: OnText | None = None) -> str:
        """One answer, its text passed to `on_text` as it is generated: exactly the text returned, piece by piece."""

    def generate_ids(self, prompt_ids: Sequence[list[int]], settings: GenerationSettings) -> list[list[int]]:
        """The generated ids after each prompt's ids, up to (not including) the first stop id: the round trip's
        token-level comparison."""


def stripped_stream(on_text: OnText | None) -> OnText | None:
    """Stream exactly the text a generator returns (answers are strip()ped): leading whitespace dropped, whitespace
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


# ---------------------------------------------------------------- transformers


def decode_buffer(model) -> int:
    """KV positions generation holds beyond prompt + new tokens: Unsloth's fast GPU decode allocates 513 more (its
    CPU backend and transformers' own generate allocate none)."""
    base = getattr(model, "module", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    on_gpu = next(base.parameters()).is_cuda
    return UNSLOTH_DECODE_BUFFER if on_gpu and getattr(base.config, "unsloth_version", None) else 0


def left_padded(rows: list[list[int]], pad_id: int, device) -> dict:
    """input_ids and attention_mask, padded on the left so every row's new tokens start at the same position."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for n, row in enumerate(rows):
        ids[n, width - len(row):] = torch.tensor(row, dtype=torch.long)
        attention[n, width - len(row):] = 1
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device)}


def for_inference(model, backend: str) -> None:
    """Unsloth's faster generation path (applied to a PEFT adapter too); nothing on the hf backend."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)


class TransformersGenerator:
    """A transformers model (optionally with a PEFT adapter): batched generation, and streaming through TextStreamer."""

    runtime = "transformers"

    def __init__(self, model, tokenizer, prompts: PromptFormat, name: str, backend: str = "hf"):
        self.model, self.tokenizer, self.prompts, self.name, self.backend = model, tokenizer, prompts, name, backend
        self.max_length = getattr(model.config.get_text_config(), "max_position_embeddings", 8192)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings, on_batch: OnBatch | None = None) -> list[str]:
        """Sorting by length keeps padding (wasted compute) small in each batch."""
        answers = [""] * len(prompts)
        for idx, new in self._batches(self.prompts.encode_many(prompts), settings):
            texts = [self._text(new[row]) for row in range(len(idx))]
            for i, text in zip(idx, texts):
                answers[i] = text
            if on_batch:
                on_batch(idx, texts)
        return answers

    def generate_ids(self, prompt_ids: Sequence[list[int]], settings: GenerationSettings) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in prompt_ids]
        for idx, new in self._batches(list(prompt_ids), settings):
            for row, i in enumerate(idx):
                out[i] = self._answer_ids(new[row])
        return out

    def stream(self, prompt: Prompt, settings: GenerationSettings, on_text: OnText | None = None) -> str:
        from transformers import TextStreamer

        emit = stripped_stream(on_text)

        class Stream(TextStreamer):
            def on_finalized_text(self, piece: str, stream_end: bool = False) -> None:
                if emit and piece:
                    emit(piece)

        new = self._generate_batch([self.prompts.encode(prompt)], settings,
                                   streamer=Stream(self.tokenizer, skip_prompt=True, skip_special_tokens=True))
        return self._text(new[0])

    def _answer_ids(self, new) -> list[int]:
        """A row's new ids up to its first stop id (after it: padding, once the row stopped)."""
        ids, stops = new.tolist(), set(self.prompts.stop_ids)
        return ids[:next((k for k, t in enumerate(ids) if t in stops), len(ids))]

    def _text(self, new) -> str:
        return self.tokenizer.decode(self._answer_ids(new), skip_special_tokens=True).strip()

    def _batches(self, encoded: list[list[int]], settings: GenerationSettings):
        """(indices, their new ids) per batch: shortest prompts first, each batch within the settings' limits."""
        extra = settings.max_new_tokens + decode_buffer(self.model)
        for idx in token_batches([len(e) for e in encoded], settings.batch_size, settings.batch_tokens, extra):
            yield idx, self._generate_batch([encoded[i] for i in idx], settings)

    def _generate_batch(self, rows: list[list[int]], settings: GenerationSettings, **extra):
        """One model.generate call; the new ids of each row (a row that stopped early is padded after its stop).
        Sampling seeds a fork of the random state, anew for every batch."""
        import torch

        self.model.eval()
        sampling = {"do_sample": False} if settings.greedy else \
            {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
        with torch.no_grad(), nullcontext() if settings.greedy else torch.random.fork_rng():
            if not settings.greedy:
                torch.manual_seed(settings.seed)
            enc = left_padded(rows, self.prompts.pad_id, next(self.model.parameters()).device)
            out = self.model.generate(**enc, max_new_tokens=settings.max_new_tokens, **sampling,
                                      eos_token_id=self.prompts.stop_ids, pad_token_id=self.prompts.pad_id, **extra)
        return out[:, enc["input_ids"].shape[1]:]


# ---------------------------------------------------------------- llama.cpp


class LlamaCppGenerator:
    """A GGUF on llama.cpp's CPU runtime (ik-llama-cpp-python, llama_runtime.LlamaRuntime), one prompt at a time."""

    runtime = "llama.cpp"

    def __init__(self, gguf: Path, runtime_folder: Path, system: str = "", n_ctx: int = 4096):
        from .llama_runtime import LlamaRuntime

        self.llama = LlamaRuntime(gguf, runtime_folder, n_ctx=n_ctx)
        self.name, self.max_length = f"{gguf.name} (llama.cpp)", n_ctx
        self.prompts = gguf_prompt_format(gguf, self.llama, system)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings, on_batch: OnBatch | None = None) -> list[str]:
        answers = []
        for i, ids in enumerate(self.prompts.encode_many(prompts)):
            answers.append(self._answer(ids, settings))
            if on_batch:
                on_batch([i], answers[-1:])
        return answers

    def generate_ids(self, prompt_ids: Sequence[list[int]], settings: GenerationSettings) -> list[list[int]]:
        return [self._ids(ids, settings) for ids in prompt_ids]

    def stream(self, prompt: Prompt, settings: GenerationSettings, on_text: OnText | None = None) -> str:
        return self._answer(self.prompts.encode(prompt), settings, on_text)

    def _ids(self, ids: list[int], settings: GenerationSettings, on_token: Callable[[int], None] | None = None) -> list[int]:
        return self.llama.generate(ids, min(settings.max_new_tokens, self.max_length - len(ids)), set(self.prompts.stop_ids),
                                   on_token, temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)

    def _answer(self, ids: list[int], settings: GenerationSettings, on_text: OnText | None = None) -> str:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        emit = stripped_stream(on_text)

        def on_token(token: int) -> None:
            piece = decoder.decode(self.llama.piece(token))
            if piece:
                pieces.append(piece)
                if emit:
                    emit(piece)

        self._ids(ids, settings, on_token)
        tail = decoder.decode(b"", final=True)
        if tail and emit:
            emit(tail)
        return ("".join(pieces) + tail).strip()


def gguf_prompt_format(gguf: Path, runtime, system: str = "") -> PromptFormat:
    """The PromptFormat of a GGUF on llama.cpp: its generation from general.architecture, its control tokens as the
    runtime tokenizes them, the empty thought channel when its own chat template primes one."""
    from ..families import family_of_gguf, wants_empty_thought
    from ..models.gguf_tokenizer import _read_metadata

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


# ---------------------------------------------------------------- opening a model on a runtime


@dataclass(frozen=True)
class Weights:
    """What a runtime opens, resolved by the caller (chat, evaluation): a model spec (a base or merged folder, an
    embedded model, a hub id) with an optional adapter, or a GGUF file."""

    model: str = ""
    adapter: Path | None = None
    gguf: Path | None = None
    backend: str = "auto"  # transformers: recipe.backend
    max_seq_length: int = 2048  # transformers: what the model is loaded for (Unsloth sizes its RoPE cache by it)
    load_in_4bit: bool = False
    system: str = ""  # the recipe's prompt.system
    n_ctx: int = 4096  # llama.cpp: the context it allocates

    @property
    def label(self) -> str:
        return str(self.gguf) if self.gguf else self.model + (f" + adapter {self.adapter}" if self.adapter else "")


def open_transformers(weights: Weights) -> TransformersGenerator:
    """A model folder (with its adapter) through models.load_model, or a GGUF through transformers' GGUF loader."""
    if weights.gguf:
        return _transformers_gguf(weights.gguf, weights.system)
    from ..models.loader import load_model

    loaded = load_model(weights.model, weights.backend, weights.max_seq_length, load_in_4bit=weights.load_in_4bit,
                        system=weights.system)
    model = loaded.model
    if weights.adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(weights.adapter))
        except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch: another architecture or LoRA rank
            raise UserError(f"adapter {weights.adapter} does not fit model '{weights.model}' (another architecture or shape): "
                            f"{str(exc).strip().splitlines()[0][:300]}") from None
    return TransformersGenerator(model, loaded.tokenizer, loaded.prompts, weights.label, loaded.backend)


def _transformers_gguf(path: Path, system: str) -> TransformersGenerator:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ..families import family_of_gguf
    from ..models.gguf_tokenizer import _read_metadata
    from ..models.loader import prepare_tokenizer
    from ..prompts import prompt_format

    hf_logging.disable_progress_bar()
    extra: dict = {}
    config = run_model_config(path)
    if config is not None:  # the run's own model config: exact where the GGUF's metadata maps loosely (Gemma 4)
        extra["config"] = config
    elif (scalar := gguf_query_scalar(path)) is not None:
        extra["query_pre_attn_scalar"] = scalar
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, **extra)
    except RuntimeError as exc:  # transformers' GGUF config mapping does not fit the weights (Gemma 4)
        family = family_of_gguf(str(_read_metadata(path).get("general.architecture")), f"--gguf {path}")
        raise UserError(f"--gguf {path}: transformers cannot rebuild this {family.label} model's configuration from the "
                        f"GGUF ({str(exc).splitlines()[0][:120]}); open it where its export wrote it (<run>/gguf/), "
                        "so the run's recipe names the model's config") from None
    prompts = prompt_format(tokenizer, model.config, system)
    model.generation_config.eos_token_id = prompts.stop_ids
    return TransformersGenerator(model, tokenizer, prompts, f"{path.name} (transformers)")


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
    from ..families import family_of_config
    from ..models.loader import load_config, resolve_model, text_only

    try:
        config = load_config(spec, resolve_model(spec))
        return text_only(config, family_of_config(config)) or config
    except UserError:
        return None


def gguf_query_scalar(gguf: Path) -> float | None:
    """Gemma 3's query_pre_attn_scalar, which GGUF does not store: llama.cpp's rule (hidden/heads for the 62-layer
    27B, else head_dim). None for other architectures."""
    from ..models.gguf_tokenizer import _read_metadata

    meta = _read_metadata(gguf)
    arch = meta.get("general.architecture")
    if arch != "gemma3":
        return None
    if meta.get(f"{arch}.block_count") == 62:
        return meta[f"{arch}.embedding_length"] / meta[f"{arch}.attention.head_count"]
    return meta.get(f"{arch}.attention.key_length", 256)


def open_llama_cpp(weights: Weights) -> LlamaCppGenerator:
    """A GGUF on ik-llama-cpp-python, installed into the cache on first use (tools.runtime_dir)."""
    if not weights.gguf:
        raise UserError(f"the llama.cpp runtime runs GGUF files, and {weights.label} is not one: export the run's GGUF "
                        "(train_qlora.py --export-only --gguf q8_0) and give that file, or use the transformers runtime")
    from .llama_tools import runtime_dir

    folder, why = runtime_dir(install=True)
    if folder is None:
        raise UserError(f"the llama.cpp runtime is unavailable: {why}")
    return LlamaCppGenerator(weights.gguf, folder, weights.system, weights.n_ctx)


# A runtime: what it opens (Weights) -> a Generator. Chat's --runtime choices come from here.
RUNTIMES: dict[str, Callable[[Weights], Generator]] = {"transformers": open_transformers, "llama.cpp": open_llama_cpp}

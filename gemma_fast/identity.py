"""What a model or adapter *is*, by content: so a cache is reused and an adapter applied only when the weights match,
whatever path names them (a relative and an absolute path to one folder are the same model; a copied adapter
trained on another base is not).

File digests are cached by (path, size, mtime), so a 500 MB weight file is hashed once, not on every run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .methods import method_of
from .paths import cache_root

if TYPE_CHECKING:  # annotations only
    from .recipe import Recipe

BASE_FILE = "gemma_fast_base.json"  # written into adapter/ and the run folder: the base model the adapter was trained on
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def _digest_cache() -> Path:
    return cache_root() / "sha256_cache.json"


def file_sha256(path: Path) -> str:
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = _digest_cache()
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:  # a cache that cannot be written only costs speed
        from .io import write_json

        write_json(cache_file, dict(list(cache.items())[-500:]))
    except OSError:
        pass
    return cache[key]


def folder_sha256(folder: Path) -> str:
    """config.json plus every weight file, by name and content."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and (path.name == "config.json" or path.name == "adapter_config.json" or path.suffix in WEIGHT_SUFFIXES):
            digest.update(f"{path.name}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()


def _local_folder(spec: str) -> Path | None:
    if spec.startswith("embedded:"):
        folder = cache_root() / spec[len("embedded:"):]
        return folder if folder.is_dir() else None
    path = Path(spec).expanduser()
    return path if (path / "config.json").is_file() else None


def base_identity(spec: str) -> dict:
    """{name, path, sha256} for a local (or embedded, already converted) model folder; {name} for a hub id."""
    folder = _local_folder(spec)
    if folder is None:
        return {"name": spec}
    return {"name": spec, "path": str(folder.resolve()), "sha256": folder_sha256(folder)}


def recorded_base(adapter: Path) -> dict | None:
    """The base an adapter was trained on: its gemma_fast_base.json, else peft's adapter_config.json
    base_model_name_or_path (fingerprinted when that folder exists here)."""
    for place in (adapter / BASE_FILE, adapter.parent / BASE_FILE):
        if place.is_file():
            try:
                data = json.loads(place.read_text(encoding="utf-8"))
                if isinstance(data, dict) and data.get("name"):
                    return data
            except (OSError, ValueError):
                pass
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return base_identity(name) if isinstance(name, str) and name else None


def same_base(recorded: dict, spec: str) -> bool:
    current = base_identity(spec)
    if recorded.get("sha256") and current.get("sha256"):
        return recorded["sha256"] == current["sha256"]
    if recorded.get("path") and current.get("path"):
        return recorded["path"] == current["path"]
    if recorded.get("path") or current.get("path"):  # one side local, the other only a name: compare the folder name
        return Path(str(recorded.get("path") or recorded["name"])).name == Path(str(current.get("path") or current["name"])).name
    return recorded.get("name") == current.get("name")


def check_same_base(adapter: Path, spec: str, what: str) -> None:
    """Refuse an adapter (or checkpoint) trained on another base model than `spec`."""
    recorded = recorded_base(adapter)
    if recorded is None or same_base(recorded, spec):
        return
    raise UserError(f"{what} {adapter} was trained on model '{recorded.get('name')}', but the recipe's model is '{spec}' "
                    "(their weights differ); set --set model=... to the model it was trained on; nothing was changed")


def write_base(folder: Path, spec: str) -> None:
    from .io import write_json

    write_json(Path(folder) / BASE_FILE, base_identity(spec))


def check_adapter_shape(adapter: Path, recipe, method: str, what: str, targets: list[str]) -> None:
    """Refuse a checkpoint whose adapter_config.json has another method, LoRA rank or target modules (`targets`: the
    recipe's, resolved for the model's family) than the recipe, before loading it (loading would end in a 100-line
    size-mismatch traceback)."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a checkpoint without it is judged by the checkpoint checks
    peft_type = str(config.get("peft_type", "")).upper()
    wanted = method_of(method).peft_type
    if peft_type and peft_type != wanted:
        raise UserError(f"{what} {adapter} holds a {peft_type} adapter, but train.method={method}; nothing was changed")
    if wanted == "PREFIX_TUNING":
        found = config.get("num_virtual_tokens")
        if found is not None and found != recipe.prefix.num_virtual_tokens:
            raise UserError(f"{what} {adapter} has prefix.num_virtual_tokens={found}, the recipe {recipe.prefix.num_virtual_tokens}; "
                            "nothing was changed")
        return
    lora = recipe.lora
    mismatches = []
    if config.get("r") is not None and config["r"] != lora.r:
        mismatches.append(f"lora.r={config['r']} (recipe: {lora.r})")
    if config.get("lora_alpha") is not None and config["lora_alpha"] != lora.alpha:
        mismatches.append(f"lora.alpha={config['lora_alpha']} (recipe: {lora.alpha})")
    targets = config.get("target_modules")
    if isinstance(targets, (list, str)):
        found = sorted(targets if isinstance(targets, list) else [targets])
        expected = sorted(targets)
        if found != expected:
            mismatches.append(f"lora.target_modules={found} (recipe: {lora.target_modules})")
    if mismatches:
        raise UserError(f"{what} {adapter} was trained with {', '.join(mismatches)}: set the recipe to match; nothing was changed")


# ---------------------------------------------------------------- is an adapter folder whole?

_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
                "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_header(path: Path) -> dict:
    """The tensors' header of a safetensors file ({name: {dtype, shape, data_offsets}}), after checking that the file
    holds every byte it announces and that each tensor's byte range fits its shape and dtype; ValueError says what is
    wrong."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        if size < 8 or header_len <= 0 or 8 + header_len > size:
            raise ValueError("is truncated (header)")
        try:
            header = json.loads(handle.read(header_len))
        except (ValueError, RecursionError):
            raise ValueError("has an unreadable header") from None
    if not isinstance(header, dict):
        raise ValueError("has an unreadable header")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        for name, info in tensors.items():
            start, end = info["data_offsets"]
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            if end - start != count * _DTYPE_BYTES.get(info["dtype"], end - start):
                raise ValueError(f"is damaged (tensor {name}: {end - start} bytes for shape {info['shape']} {info['dtype']})")
        end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
    except (KeyError, TypeError, IndexError):
        raise ValueError("has an unreadable header") from None
    if 8 + header_len + end > size:
        raise ValueError("is truncated (tensor data)")
    return tensors


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (safetensors_header), or None."""
    try:
        safetensors_header(path)
    except OSError as exc:
        return f"is unreadable ({exc.strerror or type(exc).__name__})"
    except ValueError as exc:
        return str(exc)
    return None


def adapter_problem(folder: Path) -> str | None:
    """Why the adapter in `folder` cannot be loaded, by cheap checks (headers only), or None: its weights cut off or
    damaged, or LoRA weights of another rank than its adapter_config.json says (peft would fail with a size-mismatch
    traceback)."""
    folder = Path(folder)
    weights = next((p for p in (folder / "adapter_model.safetensors", folder / "adapter_model.bin") if p.is_file()), None)
    if weights is None:
        return "no adapter_model.safetensors"
    if weights.suffix != ".safetensors":
        return None
    try:
        tensors = safetensors_header(weights)
    except OSError as exc:
        return f"adapter_model.safetensors is unreadable ({exc.strerror or type(exc).__name__})"
    except ValueError as exc:
        return f"adapter_model.safetensors {exc}"
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return "adapter_config.json unreadable"
    if not isinstance(config, dict):
        return "adapter_config.json is not an object"
    if str(config.get("peft_type", "LORA")).upper() != "LORA" or not isinstance(config.get("r"), int):
        return None
    ranks = {config["r"]} | {v for v in (config.get("rank_pattern") or {}).values() if isinstance(v, int)}
    for name, info in tensors.items():
        shape = info.get("shape") or []
        rank = shape[0] if ".lora_A." in name or ".lora_embedding_A" in name else \
            shape[1] if (".lora_B." in name or ".lora_embedding_B" in name) and len(shape) > 1 else None
        if rank is not None and rank not in ranks:
            return (f"adapter_model.safetensors holds rank-{rank} LoRA weights ({name}), but adapter_config.json says "
                    f"r={config['r']}")
    return None


def check_adapter_files(adapter: Path, what: str) -> None:
    """Refuse, in one line, an adapter folder whose weights are cut off, damaged or of another shape than its config."""
    problem = adapter_problem(adapter)
    if problem:
        raise UserError(f"{what} {adapter}: {problem}; retrain it, or continue its run with --resume")


def run_recipe(adapter: Path) -> dict:
    """The recipe an adapter's run saved (as it ran), or {} when the adapter was copied without it. Also for a run's
    merged/ folder (the run's recipe.yaml sits beside it)."""
    import yaml

    saved = next((p for p in (adapter / "recipe.yaml", adapter.parent / "recipe.yaml") if p.is_file()), None)
    return (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}) if saved else {}


def trained_in_4bit(recipe: Recipe, run_path: Path | None) -> bool:
    """Whether a model is loaded in 4-bit to be evaluated or chatted with as it trained: a QLoRA run, on CUDA. The
    run's saved recipe says how it trained (`run_path`: a run's adapter/ or merged/ folder), else `recipe` does."""
    import torch

    from .methods import METHODS

    saved = run_recipe(run_path) if run_path is not None else {}
    method = (saved.get("train") or {}).get("method") if saved else recipe.train.method
    return method in METHODS and METHODS[method].weights_4bit and torch.cuda.is_available()

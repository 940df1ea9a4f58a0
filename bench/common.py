"""What every benchmark stamps on its result: date, machine and library versions; results go to bench/results/<name>.json."""

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
# The libraries whose versions decide what a GPU figure means (the lent device's torch need not be the pinned one)
LIBRARIES = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo",
             "triton", "pyarrow", "datasets")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: this machine is shared, so every timing says what else ran."""
    return [round(x, 2) for x in os.getloadavg()]


def library_versions(names=LIBRARIES) -> dict[str, str | None]:
    """Installed distribution versions (importlib.metadata: nothing is imported); None where absent."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def shared_file(*parts: str) -> Path:
    """A file of the shared data: `shared/` inside the repository first (where a device call carries it), then the
    one beside it (a developer's checkout). The first that exists, else the inside path."""
    inside, beside = ROOT.joinpath("shared", *parts), ROOT.parent.joinpath("shared", *parts)
    return beside if beside.is_file() and not inside.is_file() else inside


def stamp(**fields) -> dict:
    return {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "versions": library_versions(), **fields}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return path

"""The exports of a finished run, one entry each in EXPORTERS: what it writes, whether it reads the merged model, the
tools it needs, and the function that writes it. `gemma-fast export` (cli/export.py) runs the entries asked for;
`train --merge/--gguf` runs that stage in a fresh process after training (export/ram.py says why).

Adding an export is one entry here: `--to NAME` runs it, `--list` shows it, its tools are installed before training
starts, and the --out guard knows its files. Entries run in their order here, whatever order they were asked in: the
merge before the GGUF files that may reuse it, bf16 before the q4_k_m quantised from it, the files before the
Modelfiles beside them; then each distinct `finish` once (the GGUF round trip, which reads every file back).

A GGUF type is one `gguf(...)` entry, named gguf-<type> (`--gguf <type>` selects it, with the Ollama Modelfiles);
the round trip's near-tie budget per type is roundtrip.NEAR_TIE_SHARE.
"""

from __future__ import annotations

import logging
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from ..errors import UserError
from .gguf import (compare_vocabulary, convert, merged_family, modelfile, prepare_export_folder, quantize, reference_vocabulary, tensor_types)
from ..identity import check_adapter_files, check_same_base, recorded_base
from ..io import write_json
from .merge import made_from, merge_adapter, merged_for_export
from ..outputs import check_out_dir, claim_out_dir
from ..recipe import Recipe
from .roundtrip import print_table, run_roundtrip
from ..inference.llama_tools import converter_script, quantize_binary

log = logging.getLogger(__name__)

WORK = ".export_work"  # one export's temporary files (a float32 merge, the converter's folder), removed at its end
WORK_FILES = (f"{WORK}/*", f"{WORK}/*/*")  # what a killed export leaves there (the --out guard's own files)


@dataclass
class Job:
    """One export of one finished run: what every entry reads, and what earlier entries leave for later ones."""
    recipe: Recipe
    run_dir: Path  # the finished training run (adapter/, recipe.yaml)
    out: Path  # where the exports go: the run folder, or --out
    roundtrip: int = 8  # test prompts the GGUF round trip checks (0: none)
    merge_dtype: torch.dtype = torch.float32  # the `merged` export's dtype
    merged: Path | None = None  # the LoRA merged into a float32 copy of the base: set before an entry that needs it
    left: dict = field(default_factory=dict)  # what entries leave for later ones ("gguf": the converter folder, files)

    @property
    def work(self) -> Path:
        return self.out / WORK


@dataclass(frozen=True)
class Exporter:
    name: str
    what: str  # one line for --list
    writes: tuple[str, ...]  # glob patterns relative to the output folder (--list; the --out guard's own files)
    run: Callable[[Job], str]  # writes the export; returns what it wrote, for the summary
    needs_merged: bool = False  # reads Job.merged (merged once per export, or <run>/merged reused: merge.merged_for_export)
    tools: tuple[Callable[[], object], ...] = ()  # find or install an external tool, before any work
    finish: Callable[[Job], dict] | None = None  # after every chosen entry: once, however many entries share it
    requires: str = ""  # a name prefix one of the other chosen entries must have (the Modelfiles name GGUF files)
    gguf: str = ""  # the GGUF type it writes (--gguf TYPE)
    exact: bool = True  # GGUF: the round trip must match the merged model (False: reported only)


# ---------------------------------------------------------------- the entries' functions


def merged(job: Job) -> str:
    return str(merge_adapter(job.recipe, job.run_dir / "adapter", job.out / "merged", job.merge_dtype))


def _converter_folder(job: Job) -> dict:
    """What every GGUF entry of this export shares, made once: the converter's folder (the merged weights linked, the
    tokenizer files restored) and the vocabulary each file must have."""
    state = job.left.get("gguf")
    if state is None:
        family, empty_thought = merged_family(job.merged)
        folder = job.work / "hf"
        prepare_export_folder(job.merged, job.recipe.model, folder, family)
        reference, reference_name = reference_vocabulary(job.recipe.model, folder, family)
        state = job.left["gguf"] = {"folder": folder, "family": family, "empty_thought": empty_thought, "files": {},
                                    "reference": reference, "reference_name": reference_name, "notes": []}
    return state


def gguf_file(job: Job, kind: str, quantize_as: str = "") -> str:
    """gguf/model-<kind>.gguf: llama.cpp's converter, or (quantize_as) llama-quantize from a bf16 conversion (this
    export's bf16 file when it writes one, else a temporary one)."""
    from gguf import GGMLQuantizationType

    state = _converter_folder(job)
    out = job.out / "gguf"
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"model-{kind}.gguf"
    try:
        if quantize_as:
            source = Path(state["files"]["bf16"]["path"]) if "bf16" in state["files"] else job.work / "model-bf16.tmp.gguf"
            seconds = 0.0 if source.is_file() else convert(state["folder"], "bf16", source)
            quantize_s, retyped = quantize(source, target, quantize_as)
            seconds += quantize_s
            if retyped:
                state["notes"].append(f"{kind}: {retyped} tensors that ik_llama stores in its own types (unreadable by "
                                      "mainline llama.cpp/Ollama) stored as q8_0")
        else:
            seconds = convert(state["folder"], kind, target)
    except BaseException:
        if fresh and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failure before the first file leaves no empty gguf/
        raise
    types = Counter(GGMLQuantizationType(t).name for t in tensor_types(target).values())
    state["files"][kind] = {"path": str(target), "mb": round(target.stat().st_size / 2**20, 1), "tensor_types": dict(types),
                            "vocabulary": {**compare_vocabulary(target, state["reference"]), "reference": state["reference_name"]},
                            "timings_s": {f"convert_{kind}": round(seconds, 1)},
                            # what it was exported from, by content: evaluation's llama.cpp runtime refuses a stale file
                            "made_from": made_from(job.run_dir / "adapter", job.recipe.model)}
    log.info(f"wrote {target} ({state['files'][kind]['mb']} MB, {seconds:.1f} s)")
    return str(target)


def modelfiles(job: Job) -> str:
    """gguf/model-<type>.Modelfile beside each GGUF file of this export: the training prompt format as Ollama's
    template, the recipe's system message, greedy unless the recipe samples."""
    state, recipe = job.left["gguf"], job.recipe
    written = []
    for entry in state["files"].values():
        target = Path(entry["path"])
        path = target.with_suffix(".Modelfile")
        path.write_text(modelfile(target.name, state["family"], num_ctx=max(2048, recipe.train.max_seq_length),
                                  temperature=recipe.eval.temperature if recipe.eval.do_sample else 0.0,
                                  system=recipe.prompt.system, empty_thought=state["empty_thought"]), encoding="utf-8")
        written.append(str(path))
    log.info(f"wrote {', '.join(Path(p).name for p in written)} (Ollama) in {job.out / 'gguf'}")
    return ", ".join(written)


def gguf_roundtrip(job: Job) -> dict:
    """After every GGUF file: each read back against the merged model (roundtrip.py) and saved to gguf/roundtrip.json
    beside earlier exports' entries; raises UserError, files kept, when a vocabulary differs or an exact type fails."""
    state = job.left["gguf"]
    out = job.out / "gguf"
    files = {kind: Path(entry["path"]) for kind, entry in state["files"].items()}
    results = run_roundtrip(job.recipe, job.merged, files, job.roundtrip) if job.roundtrip > 0 else {}
    try:
        saved = json.loads((out / "roundtrip.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    saved = saved if isinstance(saved, dict) else {}
    for kind, entry in state["files"].items():
        saved[kind] = {**entry, "checks": results.get(kind, {})}
    order = list(gguf_entries())
    write_json(out / "roundtrip.json", dict(sorted(saved.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))))
    if results:
        print_table(results)
    entries = gguf_entries()
    unchecked = [k for k in files if results.get(k, {}).get("checked") is False]
    if unchecked:
        state["notes"].append(f"{', '.join(unchecked)}: not verified ({results[unchecked[0]]['why']})")
    for note in state["notes"]:
        log.warning(note)
    problems = [f"{k}: vocabulary differs from {state['reference_name']}" for k, f in state["files"].items() if not f["vocabulary"]["equal"]]
    problems += [f"{k}: {'; '.join(results[k]['problems'])}" for k in files
                 if k in entries and entries[k].exact and results.get(k) and results[k]["pass"] is False]
    if problems:
        raise UserError(f"GGUF round trip failed ({' | '.join(problems)}); files and {out / 'roundtrip.json'} kept for inspection")
    return {"roundtrip": str(out / "roundtrip.json")}


def gguf(kind: str, quantize_as: str = "", exact: bool = True) -> Exporter:
    """The entry of one GGUF type: converted by llama.cpp's converter (--outtype kind), or quantised by llama-quantize
    (quantize_as) from a bf16 conversion; `exact`: the round trip must match (else it is reported only)."""
    how = f"llama-quantize {quantize_as} from a bf16 conversion" if quantize_as else f"llama.cpp's converter, --outtype {kind}"
    return Exporter(f"gguf-{kind}", f"GGUF {kind} ({how}), read back against the merged model" + ("" if exact else " (reported only)"),
                    (f"gguf/model-{kind}.gguf*", "gguf/roundtrip.json"), partial(gguf_file, kind=kind, quantize_as=quantize_as),
                    needs_merged=True, tools=(converter_script, quantize_binary) if quantize_as else (converter_script,),
                    finish=gguf_roundtrip, gguf=kind, exact=exact)


# ---------------------------------------------------------------- the registry


EXPORTERS: dict[str, Exporter] = {e.name: e for e in (
    Exporter("merged", "the LoRA merged into a 16/32-bit copy of the base (--merge-dtype), a transformers model folder",
             ("merged/*", "merged.partial/*"), merged),
    gguf("f16"),
    gguf("bf16"),
    gguf("q8_0"),
    gguf("q4_k_m", "Q4_K_M", exact=False),
    Exporter("ollama", "an Ollama Modelfile beside each GGUF file: the training prompt format, its end of turn as stop",
             ("gguf/model-*.Modelfile",), modelfiles, requires="gguf-"),
)}


def gguf_entries() -> dict[str, Exporter]:
    """GGUF type -> its entry, in registry order."""
    return {e.gguf: e for e in EXPORTERS.values() if e.gguf}


def parse_types(spec: str) -> list[str]:
    """--gguf 'q8_0' or 'q8_0,q4_k_m' -> validated, de-duplicated, lower case."""
    known = list(gguf_entries())
    types = []
    for part in (p.strip().lower() for p in spec.split(",")):
        if part not in known:
            raise UserError(f"--gguf {spec}: '{part}' is not one of {', '.join(known)} (comma-separate several)")
        if part not in types:
            types.append(part)
    return types


def names_for(merge: bool = False, gguf: str = "", to: str = "") -> list[str]:
    """The entries the flags ask for: --merge is `merged`; --gguf TYPE is gguf-TYPE and the Ollama Modelfiles; --to
    names entries (comma-separated)."""
    names = ["merged"] if merge else []
    if gguf:
        names += [gguf_entries()[t].name for t in parse_types(gguf)] + ["ollama"]
    return list(dict.fromkeys(names + [n.strip() for n in to.split(",") if n.strip()]))


def choose(names: list[str], label: str = "export") -> list[Exporter]:
    """The entries named, in registry order; refused when one is unknown or lacks the entry it reads."""
    if not names:
        raise UserError(f"{label} needs something to export: --merge and/or --gguf TYPE"
                        + (", or --to NAME (--list shows them)" if label == "export" else ""))
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise UserError(f"--to: '{unknown[0]}' is not an export; valid: {', '.join(EXPORTERS)} "
                        "(gemma-fast export --list says what each writes)")
    chosen = [e for e in EXPORTERS.values() if e.name in names]
    for e in chosen:
        if e.requires and not any(o.name.startswith(e.requires) for o in chosen):
            raise UserError(f"{e.name} reads what a {e.requires}* export writes; ask for one too (e.g. --gguf q8_0)")
    return chosen


def check_tools(chosen: list[Exporter]) -> None:
    """Install (or find) what the exports will need, so a missing tool fails in seconds, not after training."""
    for tool in dict.fromkeys(t for e in chosen for t in e.tools):
        tool()


def own_files() -> tuple[str, ...]:
    """What any export writes into its --out folder, as glob patterns (outputs.foreign_files): a rerun asking for
    other exports still recognises the earlier ones' files."""
    return tuple(dict.fromkeys(p for e in EXPORTERS.values() for p in e.writes)) + WORK_FILES


# ---------------------------------------------------------------- the stage


def check_run(recipe: Recipe, run_dir: Path, names: list[str], out: Path | None = None, overwrite: bool = False,
              label: str = "export") -> list[Exporter]:
    """The checks that read only headers and records, before any work: a finished run on this recipe's base, known
    exports, an --out that may be written. Returns the chosen entries."""
    adapter = run_dir / "adapter"
    if not run_dir.is_dir():
        raise UserError(f"{label}: {run_dir} does not exist (name the folder of a finished training run)")
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{label}: {run_dir} holds no finished run (no adapter/adapter_config.json); train first")
    chosen = choose(names, label)
    check_adapter_files(adapter, f"{label}: adapter")
    if recorded_base(adapter) is not None:
        check_same_base(adapter, recipe.model, f"{label}: adapter")
    if out is not None and out.resolve() != run_dir.resolve():
        if out.resolve() == adapter.resolve() or adapter.resolve() in out.resolve().parents:
            raise UserError(f"refusing to write exports into {out}: it is the run's adapter folder, which the exports read; "
                            "choose another --out")
        check_out_dir(out, "export", overwrite, own=own_files())
    return chosen


def export_run(recipe: Recipe, run_dir: Path, names: list[str], out: Path | None = None, roundtrip: int = 8,
               merge_dtype: torch.dtype = torch.float32, overwrite: bool = False, label: str = "export") -> dict:
    """The exports `names` (EXPORTERS) of a finished run into `out` (default: the run folder); the run itself is not
    changed. Returns what each wrote. `label` names the command in errors (--export-only: train_qlora's alias)."""
    chosen = check_run(recipe, run_dir, names, out, overwrite, label)
    check_tools(chosen)
    out = run_dir if out is None else out
    if out.resolve() != run_dir.resolve():  # a folder of its own: marked as an export, with the recipe it ran
        claim_out_dir(out, "export", overwrite, own=own_files())
        recipe.save(out / "recipe.yaml")
    job = Job(recipe, run_dir, out, roundtrip, merge_dtype)
    done: dict = {}
    try:
        for exporter in chosen:
            if exporter.needs_merged and job.merged is None:
                reuse = out / "merged" if (out / "merged").is_dir() else None  # this export's own merge, else <run>/merged
                job.merged, _ = merged_for_export(recipe, run_dir, job.work, reuse)
            done[exporter.name] = exporter.run(job)
        for finish in dict.fromkeys(e.finish for e in chosen if e.finish):
            done.update(finish(job))
    finally:
        shutil.rmtree(job.work, ignore_errors=True)
    return done

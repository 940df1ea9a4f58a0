"""Does the GGUF answer like the merged model? The check that runs after every export.

On N records of the test split (their prompts from the one prompt builder, retrieved passages included when the
recipe retrieves), each GGUF is loaded back with transformers (`gguf_file=`) and, where installed, with llama.cpp
(ik-llama-cpp-python, in a child process) and compared with the merged model (transformers, float32):
- tokenisation: the ids of prompt + reference answer, equal or not;
- next-token logits, teacher-forced over the reference answer: top-1 agreement, and the largest |Δlogit| on the
  merged model's top-5 tokens (the numeric noise of this file);
- greedy answers (eval.max_new_tokens, stopping at the end of the turn): identical, or diverging at a near tie, i.e. where
  the merged model's own margin between its token and the GGUF's is within the budget of the file's type
  (NEAR_TIE_SHARE): a fixed share of the merged model's logit scale at that step, never the file's own measured
  error, so a worse file cannot earn a looser check.
A file passes when tokenisation is identical on every prompt, top-1 agreement is >= 0.95 and every greedy answer is
identical or a near tie. (f16, bf16 and q8_0 must pass; q4_k_m is reported.)

transformers reads each GGUF's weights into the merged model's own config (GGUF stores no query_pre_attn_scalar, and
5.23 maps Gemma 4's per-layer sizes wrongly); a weight its GGUF loader leaves out (Gemma 4's layer_scalar) is read from
the file by name. Only the runtimes that run the generation exactly check it (families.Family.gguf_runtimes); a
generation with none (Gemma 3n) gets its files and a round trip marked "not checked".
"""

from __future__ import annotations

import logging
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..inference.generation import GenerationSettings, TransformersGenerator

log = logging.getLogger(__name__)

MIN_TOP1 = 0.95
# The near-tie budget per file type, as a share of the merged model's logit scale at the step where the answers part
# (its top logit minus its median logit over the vocabulary; about 20 for Gemma 3 270M). About four times the
# relative rounding of one weight in that type: f16 2^-11, bf16 2^-8, q8_0 1/254 of its block's largest weight,
# q4_k_m about 1/30. Independent of the file: the file's measured |Δlogit| is reported, never used as the tolerance.
NEAR_TIE_SHARE = {"f16": 0.002, "bf16": 0.016, "q8_0": 0.016, "q4_k_m": 0.12}
TOP_K = 5
MAX_TOKENS = 512
FALLBACK_QUESTIONS = ["How do I resume training?", "What does the recipe file set?", "What is the capital of France?"]


@dataclass
class Item:
    record_id: str
    prompt: str
    text: str
    prompt_ids: list[int]
    ref_ids: list[int]
    positions: list[int]
    ref_top: list[list[int]] = field(default_factory=list)
    ref_top_logits: list[list[float]] = field(default_factory=list)
    ref_argmax: list[int] = field(default_factory=list)
    greedy: list[int] = field(default_factory=list)


def roundtrip_records(recipe, n: int) -> tuple[list[dict], str]:
    """The first n records of the test split (else val, else train), with retrieved passages when the recipe retrieves."""
    from ..data.pipeline import load_split

    for split in ("test", "val", "train"):
        try:
            records = load_split(recipe.data_dir, split)
        except Exception:  # a missing or unreadable split: try the next one
            records = []
        if records:
            records = records[:n]
            if recipe.rag.index:
                from ..rag import attach_passages

                records = attach_passages(recipe, records)[0]
            return records, f"{recipe.data_dir}/{split}.jsonl"
    records = [{"id": f"q{i}", "instruction": q, "input": "", "output": ""} for i, q in enumerate(FALLBACK_QUESTIONS[:n])]
    return records, "built-in questions (no prepared split found)"


class Reference:
    """The merged model in float32: ids, teacher-forced logits and greedy answers, and margins on demand."""

    def __init__(self, merged: Path, records: list[dict], max_new_tokens: int, system: str = ""):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..prompts import prompt_format

        self.tokenizer = AutoTokenizer.from_pretrained(merged)
        self.model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        self.config = self.model.config
        self.prompts = prompt_format(self.tokenizer, self.config, system)
        self.end_of_turn = self.prompts.end_of_turn_id
        self.max_new_tokens = max_new_tokens
        self.settings = GenerationSettings(max_new_tokens, batch_size=1)  # greedy, one prompt at a time: no padding
        self.generator = TransformersGenerator(self.model, self.tokenizer, self.prompts, f"{merged} (merged)")
        self.items = [self._item(r) for r in records]

    @torch.no_grad()
    def _item(self, record: dict) -> Item:
        fmt = self.prompts
        prompt = fmt.record_prompt(record) if "instruction" in record else fmt.prompt(record["prompt"])
        whole = prompt + fmt.answer(record.get("output") or "")
        text = whole.text  # what each GGUF tokenizer must turn into exactly these ids (<bos> written out)
        prompt_ids = fmt.encode(prompt)[:MAX_TOKENS - self.max_new_tokens]
        ref_ids = fmt.encode(whole)[:MAX_TOKENS]
        positions = list(range(min(len(prompt_ids), len(ref_ids)) - 1, len(ref_ids) - 1)) or [len(ref_ids) - 1]
        logits = self.model(torch.tensor([ref_ids])).logits[0]
        top = logits[positions].topk(TOP_K)
        greedy = self.generator.generate_ids([prompt_ids], self.settings)[0]
        return Item(str(record.get("id", "")), prompt, text, prompt_ids, ref_ids, positions, top.indices.tolist(),
                    top.values.tolist(), logits[positions].argmax(-1).tolist(), greedy)

    @torch.no_grad()
    def margin(self, item: Item, step: int, other: int) -> tuple[float, float]:
        """The merged model's logit of its own greedy token at `step` minus that of `other`, and its logit scale there
        (top logit minus median logit), which the near-tie budget is a share of."""
        ours = item.greedy[step] if step < len(item.greedy) else self.end_of_turn
        logits = self.model(torch.tensor([item.prompt_ids + item.greedy[:step]])).logits[0, -1]
        return float(logits[ours] - logits[other]), float(logits.max() - logits.median())

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


# ---------------------------------------------------------------- the two GGUF runtimes


def transformers_outputs(gguf: Path, ref: Reference) -> dict:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the GGUF dequantisation bar; the export prints its own lines
    start = time.perf_counter()
    tokenizer = gguf_tokenizer(gguf)
    quiet = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the weights filled below as missing
    try:
        model, info = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                           config=ref.config, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(quiet)
    filled = fill_from_gguf(model, gguf, info.get("missing_keys") or [])
    model.eval()
    load_s = time.perf_counter() - start
    generator = TransformersGenerator(model, ref.tokenizer, ref.prompts, f"{gguf.name} (transformers)")  # the reference's stop ids
    rows = []
    with torch.no_grad():
        for item in ref.items:
            logits = model(torch.tensor([item.ref_ids])).logits[0]
            at_top = [[float(logits[p, t]) for t in top] for p, top in zip(item.positions, item.ref_top)]
            greedy = generator.generate_ids([item.prompt_ids], ref.settings)[0]
            rows.append({"ids": tokenizer(item.text, add_special_tokens=False)["input_ids"], "argmax": logits[item.positions].argmax(-1).tolist(),
                         "at_ref_top": at_top, "greedy": greedy})
    del model
    return {"rows": rows, "load_s": round(load_s, 1), "total_s": round(time.perf_counter() - start, 1),
            **({"read_from_gguf_by_name": filled} if filled else {})}


def gguf_tokenizer(gguf: Path):
    """The GGUF's own vocabulary as a transformers tokenizer, built by gguf_tokenizer (the same on every transformers 5:
    5.17's GGUF tokenizer conversion drops <bos> and splits words, which would fail the file for the loader's fault)."""
    from transformers import AutoTokenizer

    from ..models.gguf_tokenizer import write_tokenizer_from_gguf

    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer_from_gguf(gguf, folder)
        return AutoTokenizer.from_pretrained(folder)


def fill_from_gguf(model, gguf: Path, missing: list[str]) -> list[str]:
    """Read the weights transformers' GGUF loader left out straight from the file, by llama.cpp's tensor names (gguf's
    TensorNameMap); a weight the file does not hold stays missing, and the comparison then shows it."""
    import gguf as gg
    from gguf.quants import dequantize

    from ..models.gguf_tokenizer import _read_metadata

    if not missing:
        return []
    arch = _read_metadata(gguf)["general.architecture"]
    names = gg.get_tensor_name_map(next(a for a, n in gg.MODEL_ARCH_NAMES.items() if n == arch), model.config.num_hidden_layers)
    tensors = {t.name: t for t in gg.GGUFReader(str(gguf)).tensors}
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    filled = []
    for key in missing:
        base = names.get_name(key.removesuffix(".weight"), try_suffixes=())
        found = next((tensors[n] for n in (f"{base}.weight", base) if base and n in tensors), None)
        if found is None or key not in params:
            continue
        values = torch.from_numpy(dequantize(found.data, found.tensor_type).copy()).float()
        with torch.no_grad():
            params[key].copy_(values.reshape(params[key].shape))
        filled.append(key)
    return filled


def llama_cpp_outputs(gguf: Path, ref: Reference, runtime: Path) -> dict:
    """ik-llama-cpp-python in a child process: a crash there is a failed check, not a dead export."""
    start = time.perf_counter()
    request = {"gguf": str(gguf), "runtime": str(runtime), "max_new_tokens": ref.max_new_tokens, "stop_ids": ref.prompts.stop_ids,
               "n_ctx": MAX_TOKENS + ref.max_new_tokens,
               "items": [{"text": it.text, "ref_ids": it.ref_ids, "prompt_ids": it.prompt_ids, "positions": it.positions,
                          "ref_top": it.ref_top} for it in ref.items]}
    with tempfile.TemporaryDirectory() as tmp:
        request_path, response_path = Path(tmp) / "request.json", Path(tmp) / "response.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "gemma_fast.inference.llama_runtime", str(request_path), str(response_path)],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
        if done.returncode != 0 or not response_path.is_file():
            tail = [line for line in done.stderr.splitlines() if line.strip()][-2:]
            return {"error": f"llama.cpp runtime exited {done.returncode}: {' | '.join(tail)}"}
        response = json.loads(response_path.read_text(encoding="utf-8"))
    response["total_s"] = round(time.perf_counter() - start, 1)
    return response


# ---------------------------------------------------------------- comparing


def compare(ref: Reference, outputs: dict, kind: str) -> dict:
    """One GGUF runtime's outputs against the merged model; `kind` (f16, bf16, q8_0, q4_k_m) sets the near-tie budget."""
    if "error" in outputs:
        return {"error": outputs["error"], "pass": False, "problems": [outputs["error"]]}
    items, rows = ref.items, outputs["rows"]
    same_tokens = sum(row["ids"] == item.ref_ids for item, row in zip(items, rows))
    agree = total = 0
    noise = 0.0
    for item, row in zip(items, rows):
        agree += sum(a == b for a, b in zip(row["argmax"], item.ref_argmax))
        total += len(item.ref_argmax)
        noise = max([noise] + [abs(a - b) for ours, theirs in zip(item.ref_top_logits, row["at_ref_top"]) for a, b in zip(ours, theirs)])
    identical = near_ties = 0
    answers, problems = [], []
    for item, row in zip(items, rows):
        ours, theirs = item.greedy, row["greedy"]
        entry = {"id": item.record_id, "merged": ref.text(ours), "gguf": ref.text(theirs)}
        if ours == theirs:
            identical += 1
        else:
            step = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            other = theirs[step] if step < len(theirs) else ref.end_of_turn
            margin, scale = ref.margin(item, step, other)
            budget = NEAR_TIE_SHARE[kind] * scale
            entry.update({"diverges_at": step, "merged_margin": round(margin, 4), "near_tie_budget": round(budget, 4)})
            if margin <= budget:
                near_ties += 1
            else:
                problems.append(f"greedy answer to {item.record_id or 'a prompt'} differs at token {step} where the merged "
                                f"model's margin {margin:.3f} exceeds the {kind} near-tie budget {budget:.3f} "
                                f"({NEAR_TIE_SHARE[kind]:g} of its logit scale {scale:.2f})")
        answers.append(entry)
    top1 = agree / total if total else 1.0
    if same_tokens < len(items):
        problems.insert(0, f"tokenisation differs on {len(items) - same_tokens} of {len(items)} prompts")
    if top1 < MIN_TOP1:
        problems.append(f"top-1 agreement {top1:.3f} < {MIN_TOP1}")
    return {"prompts": len(items), "tokenisation_identical": same_tokens, "top1_agreement": round(top1, 4),
            "positions": total, "max_abs_dlogit_top5": round(noise, 4), "greedy_identical": identical,
            "greedy_near_ties": near_ties, "pass": not problems, "problems": problems,
            "seconds": outputs.get("total_s"), "load_s": outputs.get("load_s"), "answers": answers}


def run_roundtrip(recipe, merged: Path, files: dict[str, Path], n: int, runtimes: tuple[str, ...] = ("transformers", "llama.cpp")) -> dict:
    """{kind: {"pass", "problems", "runtimes": {name: comparison}, "records"}} for each GGUF in `files`."""
    from ..inference.llama_tools import runtime_dir

    records, source = roundtrip_records(recipe, n)
    ref = Reference(merged, records, recipe.eval.max_new_tokens, recipe.prompt.system)
    family = ref.prompts.family
    unable = [r for r in runtimes if r not in family.gguf_runtimes]
    runtimes = tuple(r for r in runtimes if r in family.gguf_runtimes)
    if not runtimes:
        why = (f"no runtime here runs {family.label} GGUFs exactly (transformers 5.23 cannot load them; ik-llama-cpp-python "
               "0.1.5 fails or differs): the files are written but not verified; check them in your llama.cpp or Ollama")
        log.warning(f"round trip not checked: {why}")
        return {kind: {"pass": None, "checked": False, "why": why, "problems": [], "runtimes": {}, "records": source}
                for kind in files}
    log.info(f"round trip: {len(records)} prompts from {source}, greedy {recipe.eval.max_new_tokens} tokens")
    runtime, why = runtime_dir() if "llama.cpp" in runtimes else (None, "not requested")
    if unable:
        why = f"{', '.join(unable)} does not run {family.label} GGUFs exactly (families.Family.gguf_runtimes)"
    results = {}
    for kind, path in files.items():
        checks = {}
        if "transformers" in runtimes:
            checks["transformers"] = compare(ref, transformers_outputs(path, ref), kind)
        if runtime is not None:
            checks["llama.cpp"] = compare(ref, llama_cpp_outputs(path, ref, runtime), kind)
        problems = [f"{name}: {p}" for name, c in checks.items() for p in c["problems"]]
        results[kind] = {"pass": not problems, "problems": problems, "records": source, "runtimes": checks,
                         **({"llama.cpp_skipped": why} if runtime is None else {})}
    return results


def print_table(results: dict) -> None:
    from ..log import console
    from ..report import table

    rows = []
    for kind, result in results.items():
        if result.get("checked") is False:
            rows.append([kind, "-", "-", "-", "-", "-", "not checked (no exact runtime here)"])
        for name, c in result["runtimes"].items():
            if "error" in c:
                rows.append([kind, name, "-", "-", "-", "-", f"FAIL: {c['error'][:60]}"])
                continue
            n = c["prompts"]
            rows.append([kind, name, f"{c['tokenisation_identical']}/{n}", f"{c['top1_agreement']:.3f} ({c['positions']})",
                         f"{c['max_abs_dlogit_top5']:.4f}", f"{c['greedy_identical']}/{n}" + (f" (+{c['greedy_near_ties']} near tie)" if c["greedy_near_ties"] else ""),
                         "pass" if c["pass"] else "FAIL"])
        if result.get("llama.cpp_skipped"):
            rows.append([kind, "llama.cpp", "-", "-", "-", "-", f"skipped: {result['llama.cpp_skipped'][:60]}"])
    console.print(table("GGUF round trip against the merged model", ["file", "runtime", "same tokens", "top-1 agreement (positions)",
                                                                      "max |Δlogit| top-5", "greedy identical", "result"], rows))

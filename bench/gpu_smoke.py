#!/usr/bin/env python3
"""The first GPU's smoke test: settles what the second GPU review left unknown, in one call of about 8 minutes on one
GPU without internet, and writes one JSON of versions, timings and peaks. Run it through bench/gpu_smoke.sh (which
unpacks the staged site first); `bench/gpu_smoke.sh --dry-run` checks the staged site here and prints the plan.

Each step runs in its own Python (Unsloth patches classes process-wide; a step that crashes or hangs takes nothing
else with it), under a time limit cut from one budget, most informative first:
  import_unsloth  `import unsloth` on CUDA with these pins: the GPU init, not the CPU backend CI runs
  gemma1          a tiny Gemma (v1) through FastLanguageModel (4-bit, gemma_fast.models.load_model): answer-token
                  stats (does the decoder hook fire, or do they fall back to full logits?) and batched generation;
                  then a second copy on the CPU in the same process: one forward (review 2, HIGH 2: do Unsloth's
                  class patches send it to a Triton kernel?)
  prepare, train_qlora, evaluate_32
                  the quickstart pipeline with train.method=qlora for 10 steps, then the evaluation's model side on 32
                  questions, base and fine-tuned (4-bit, adapter, for_inference, answer stats, generation). On a tiny
                  Gemma 3 with the test tokenizer: the embedded Gemma 3 270M (a 242 MB GGUF, 1.1 GB converted) cannot
                  travel in a 64 MiB call; SMOKE_MODEL=FOLDER uses a model folder the device has instead. Scoring
                  is left out: its encoders (MiniLM 88 MB, WordNet 99 MB) cannot travel either, and CI runs it
  gemma4_step     a tiny Gemma 4 (save_tiny_model("gemma4")): two QLoRA steps through train_qlora on Unsloth
  eval_peak_7b    peak GPU memory of one evaluation batch, 16 prompts × 433 tokens, 128 new tokens, on a random-weight
                  gemma-7b in 4-bit through Unsloth's generation (review 2, HIGH 1), against its weights' memory
Usage: python3 bench/gpu_smoke.py run | dry-run SITE_TARBALL | step NAME [ARGS]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("SMOKE_WORK", "/tmp/gemma_fast_smoke"))
BUDGET_S = float(os.environ.get("SMOKE_BUDGET", "470"))  # 8 min less a margin for the site check and the JSON
RESULT = Path(os.environ["OUT"]) / "gpu_smoke.json" if os.environ.get("OUT") else ROOT / "bench" / "results" / "gpu_smoke.json"
# what bench/stage_gpu_site.sh must have packed (top-level import names) for these steps
STAGED = ("unsloth", "unsloth_zoo", "trl", "bitsandbytes", "cut_cross_entropy", "peft", "accelerate", "datasets", "rich",
          "yaml", "gguf", "sentencepiece", "jinja2", "PIL", "msgspec")
TINY_RECIPE = ["data.max_records=176",  # a test split of 35: the 32 questions evaluated
               "train.max_seq_length=256", "train.batch_size=4", "train.logging_steps=1",
               "lora.r=8", "lora.alpha=16", "eval.max_new_tokens=16", "eval.batch_size=16"]


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def plan(model: str) -> list[tuple[str, list[str], int]]:
    """(name, command, its own time limit in seconds): each runs in a fresh process from the repository root."""
    run, data = WORK / "run", WORK / "data"
    sets = [a for s in [f"data.dir={data}", *TINY_RECIPE] for a in ("--set", s)]
    return [
        ("import_unsloth", _py(__file__, "step", "import_unsloth"), 90),
        ("gemma1", _py(__file__, "step", "gemma1"), 120),
        ("prepare", _py("scripts/prepare_data.py", "--recipe", "quickstart", "--set", f"model={model}", *sets, "--out", str(data),
                        "--overwrite"), 60),
        ("train_qlora", _py("scripts/train_qlora.py", "--recipe", "quickstart", "--set", f"model={model}", *sets,
                            "--set", "train.method=qlora",
                            "--set", "train.max_steps=10", "--out", str(run), "--overwrite"), 150),
        ("evaluate_32", _py(__file__, "step", "evaluate", str(run)), 120),
        ("gemma4_step", _py("scripts/train_qlora.py", "--recipe", "quickstart", *sets, "--set", f"model={WORK / 'tiny' / 'gemma4'}",
                            "--set", "train.method=qlora", "--set", "train.max_steps=2", "--out", str(WORK / "run4"),
                            "--overwrite"), 100),
        ("eval_peak_7b", _py(__file__, "step", "eval_peak_7b"), 300),
    ]


# ---------------------------------------------------------------- the orchestrator (stdlib only)


def run_all() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p),
           "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GEMMA_FAST_CACHE": str(WORK / "cache")}
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": BUDGET_S, "steps": {}}
    start = time.perf_counter()
    built = subprocess.run(_py(__file__, "step", "tiny_models"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    result["tiny_models"] = {"rc": built.returncode, "tail": _tail(built.stdout + built.stderr)}
    model = os.environ.get("SMOKE_MODEL") or str(WORK / "tiny" / "gemma3")
    result["pipeline_model"] = model
    for name, command, limit in plan(model):
        left = BUDGET_S - (time.perf_counter() - start)
        if left < 20:
            result["steps"][name] = {"ok": False, "skipped": f"the {BUDGET_S:.0f} s budget was spent"}
            continue
        result["steps"][name] = _run_step(name, command, min(limit, left), env)
        print(f"gpu_smoke: {name}: {'ok' if result['steps'][name]['ok'] else 'FAILED'} "
              f"({result['steps'][name].get('seconds')} s)", flush=True)
        _write(result)  # after every step: a call cut short still returns what was done
    result["seconds"] = round(time.perf_counter() - start, 1)
    versions = WORK / "step-versions.json"
    subprocess.run(_py(__file__, "step", "versions"), cwd=ROOT, env=env, timeout=60)
    result["versions"] = json.loads(versions.read_text()) if versions.is_file() else None
    _write(result)
    print(f"gpu_smoke: wrote {RESULT}")
    return 0 if all(s.get("ok") for s in result["steps"].values()) else 1


def _run_step(name: str, command: list[str], limit: float, env: dict) -> dict:
    out = WORK / f"step-{name}.json"
    out.unlink(missing_ok=True)
    began = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        rc, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:  # its output so far (bytes, whatever text= said)
        rc, log = "timeout", "".join(p.decode(errors="replace") if isinstance(p, bytes) else p for p in (exc.stdout, exc.stderr) if p)
    step = {"ok": rc == 0, "rc": rc, "seconds": round(time.perf_counter() - began, 1), "limit_s": round(limit), "tail": _tail(log)}
    if out.is_file():
        step.update(json.loads(out.read_text()))
    summary = {"train_qlora": WORK / "run", "gemma4_step": WORK / "run4"}.get(name)
    if summary and (summary / "train_summary.json").is_file():
        step["train_summary"] = json.loads((summary / "train_summary.json").read_text())
    return step


def _tail(text: str, lines: int = 25) -> list[str]:
    return [line[:400] for line in text.splitlines() if line.strip()][-lines:]


def _write(result: dict) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2, default=str) + "\n")


def dry_run(tarball: Path) -> int:
    """Check the staged site (the packages the steps import) and print what `run` would do; loads no model."""
    if not tarball.is_file():
        print(f"gpu_smoke: no staged site at {tarball}: run bench/stage_gpu_site.sh here first (needs PyPI)", file=sys.stderr)
        return 1
    with tarfile.open(tarball) as archive:
        names = {Path(n).parts[0] for n in archive.getnames() if Path(n).parts}
    missing = [m for m in STAGED if m not in names]
    if missing:
        print(f"gpu_smoke: {tarball} lacks {', '.join(missing)}: restage with bench/stage_gpu_site.sh", file=sys.stderr)
        return 1
    print(f"staged site: {tarball} ({tarball.stat().st_size / 2**20:.0f} MiB to carry) holds {', '.join(STAGED)}")
    print(f"would write: {RESULT}   work folder: {WORK}   budget: {BUDGET_S:.0f} s")
    print(f"first: bench/stage_gpu_site.sh --check; then {sys.executable} {__file__} step tiny_models")
    model = os.environ.get("SMOKE_MODEL") or str(WORK / "tiny" / "gemma3")
    for name, command, limit in plan(model):
        print(f"  {name:14s} (≤ {limit} s)  {' '.join(command[1:])}")
    return 0


# ---------------------------------------------------------------- the steps (each in its own process)


def _save(name: str, data: dict) -> None:
    (WORK / f"step-{name}.json").write_text(json.dumps(data, indent=2, default=str))


def _peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def step_versions() -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from bench.common import library_versions

    _save("versions", {"python": sys.version.split()[0], "libraries": library_versions(), "cuda": torch.version.cuda,
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})


def step_tiny_models() -> None:
    from gemma_fast.testing.tiny import save_tiny_model

    for family in ("gemma", "gemma3", "gemma4"):
        save_tiny_model(family, WORK / "tiny" / family)


def step_import_unsloth() -> None:
    started = time.perf_counter()
    import unsloth  # noqa: F401

    inits = sorted(m for m in sys.modules if m in ("unsloth._gpu_init", "unsloth._cpu_init"))
    _save("import_unsloth", {"import_s": round(time.perf_counter() - started, 1), "init_modules": inits,
                             "gpu_init": "unsloth._cpu_init" not in sys.modules,
                             "xformers": "xformers" in sys.modules, "triton": sys.modules.get("triton") and sys.modules["triton"].__version__})


def _records(n: int) -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from gemma_fast.io import read_jsonl
    from gemma_fast.data.sources import ASSETS

    rows = read_jsonl(ASSETS / "quickstart_docs_qa.jsonl")[:n]
    return [{"id": str(i), "instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]} for i, r in enumerate(rows)]


def _count_fallbacks():
    """Counts answer_token_stats' fallbacks to full logits (a forward that bypasses the decoder's hook)."""
    from gemma_fast.training import loss

    calls = []
    real = loss.full_logits_stats
    loss.full_logits_stats = lambda *a, **k: calls.append(1) or real(*a, **k)
    return calls


def step_gemma1() -> None:
    from gemma_fast.models.backend import resolve_backend

    backend, notes = resolve_backend("auto")  # imports Unsloth first
    import torch

    from gemma_fast.inference.generation import GenerationSettings, TransformersGenerator, for_inference
    from gemma_fast.training.loss import answer_token_stats
    from gemma_fast.models.loader import load_model

    folder, out = str(WORK / "tiny" / "gemma"), {"backend": backend, "notes": notes}
    loaded = load_model(folder, backend, 256, load_in_4bit=torch.cuda.is_available())
    out.update(dtype=str(loaded.dtype), model_class=type(loaded.model).__name__, unsloth_forced_float32=loaded.unsloth_forced_float32)
    for_inference(loaded.model, loaded.backend)
    records = _records(8)
    fallbacks = _count_fallbacks()
    stats = answer_token_stats(loaded.model, loaded.prompts, records, 256, batch_size=8)
    out["answer_stats"] = {"rows": len(stats), "tokens": sum(s["n_tokens"] for s in stats), "hook_fired": not fallbacks}
    generator = TransformersGenerator(loaded.model, loaded.tokenizer, loaded.prompts, folder, loaded.backend)
    answers = generator.generate([loaded.prompts.record_prompt(r) for r in records], GenerationSettings(16, batch_size=8))
    out["generate"] = {"answers": len(answers), "peak_gib": _peak_gib()}
    _save("gemma1", out)
    from transformers import AutoModelForCausalLM  # a second copy, on the CPU, in this (patched) process

    cpu = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    try:
        with torch.no_grad():
            logits = cpu(input_ids=torch.tensor([[2, 5, 6, 7]])).logits
        out["cpu_forward_after_unsloth"] = {"ok": bool(torch.isfinite(logits).all())}
    except Exception as exc:  # the review's HIGH 2 question: a Triton kernel on CPU tensors
        out["cpu_forward_after_unsloth"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    _save("gemma1", out)


def step_evaluate(run: str) -> None:
    """The evaluation's model side on 32 questions, as `evaluate.py --adapter RUN --compare base` runs it."""
    from rich.console import Console
    from rich.progress import Progress

    from gemma_fast.evaluation.run import candidates, load_eval_records, prefer_unsloth_first, run_candidate
    from gemma_fast.recipe import load_recipe

    console = Console(stderr=True)
    recipe = load_recipe(str(Path(run) / "recipe.yaml"), ["eval.max_examples=32"])
    prefer_unsloth_first(recipe)
    fallbacks = _count_fallbacks()
    records = load_eval_records(recipe)
    out: dict = {"questions": len(records), "models": {}}
    with Progress(console=console, disable=True) as progress:
        for cand in candidates(recipe, Path(run), None, compare_base=True):
            started = time.perf_counter()
            done = run_candidate(cand, records, recipe, WORK / "eval" / "partial", progress)
            rows = list(done.values())
            out["models"][cand.name] = {"answers": len(rows), "non_empty": sum(1 for r in rows if r["prediction"].strip()),
                                        "answer_tokens": sum(r["n_tokens"] for r in rows), "seconds": round(time.perf_counter() - started, 1),
                                        "peak_gib": _peak_gib()}
            cand.release()
    out["answer_stats_hook_fired"] = not fallbacks
    _save("evaluate_32", out)


def step_eval_peak_7b() -> None:
    """Random-weight gemma-7b (gemma_fast/assets/model_configs), built on the GPU and saved once; 4-bit through Unsloth; one batch of
    16 × 433-token prompts generating 128 tokens (min_new_tokens: the worst case). Peak allocated memory vs weights."""
    from gemma_fast.models.backend import resolve_backend

    backend, _ = resolve_backend("auto")
    import torch

    out: dict = {"backend": backend}
    if not torch.cuda.is_available():
        _save("eval_peak_7b", {**out, "skipped": "needs a CUDA GPU"})
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    from gemma_fast.inference.generation import for_inference
    from gemma_fast.models.loader import load_model
    from gemma_fast.testing.tiny import tiny_tokenizer

    folder = WORK / "gemma-7b-random"
    started = time.perf_counter()
    if not (folder / "config.json").is_file():
        raw = json.loads((ROOT / "gemma_fast" / "assets" / "model_configs" / "gemma-7b.json").read_text())
        torch.manual_seed(0)
        with torch.device("cuda"):  # random init on the GPU: seconds, where the CPU takes minutes
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(raw.pop("model_type"), **raw), dtype=torch.bfloat16)
        model.save_pretrained(folder)
        tiny_tokenizer("gemma3").save_pretrained(folder)  # a stand-in: the prompts are random token ids
        del model
        torch.cuda.empty_cache()
    out["build_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    loaded = load_model(str(folder), backend, 512, load_in_4bit=True)
    for_inference(loaded.model, loaded.backend)
    torch.cuda.synchronize()
    out.update(load_s=round(time.perf_counter() - started, 1), weights_gib=round(torch.cuda.memory_allocated() / 2**30, 3),
               dtype=str(loaded.dtype))
    ids = torch.randint(3, 200_000, (16, 433), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with torch.no_grad():
        generated = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=128,
                                          min_new_tokens=128, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    out.update(generate_s=round(time.perf_counter() - started, 1), new_tokens=int(generated.shape[1] - ids.shape[1]),
               peak_gib=_peak_gib(), peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 3))
    out["peak_over_weights"] = round(out["peak_gib"] / out["weights_gib"], 2)
    out["t4_visible_gib"] = 14.7
    _save("eval_peak_7b", out)


STEPS = {"versions": step_versions, "tiny_models": step_tiny_models, "import_unsloth": step_import_unsloth,
         "gemma1": step_gemma1, "evaluate": step_evaluate, "eval_peak_7b": step_eval_peak_7b}


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        return run_all()
    if argv[:1] == ["dry-run"] and len(argv) == 2:
        return dry_run(Path(argv[1]))
    if argv[:1] == ["step"] and len(argv) >= 2 and argv[1] in STEPS:
        sys.path.insert(0, str(ROOT))
        WORK.mkdir(parents=True, exist_ok=True)
        STEPS[argv[1]](*argv[2:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

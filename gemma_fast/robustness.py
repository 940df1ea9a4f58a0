"""Robustness: the same model and metrics as evaluate.py on perturbed copies of the test set, each compared with the
clean run by a paired bootstrap; the summary score is the mean relative drop of one headline metric."""

from __future__ import annotations

import re
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .errors import UserError
from .evaluation import HEADLINE, LOWER_IS_BETTER, _records, candidates, compare, prefer_unsloth_first, run_candidate, score, summarise
from .generate import generate_batched
from .io import atomic_open, write_json, write_jsonl
from .perturb import apply_spec, parse_spec
from .prompts import build_prompt
from .recipe import Recipe


def self_translate(cand, records: list[dict], target: str, recipe: Recipe) -> list[dict]:
    """Labelled as such in every report: the model under test translates each question into `target` itself."""
    prompts = [build_prompt(f"Translate into {target}. Reply with the translation only.\n\n{r['instruction']}") for r in records]
    with cand.context():
        translated = generate_batched(cand.model, cand.tokenizer, prompts, recipe.eval.batch_size, recipe.eval.max_new_tokens)
    return [{**r, "instruction": t or r["instruction"]} for r, t in zip(records, translated)]


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)


def run(recipe: Recipe, out_dir: Path, console, adapter: Path | None = None, merged: Path | None = None,
        specs: list[str] | None = None) -> dict:
    cfg = recipe.robustness
    specs = specs or cfg.perturbations
    if not specs:
        raise UserError("no perturbations: set robustness.perturbations or pass --perturb")
    for spec in specs:
        parse_spec(spec)  # every spec checked before any model runs
    prefer_unsloth_first(recipe, console)
    if cfg.metric not in HEADLINE:
        raise UserError(f"robustness.metric '{cfg.metric}' is not a metric; valid: {', '.join(HEADLINE)}")
    records = _records(recipe)
    perturbed = {spec: apply_spec(spec, records, recipe.seed, cfg.parallel_file) for spec in specs}  # file errors first
    cand = candidates(recipe, adapter, merged, compare_base=False)[-1]
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    results = {}
    with Progress(*columns, console=console) as progress:
        results["clean"] = run_candidate(cand.renamed("clean"), records, recipe, out_dir / "partial", progress, console)
        for spec in specs:
            copy = perturbed[spec]
            if any(p.needs_model for p, _ in parse_spec(spec)):
                copy = self_translate(cand, copy, cfg.translate_to, recipe)
            write_jsonl(out_dir / "questions" / f"{_slug(spec)}.jsonl",  # what each model was asked: to check by hand
                        ({"id": r["id"], "original": o["instruction"], "asked": r["instruction"]} for r, o in zip(copy, records)))
            results[spec] = run_candidate(cand.renamed(_slug(spec)), copy, recipe, out_dir / "partial", progress, console)
    rows = {name: [done[r["id"]] for r in records] for name, done in results.items()}
    scores = {name: score(records, [r["prediction"] for r in rs]) for name, rs in rows.items()}
    summaries = {name: summarise(records, rs, scores[name], recipe.seed) for name, rs in rows.items()}
    clean_value = summaries["clean"]["overall"][cfg.metric]["mean"]
    per_spec = {}
    for spec in specs:
        delta = compare(rows["clean"], rows[spec], scores["clean"], scores[spec], recipe.seed)
        value = summaries[spec]["overall"][cfg.metric]["mean"]
        per_spec[spec] = {"metrics": summaries[spec]["overall"], "delta": delta,
                          "relative_drop": relative_drop(clean_value, value, cfg.metric),
                          "self_translation": any(p.needs_model for p, _ in parse_spec(spec))}
    drops = [v["relative_drop"] for v in per_spec.values() if v["relative_drop"] is not None]
    summary = {"recipe": recipe.name, "model": recipe.model, "adapter": str(adapter) if adapter else None,
               "merged": str(merged) if merged else None, "split": recipe.eval.split, "examples": len(records),
               "metric": cfg.metric, "clean": summaries["clean"]["overall"], "perturbations": per_spec,
               "robustness_score": {"mean_relative_drop": sum(drops) / len(drops) if drops else None, "metric": cfg.metric}}
    write_json(out_dir / "robustness.json", summary)
    plot_deltas(summary, out_dir / "robustness.png")
    write_report(summary, out_dir / "report.md")
    recipe.save(out_dir / "recipe.yaml")
    return summary


def relative_drop(clean: float | None, perturbed: float | None, metric: str) -> float | None:
    """How much worse the perturbed run is, as a share of the clean value: positive = worse, for every metric
    (for answer_loss and perplexity, where lower is better, a rise is the drop)."""
    if not clean or clean != clean or perturbed is None or perturbed != perturbed:
        return None
    drop = (clean - perturbed) / abs(clean)
    return -drop if metric in LOWER_IS_BETTER else drop


def table_rows(summary: dict) -> list[list[str]]:
    from .report import diff_interval, interval

    metric = summary["metric"]
    rows = [["clean", interval(summary["clean"][metric]), "", ""]]
    for spec, v in summary["perturbations"].items():
        drop = v["relative_drop"]
        label = spec + (" (self-translation by the model)" if v["self_translation"] else "")
        rows.append([label, interval(v["metrics"][metric]), diff_interval(v["delta"].get(metric)),
                     f"{100 * drop:.1f}%" if drop is not None else "n/a"])
    return rows


def write_report(summary: dict, path: Path) -> None:
    metric = summary["metric"]
    lines = [f"# Robustness: {summary['recipe']}", "",
             f"{summary['examples']} {summary['split']} examples; model `{summary['model']}`"
             + (f", adapter `{summary['adapter']}`" if summary["adapter"] else "") + ". "
             "Each perturbation changes only the question or context; deltas are paired against the clean run "
             "(95% bootstrap intervals).", "",
             f"Robustness score (mean relative drop in {metric}): "
             f"**{100 * (summary['robustness_score']['mean_relative_drop'] or 0):.1f}%**", "",
             f"| perturbation | {metric} | Δ vs clean | relative drop |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(summary)]
    with atomic_open(path) as handle:
        handle.write("\n".join(lines) + "\n")


def plot_deltas(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import _save_figure

    metric = summary["metric"]
    specs = [s for s, v in summary["perturbations"].items() if v["delta"].get(metric)]
    deltas = [summary["perturbations"][s]["delta"][metric] for s in specs]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(specs) + 1.2))
    err = [[d["diff"] - d["ci_low"] for d in deltas], [d["ci_high"] - d["diff"] for d in deltas]]
    ax.barh(range(len(specs)), [d["diff"] for d in deltas], xerr=err, capsize=3,
            color=["#c0504d" if d["ci_high"] < 0 else "#999999" for d in deltas])
    ax.set_yticks(range(len(specs)), specs, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"Δ {metric} vs clean (95% CI)")
    ax.invert_yaxis()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)

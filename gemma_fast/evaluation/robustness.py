"""Robustness: the same model and metrics as evaluate.py on perturbed copies of the test set, each compared with the
clean run by a paired bootstrap; the summary score is the mean relative drop of one headline metric."""

from __future__ import annotations

import logging
import dataclasses
import re
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import metrics as M
from ..errors import UserError
from .run import candidates, compare, load_eval_records, prefer_unsloth_first, run_candidate, score, summarise
from ..inference.generation import GenerationSettings
from ..io import write_json, write_jsonl
from ..outputs import check_out_dir, claim_out_dir
from .perturb import Context, apply_spec, needs_model, parse_spec
from ..recipe import Recipe
from .report import plot_deltas, write_robustness_report
from .selection import selection_summary
from ..log import console

log = logging.getLogger(__name__)


def model_translator(cand, recipe: Recipe):
    """The model under test as a translator (self_translate; labelled as such in every report)."""
    greedy = dataclasses.replace(GenerationSettings.from_eval(recipe.eval, recipe.seed), temperature=0.0)

    def translate(questions: list[str], target: str) -> list[str]:
        prompts = [cand.prompts.prompt(f"Translate into {target}. Reply with the translation only.\n\n{q}") for q in questions]
        with cand.context():
            return cand.generator.generate(prompts, greedy)

    return translate


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)


def run(recipe: Recipe, out_dir: Path, adapter: Path | None = None, merged: Path | None = None,
        specs: list[str] | None = None, overwrite: bool = False) -> dict:
    cfg = recipe.robustness
    specs = specs or cfg.perturbations
    if not specs:
        raise UserError("no perturbations: set robustness.perturbations or pass --perturb")
    for spec in specs:
        parse_spec(spec)  # every spec checked before any model runs
    check_out_dir(out_dir, "robustness", overwrite)
    prefer_unsloth_first(recipe)
    records = load_eval_records(recipe)
    claim_out_dir(out_dir, "robustness", overwrite)
    offline = Context(cfg.parallel_file, cfg.translate_to)  # no model yet: file errors come before any model runs
    perturbed = {spec: apply_spec(spec, records, recipe.seed, offline) for spec in specs}
    cand = candidates(recipe, adapter, merged, compare_base=False)[-1]
    online = Context(cfg.parallel_file, cfg.translate_to, model_translator(cand, recipe))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    results = {}
    with Progress(*columns, console=console) as progress:
        results["clean"] = run_candidate(cand.renamed("clean"), records, recipe, out_dir / "partial", progress)
        for spec in specs:
            copy = apply_spec(spec, records, recipe.seed, online) if needs_model(spec) else perturbed[spec]
            write_jsonl(out_dir / "questions" / f"{_slug(spec)}.jsonl",  # what each model was asked: to check by hand
                        ({"id": r["id"], "original": o["instruction"], "asked": r["instruction"]} for r, o in zip(copy, records)))
            results[spec] = run_candidate(cand.renamed(_slug(spec)), copy, recipe, out_dir / "partial", progress)
    rows = {name: [done[r["id"]] for r in records] for name, done in results.items()}
    scores = {name: score(records, [r["prediction"] for r in rs]) for name, rs in rows.items()}
    summaries = {name: summarise(records, rs, scores[name], recipe.seed) for name, rs in rows.items()}
    clean_value = summaries["clean"]["overall"][cfg.metric]["mean"]
    per_spec = {}
    for spec in specs:
        delta = compare(records, rows["clean"], rows[spec], scores["clean"], scores[spec], recipe.seed)
        value = summaries[spec]["overall"][cfg.metric]["mean"]
        per_spec[spec] = {"metrics": summaries[spec]["overall"], "delta": delta,
                          "relative_drop": relative_drop(clean_value, value, cfg.metric),
                          "self_translation": needs_model(spec)}
    drops = [v["relative_drop"] for v in per_spec.values() if v["relative_drop"] is not None]
    summary = {"recipe": recipe.name, "model": recipe.model, "adapter": str(adapter) if adapter else None,
               "merged": str(merged) if merged else None, "split": recipe.eval.split, "examples": len(records),
               "selection": selection_summary(recipe.eval, len(records)), "metric": cfg.metric,
               "clean": summaries["clean"]["overall"], "perturbations": per_spec,
               "robustness_score": {"mean_relative_drop": sum(drops) / len(drops) if drops else None, "metric": cfg.metric}}
    write_json(out_dir / "robustness.json", summary)
    plot_deltas(summary, out_dir / "robustness.png")
    write_robustness_report(summary, out_dir / "report.md")
    recipe.save(out_dir / "recipe.yaml")
    return summary


def relative_drop(clean: float | None, perturbed: float | None, metric: str) -> float | None:
    """How much worse the perturbed run is, as a share of the clean value: positive = worse, for every metric
    (for answer_loss and perplexity, where lower is better, a rise is the drop)."""
    if not clean or clean != clean or perturbed is None or perturbed != perturbed:
        return None
    drop = (clean - perturbed) / abs(clean)
    return drop if M.by_name(metric).higher_is_better else -drop

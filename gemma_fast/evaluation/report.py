"""The evaluation and robustness reports: the metric table with intervals, report.md files and their plots
(shared rendering, the console and the loss plot are gemma_fast/report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..io import atomic_open
from ..report import console, save_figure, table  # noqa: F401  (table: the CLIs import it here too)
from . import metrics as M
from .metrics_zh import LF_LABEL
from .selection import describe


def plot_metrics(models: dict[str, dict], path: Path) -> None:
    """One panel per plotted metric of the table (metrics.METRICS), one bar per model, 95% bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m.name for m in M.metrics(plot=True) if any(s["overall"].get(m.name) for s in models.values())]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.2), squeeze=False)
    colors = ["#999999", "#3b7dd8", "#d8823b"]
    for ax, name in zip(axes[0], shown):
        for x, (model, summary) in enumerate(models.items()):
            stat = summary["overall"].get(name)
            if not stat:
                continue
            err = [[stat["mean"] - stat["ci_low"]], [stat["ci_high"] - stat["mean"]]]
            ax.bar(x, stat["mean"], yerr=err, capsize=4, color=colors[x % len(colors)], label=model)
            ax.annotate(f"{stat['mean']:.3g}", (x, stat["ci_high"]), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(models)), list(models), fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def interval(stat: dict | None) -> str:
    """'mean [95% CI] (n=N)': how many questions a number stands on is part of the number."""
    if not stat:
        return "n/a"
    return f"{stat['mean']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}] (n={stat['n']})"


def diff_interval(stat: dict | None) -> str:
    if not stat:
        return "n/a"
    return f"{stat['diff']:+.3f} [{stat['ci_low']:+.3f}, {stat['ci_high']:+.3f}] (n={stat['n']})"


def few(stat: dict | None, text: str, min_n: int, markdown: bool) -> str:
    """A cell over fewer than min_n questions: dimmed in the terminal, withheld from Markdown (metrics.json keeps it).
    Its interval is too wide to rank models by, and a report that prints it invites doing so."""
    if not stat or stat["n"] >= min_n:
        return text
    return f"(n={stat['n']}<{min_n}, not shown)" if markdown else f"[dim]{text}[/dim]"


def metric_rows(summary: dict, names: Sequence[str], min_n: int | None = None, markdown: bool = False,
                lang: str | None = None) -> list[list[str]]:
    """One row per metric that has a value: each model's mean [CI] (n=N), then the paired difference (overall only).
    `min_n` (default: the summary's eval.min_n) marks the cells over fewer questions (see `few`); `lang` picks a
    language's block instead of the overall one."""
    min_n = summary.get("min_n", 1) if min_n is None else min_n
    blocks = [m["by_lang"][lang] if lang else m["overall"] for m in summary["models"].values()]
    comparison = None if lang else summary.get("comparison")
    rows = []
    for name in names:
        stats = [block.get(name) for block in blocks]
        if not any(stats):
            continue
        cells = [few(s, interval(s), min_n, markdown) for s in stats]
        if comparison:
            stat = comparison.get(name)
            cells.append(few(stat, diff_interval(stat), min_n, markdown))
        rows.append([name, *cells])
    return rows


def write_eval_report(summary: dict, rows: list[dict], path: Path, samples: int = 3) -> None:
    """report.md: the metric table with intervals, per-language means, and the best and worst samples side by side."""
    models = list(summary["models"])
    header = ["metric", *models] + (["fine-tuned − base (paired)"] if summary.get("comparison") else [])
    min_n = summary.get("min_n", 1)
    lines = [f"# Evaluation: {summary['recipe']}", "",
             f"{summary['examples']} examples of the {summary['split']} split ({', '.join(f'{k}: {v}' for k, v in summary['languages'].items())}); "
             f"model `{summary['model']}`; means with 95% bootstrap intervals ({summary['bootstrap']['resamples']} resamples) "
             f"and the number of questions each covers; a cell over fewer than {min_n} questions is not shown "
             "(eval.min_n; metrics.json has every number).", ""]
    chosen = describe(summary.get("selection") or {})
    lines += [f"Selected: {chosen}.", ""] if chosen else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in metric_rows(summary, M.headline_names(), markdown=True)]
    if summary.get("bertscore_encoders"):
        lines += ["", "BERTScore encoders: " + "; ".join(f"{k}: {v}" for k, v in summary["bertscore_encoders"].items()) + "."]
    if summary.get("llamafactory_metrics"):
        lines += ["", f"## {LF_LABEL}", "", "Per-example means x100, to put beside LLaMA-Factory's predict output "
                  "(predict_bleu-4, predict_rouge-1/2/l); not the default metrics above.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in metric_rows(summary, M.headline_names("llamafactory"), markdown=True)]
    for lang in summary["languages"]:
        lines += ["", f"## {lang}", "", "| metric | " + " | ".join(models) + " |", "|" + "---|" * (len(models) + 1)]
        lines += ["| " + " | ".join(r) + " |" for r in metric_rows(summary, M.headline_names(), markdown=True, lang=lang)]
        lines.append("| corpus BLEU | " + " | ".join(f"{summary['models'][m]['corpus'][lang]['corpus_bleu']:.2f}" for m in models) + " |")
    if len(models) == 2:
        a, b = models
        ranked = sorted(rows, key=lambda r: (r[b]["rougeL"] or 0) - (r[a]["rougeL"] or 0))
        for title, picked in (("Where fine-tuning helped most", ranked[::-1][:samples]), ("Where it helped least", ranked[:samples])):
            lines += ["", f"## {title} (ROUGE-L)", ""]
            for r in picked:
                question = r["question"][-300:]
                lines += [f"**{r['id']}** — {question}", "", f"- reference: {r['reference']}"]
                lines += [f"- {m} ({r[m]['rougeL']:.2f}): {r[m]['prediction'] or '(empty)'}" for m in models] + [""]
    with atomic_open(path) as handle:
        handle.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- robustness


def robustness_rows(summary: dict) -> list[list[str]]:
    metric = summary["metric"]
    rows = [["clean", interval(summary["clean"][metric]), "", ""]]
    for spec, v in summary["perturbations"].items():
        drop = v["relative_drop"]
        label = spec + (" (self-translation by the model)" if v["self_translation"] else "")
        rows.append([label, interval(v["metrics"][metric]), diff_interval(v["delta"].get(metric)),
                     f"{100 * drop:.1f}%" if drop is not None else "n/a"])
    return rows


def write_robustness_report(summary: dict, path: Path) -> None:
    metric = summary["metric"]
    chosen = describe(summary.get("selection") or {})
    lines = [f"# Robustness: {summary['recipe']}", "",
             f"{summary['examples']} {summary['split']} examples; model `{summary['model']}`"
             + (f", adapter `{summary['adapter']}`" if summary["adapter"] else "") + ". "
             "Each perturbation changes only the question or context; deltas are paired against the clean run "
             "(95% bootstrap intervals)." + (f" Selected: {chosen}." if chosen else ""), "",
             f"Robustness score (mean relative drop in {metric}): "
             f"**{100 * (summary['robustness_score']['mean_relative_drop'] or 0):.1f}%**", "",
             f"| perturbation | {metric} | Δ vs clean | relative drop |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in robustness_rows(summary)]
    with atomic_open(path) as handle:
        handle.write("\n".join(lines) + "\n")


def plot_deltas(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    save_figure(fig, path)
    plt.close(fig)

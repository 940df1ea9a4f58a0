"""Results for people and machines: rich tables in the terminal, PNG plots (JSON goes through io.write_json)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from .io import atomic_open

console = Console()


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    return t


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _save_figure(fig, path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")


def plot_loss(rows: list[dict], path: Path) -> None:
    """Training and evaluation loss against step, from metrics.jsonl rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("loss", "train"), ("eval_loss", "validation")):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker="o" if label == "validation" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("answer-token loss")
    ax.legend()
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def plot_comparison(metrics: dict[str, dict[str, float]], path: Path) -> None:
    """One panel per metric, one bar per model (base, fine-tuned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(metrics)
    names = list(next(iter(metrics.values())))
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3))
    for ax, name in zip(axes if len(names) > 1 else [axes], names):
        values = [metrics[m][name] for m in models]
        ax.bar(models, values, color=["#999999", "#3b7dd8"][: len(models)])
        ax.set_title(name)
        for x, v in enumerate(values):
            ax.annotate(f"{v:.3g}", (x, v), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)

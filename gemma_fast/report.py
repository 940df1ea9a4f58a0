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
        numeric = i > 0 and all(isinstance(row[i], (int, float)) or row[i] in ("", "-", None) for row in rows)
        t.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    return t


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def save_figure(fig, path: Path) -> None:
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
    save_figure(fig, path)
    plt.close(fig)

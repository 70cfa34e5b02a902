"""``summary.png`` of a sweep: the objective per job, or per setting over seeds (matplotlib, loaded
only when the plot is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.atomic import atomic_output


def plot_objective(path: Path, rows: Sequence[Any], best: Any, labels: Sequence[str], objective: str, mode: str,
                   groups: Sequence[Any] = ()) -> None:
    """One line per job: a dot at its objective value, the best in green, failed jobs as a red x.
    With seed groups, one line per setting instead: mean with a +-std bar, each seed a small dot.
    ``rows`` are the summary's job rows, ``labels`` their tick labels, ``groups`` its seed groups."""
    from matplotlib.figure import Figure

    if groups:
        _plot_seed_groups(path, groups, objective, mode)
        return

    fig = Figure(figsize=(8, min(1.2 + 0.35 * max(len(rows), 1), 40)))
    ax = fig.add_subplot()
    values = [r.value(objective) for r in rows]
    finite = [v for v in values if v is not None]
    left = min(finite) if finite else 0.0
    for y, (row, value) in enumerate(zip(rows, values)):
        if value is None:
            ax.plot([left], [y], marker="x", color="tab:red", markersize=9, linestyle="none")
            ax.annotate(" failed", (left, y), color="tab:red", va="center", fontsize=8)
        else:
            colour = "tab:green" if row is best else "tab:blue"
            ax.plot([value], [y], marker="o", color=colour, markersize=8, linestyle="none")
            ax.annotate(f" {value:.4g}" + ("  best" if row is best else ""), (value, y), va="center", fontsize=8, color=colour)
    ax.set_yticks(range(len(rows)), labels=list(labels), fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # job 0 on top
    ax.margins(x=0.25)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"{objective} ({'higher' if mode == 'max' else 'lower'} is better)")
    ax.set_title(f"{objective} per job: {sum(v is not None for v in values)} of {len(rows)} ok")
    fig.tight_layout()
    with atomic_output(path, "the sweep plot") as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def _plot_seed_groups(path: Path, groups: Sequence[Any], objective: str, mode: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, min(1.2 + 0.35 * len(groups), 40)))
    ax = fig.add_subplot()
    for y, group in enumerate(groups):
        mean, std, n = group.mean_std(objective)
        if mean is None:
            ax.annotate(" all failed", (0, y), color="tab:red", va="center", fontsize=8)
            continue
        ax.errorbar([mean], [y], xerr=[std], fmt="o", color="tab:blue", capsize=4)
        ax.plot(group.values(objective), [y] * n, "|", color="tab:gray", markersize=10)
        ax.annotate(f" {mean:.4g} +- {std:.2g} (n={n})", (mean + std, y), va="center", fontsize=8)
    labels = [", ".join(f"{k}={v}" for k, v in g.setting.items()) or "all" for g in groups]
    ax.set_yticks(range(len(groups)), labels=labels, fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.margins(x=0.3)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"{objective} over seeds ({'higher' if mode == 'max' else 'lower'} is better)")
    fig.tight_layout()
    with atomic_output(path, "the sweep plot") as tmp:
        fig.savefig(tmp, dpi=100, format="png")

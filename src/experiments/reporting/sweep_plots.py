"""``summary.png`` of a sweep: the objective against each swept value, one panel per swept key,
each setting's seeds as one point (mean, a +-std bar, each seed a small dot). matplotlib is loaded
only when the plot is drawn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments.atomic import atomic_output
from experiments.reporting.numbers import mean_spread, significant

#: a log axis when a positive numeric key spans this ratio or more (learning rates, weight decays)
LOG_SPAN = 100.0


@dataclass
class Setting:
    """One point of the plot: the swept values of a setting and its jobs' objective values.

    Args:
        values: swept key -> its value as the override wrote it.
        scores: the objective of each of its jobs that scored (one per seed).
        failed: how many of its jobs did not score.
        best: whether it holds the sweep's best job.
        pruned: the objective where each of its pruned jobs stopped (not a score: fewer epochs).
    """

    values: dict[str, str]
    scores: list[float]
    failed: int = 0
    best: bool = False
    pruned: list[float] = field(default_factory=list)

    def mean_std(self) -> tuple[float, float] | None:
        if not self.scores:
            return None
        mean = sum(self.scores) / len(self.scores)
        n = len(self.scores)
        return mean, math.sqrt(sum((s - mean) ** 2 for s in self.scores) / (n - 1)) if n > 1 else 0.0


def plot_objective(path: Path, settings: Sequence[Setting], keys: Sequence[str], objective: str, mode: str) -> None:
    """One panel per key of ``keys`` (none: one panel, all settings at one place), the objective on
    the y axis; the best setting in green, a failed job as a red x at the bottom, a pruned one as
    an orange ring where it stopped."""
    from matplotlib.figure import Figure

    panels = list(keys) or [""]
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.2 * columns + 0.6, 3.4 * rows + 0.6))
    scored = [s for s in settings for _ in s.scores]
    all_scores = [v for s in settings for v in (*s.scores, *s.pruned)]
    floor = min(all_scores) if all_scores else 0.0
    for index, key in enumerate(panels):
        ax = fig.add_subplot(rows, columns, index + 1)
        positions, ticks = _positions(settings, key, ax)
        for setting, x in zip(settings, positions):
            colour = "tab:green" if setting.best else "tab:blue"
            if setting.pruned:
                ax.plot([x] * len(setting.pruned), setting.pruned, marker="o", markerfacecolor="none",
                        color="tab:orange", linestyle="none")
            stats = setting.mean_std()
            if setting.failed:
                ax.plot([x], [floor], marker="x", color="tab:red", markersize=9, linestyle="none")
            if stats is None:
                continue
            mean, std = stats
            ax.errorbar([x], [mean], yerr=[std] if len(setting.scores) > 1 else None, fmt="o", color=colour, capsize=4)
            if len(setting.scores) > 1:
                ax.plot([x] * len(setting.scores), setting.scores, ".", color="tab:gray", markersize=5)
            if setting.best:
                label = mean_spread(mean, std) if len(setting.scores) > 1 else significant(mean)
                ax.annotate(f" best {label}", (x, mean), fontsize=8, color=colour, va="bottom")
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), labels=ticks, fontsize=8, rotation=30 if len(ticks) > 4 else 0)
        ax.set_xlabel(key or "setting")
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    seeds = max((len(s.scores) + s.failed + len(s.pruned) for s in settings), default=1)
    better = "higher" if mode == "max" else "lower"
    jobs = sum(len(s.scores) + s.failed + len(s.pruned) for s in settings)
    fig.suptitle(f"{objective} ({better} is better): {len(scored)} of {jobs} jobs scored"
                 + (f"\nmean +- std over up to {seeds} seeds" if seeds > 1 else ""), fontsize=10)
    fig.tight_layout()
    with atomic_output(path, "the sweep plot") as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def _positions(settings: Sequence[Setting], key: str, ax: object) -> tuple[list[float], list[str] | None]:
    """Each setting's x: its value on a numeric (or log) axis when every value is a number, else
    the index of its value among the distinct ones (returned as the tick labels)."""
    texts = [s.values.get(key, "") if key else "all" for s in settings]
    numbers = [_number(t) for t in texts]
    if key and all(n is not None for n in numbers) and len(set(numbers)) > 1:
        low, high = min(numbers), max(numbers)
        if low > 0 and high / low >= LOG_SPAN:
            ax.set_xscale("log")
        return [float(n) for n in numbers], None
    distinct = list(dict.fromkeys(sorted(texts, key=lambda t: (_number(t) is None, _number(t) or 0.0, t))))
    labels = [significant(_number(t), zeros=False) if _number(t) is not None else (t or "all") for t in distinct]
    return [float(distinct.index(t)) for t in texts], labels


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None

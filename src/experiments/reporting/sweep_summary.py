"""The sweep summary: ``summary.csv``, ``summary.md`` and ``summary.png`` in the sweep dir.

Written by a Hydra callback at the end of every multirun (basic, Optuna, joblib or SLURM: it reads
what each job left on disk, its ``results.json`` and ``.hydra/``, so it works whatever launched the
jobs). Hydra imports this module at start-up: only the standard library and omegaconf load here;
matplotlib comes in when the plot is drawn.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from experiments.atomic import atomic_output
from experiments.config.metrics import objective_mode
from experiments.pipeline.results import RESULTS_FILE, read_results
from experiments.reporting.numbers import as_number, mean_spread, significant
from experiments.reporting.sweep_plots import Setting, plot_objective
from experiments.sweeps.trials import read_pruned

log = logging.getLogger(__name__)

SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG = "summary.csv", "summary.md", "summary.png"
SEEDS_CSV = "summary_over_seeds.csv"
SEED_KEY = "seed"


@dataclass
class JobRow:
    """One job of the sweep as its files tell it."""

    num: int
    run_dir: Path
    overrides: list[str]
    status: str  # "ok", "pruned" (an Optuna pruner stopped it) or "failed" (no results.json: failed too)
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    wall_time_s: float | None = None
    error: str = ""

    @property
    def failed(self) -> bool:
        """Neither ok nor pruned (a pruned job ran as its pruner asked)."""
        return self.status not in ("ok", "pruned")

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return value if self.status == "ok" and value is not None and math.isfinite(value) else None


def collect_jobs(sweep_dir: Path) -> list[JobRow]:
    """Every job dir under ``sweep_dir`` (a dir with ``.hydra/overrides.yaml``), in job order."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        run_dir = overrides_file.parent.parent
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        num = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.num", default=None) if hydra_file.exists() else None
        row = JobRow(num=int(num) if num is not None else len(rows), run_dir=run_dir, overrides=overrides, status="failed")
        if (run_dir / RESULTS_FILE).exists():
            record = read_results(run_dir)
            row.status = str(record.get("status", "failed"))
            row.metrics = {k: float(v) for k, v in (record.get("metrics") or {}).items() if isinstance(v, (int, float))}
            row.epochs = record.get("epochs")
            row.wall_time_s = record.get("wall_time_s")
            row.error = str(record.get("error", ""))
            if row.status == "ok" and read_pruned(run_dir) is not None:  # ran fewer epochs: no best
                row.status = "pruned"
        else:
            row.error = f"no {RESULTS_FILE}: the job was killed or crashed before it could record"
        rows.append(row)
    return sorted(rows, key=lambda r: r.num)


def best_job(rows: list[JobRow], objective: str, mode: str) -> JobRow | None:
    """The ok job with the highest (``mode="max"``) or lowest objective; None when none has it."""
    scored = [r for r in rows if r.value(objective) is not None]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r.value(objective))


@dataclass
class SeedGroup:
    """Jobs that differ only in ``seed``: one setting, its metrics as mean, std and count."""

    setting: dict[str, str]
    jobs: list[JobRow]

    def values(self, metric: str) -> list[float]:
        return [v for v in (r.value(metric) for r in self.jobs) if v is not None]

    def mean_std(self, metric: str) -> tuple[float | None, float | None, int]:
        """Mean, sample standard deviation (0 for one value) and count of the ok jobs' values."""
        values = self.values(metric)
        if not values:
            return None, None, 0
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return mean, math.sqrt(var), len(values)

    def mean_wall_time(self) -> float | None:
        times = [r.wall_time_s for r in self.jobs if r.status == "ok" and r.wall_time_s is not None]
        return sum(times) / len(times) if times else None


def group_over_seeds(rows: list[JobRow], varying: list[str]) -> list[SeedGroup]:
    """Groups of jobs whose overrides differ only in ``seed`` (empty when seed does not vary)."""
    if SEED_KEY not in varying:
        return []
    others = [k for k in varying if k != SEED_KEY]
    groups: dict[tuple[str, ...], SeedGroup] = {}
    for row in rows:
        values = dict(_key_value(o) for o in row.overrides)
        key = tuple(values.get(k, "") for k in others)
        groups.setdefault(key, SeedGroup(dict(zip(others, key)), [])).jobs.append(row)
    return list(groups.values())


def split_overrides(rows: list[JobRow], swept: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """``(varying keys, common overrides)``: keys the sweep searched (``swept``: a search that drew
    one value twice still searched it) or whose value differs between jobs, and the ``key=value``
    overrides every job shares (shown once, not in every row)."""
    per_job = [dict(_key_value(o) for o in r.overrides) for r in rows]
    keys = list(dict.fromkeys(k for job in per_job for k in job))
    bare = {k.lstrip("+~"): k for k in keys}
    searched = {bare[k] for k in swept if k in bare}
    varying = [k for k in keys if k in searched or len({job.get(k) for job in per_job}) > 1]
    common = [f"{k}={per_job[0][k]}" for k in keys if k not in varying] if per_job else []
    return varying, common


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def write_summary(sweep_dir: Path, objective: str, mode: str, swept: Sequence[str] = ()) -> tuple[list[JobRow], JobRow | None]:
    """Write the three summary files into ``sweep_dir``; returns the rows and the best job.
    ``swept``: the keys the sweep searched (its columns even where every job drew one value)."""
    rows = collect_jobs(sweep_dir)
    best = best_job(rows, objective, mode)
    varying, common = split_overrides(rows, swept)
    metric_names = list(dict.fromkeys([objective, *sorted(k for r in rows for k in r.metrics)]))
    _write_csv(sweep_dir / SUMMARY_CSV, rows, best, varying, metric_names)
    groups = group_over_seeds(rows, varying)
    if groups:
        _write_seeds_csv(sweep_dir / SEEDS_CSV, groups, metric_names)
    _write_markdown(sweep_dir / SUMMARY_MD, rows, best, varying, common, metric_names, objective, mode, groups)
    panels = [k for k in varying if k != SEED_KEY and (not swept or k.lstrip("+~") in swept)]
    plot_objective(sweep_dir / SUMMARY_PNG, _settings(rows, groups, varying, best, objective), panels, objective, mode)
    return rows, best


def _settings(rows: list[JobRow], groups: list[SeedGroup], varying: list[str], best: JobRow | None,
              objective: str) -> list[Setting]:
    """The plot's points: one per seed group, or one per job when seed does not vary."""
    if groups:
        return [Setting(g.setting, g.values(objective), sum(r.failed for r in g.jobs), best in g.jobs,
                        _pruned_at(g.jobs, objective)) for g in groups]
    points = []
    for row in rows:
        values = dict(_key_value(o) for o in row.overrides)
        score = row.value(objective)
        points.append(Setting({k: values.get(k, "") for k in varying}, [score] if score is not None else [],
                              int(row.failed), row is best, _pruned_at([row], objective)))
    return points


def _pruned_at(rows: list[JobRow], objective: str) -> list[float]:
    return [r.metrics[objective] for r in rows if r.status == "pruned" and math.isfinite(r.metrics.get(objective, math.nan))]


def _write_seeds_csv(path: Path, groups: list[SeedGroup], metrics: list[str]) -> None:
    with atomic_output(path, "the sweep summary") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        keys = list(groups[0].setting)
        writer.writerow([*keys, "n", *(f"{m} {stat}" for m in metrics for stat in ("mean", "std")), "wall_time_s mean"])
        for group in groups:
            stats = [group.mean_std(m) for m in metrics]
            writer.writerow([*(as_number(v) for v in group.setting.values()), len(group.jobs),
                             *(significant(x) for mean, std, _ in stats for x in (mean, std)),
                             _seconds(group.mean_wall_time())])


def _write_csv(path: Path, rows: list[JobRow], best: JobRow | None, varying: list[str], metrics: list[str]) -> None:
    with atomic_output(path, "the sweep summary") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", "status", "best", *varying, *metrics, "epochs", "wall_time_s", "overrides", "error", "run_dir"])
        for row in rows:
            values = dict(_key_value(o) for o in row.overrides)
            writer.writerow([
                row.num, row.status, "yes" if row is best else "",
                *(as_number(values.get(k, "")) for k in varying),
                *(significant(row.metrics.get(m)) for m in metrics),
                significant(row.epochs), _seconds(row.wall_time_s), " ".join(row.overrides), row.error, str(row.run_dir),
            ])


def _write_markdown(
    path: Path, rows: list[JobRow], best: JobRow | None, varying: list[str], common: list[str],
    metrics: list[str], objective: str, mode: str, groups: list[SeedGroup] = (),
) -> None:
    failed = failed_jobs(rows)
    pruned = sum(r.status == "pruned" for r in rows)
    lines = [
        "# Sweep summary",
        "",
        f"{len(rows)} jobs: {len(rows) - len(failed) - pruned} ok, " + (f"{pruned} pruned, " if pruned else "")
        + f"{len(failed)} failed. Objective: `{objective}` ({'higher' if mode == 'max' else 'lower'} is better).",
    ]
    if best is not None:
        lines.append(f"Best: job {best.num} ({_label(best, varying)}) with {objective} = {significant(best.value(objective))}.")
    if common:
        lines.append("Every job: " + " ".join(f"`{o}`" for o in common) + ".")
    header = ["job", "status", *varying, *metrics, "epochs", "wall time (s)"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = dict(_key_value(o) for o in row.overrides)
        job = f"**{row.num} (best)**" if row is best else str(row.num)
        cells = [job, row.status, *(as_number(values.get(k, "")) for k in varying),
                 *(significant(row.metrics.get(m)) for m in metrics), significant(row.epochs), _seconds(row.wall_time_s)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if groups:
        keys = list(groups[0].setting)
        lines += ["", "## Over seeds (mean +- std, n = ok jobs)", ""]
        header = [*keys, "n", *metrics, "wall time (s)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for group in groups:
            cells = [*(as_number(v) for v in group.setting.values()), str(len(group.jobs))]
            for metric in metrics:
                mean, std, n = group.mean_std(metric)
                cells.append("" if mean is None else mean_spread(mean, std) + (f" (n={n})" if n != len(group.jobs) else ""))
            cells.append(_seconds(group.mean_wall_time()))
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- job {r.num} ({_label(r, varying)}): {r.error or 'no error recorded'}" for r in failed]
    lines += ["", f"![{objective} per job]({SUMMARY_PNG})", ""]
    with atomic_output(path, "the sweep summary") as tmp:
        tmp.write_text("\n".join(lines))


def _label(row: JobRow, varying: list[str]) -> str:
    values = dict(_key_value(o) for o in row.overrides)
    return ", ".join(f"{k}={as_number(values[k])}" for k in varying if k in values) or "no overrides"


def failed_jobs(rows: list[JobRow]) -> list[JobRow]:
    """The jobs that fail the sweep (:attr:`JobRow.failed`)."""
    return [r for r in rows if r.failed]


def searched_keys(config: DictConfig) -> list[str]:
    """The keys a multirun searches: its command line's sweeps, then the sweeper's searched
    ``hydra.sweeper.params`` (Optuna's space; a fixed value there is not searched)."""
    from experiments.config.sweep_names import swept_keys  # Hydra's override parser: at the sweep's end only

    overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    return swept_keys(overrides, swept_keys([f"{k}={v}" for k, v in params.items()]))


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.sweep_summary``): the summary files after every multirun.

    Args:
        fail_on_failed_jobs: after writing the summary, exit with status 1 when any job failed,
            so a script or CI running the sweep notices; the other jobs have all run by then.
    """

    def __init__(self, fail_on_failed_jobs: bool = True) -> None:
        self.fail_on_failed_jobs = fail_on_failed_jobs

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        objective = str(config.get("objective", "val/acc"))
        mode = objective_mode(objective)
        rows, best = write_summary(sweep_dir, objective, mode, searched_keys(config))
        failed = failed_jobs(rows)
        best_note = f"best job {best.num}: {objective} {significant(best.value(objective))}" if best else "no job finished"
        log.info("sweep summary: %d jobs, %d failed; %s -> %s", len(rows), len(failed), best_note, sweep_dir / SUMMARY_MD)
        if failed and self.fail_on_failed_jobs:
            log.error("%d of %d jobs failed (jobs %s); see %s", len(failed), len(rows), ", ".join(str(r.num) for r in failed), sweep_dir / SUMMARY_MD)
            raise SystemExit(1)

"""A grid of runs (data x labels per class x method x seed) and its mean +- std table.

Each cell is a real ``train()`` run of the framework in this process, composed from ``conf/`` like
``python run.py`` would; the table reports test accuracy as mean +- std over seeds and the mean wall
time of one run (fit + validate + test of the best checkpoint, data and model loading included).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from _common import QUIET, compose_cfg
from experiments.pipeline.tasks import train

LABEL_CHOICES = {"all": "null"}


@dataclass
class Cell:
    data: str
    labels: str
    method: str
    accs: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_grid(
    datasets: list[str],
    labels: list[str],
    methods: dict[str, list[str]],
    seeds: list[int],
    common: list[str],
    log_path: Path | None = None,
) -> list[Cell]:
    """Every (data, labels, method) for every seed; failures are recorded, not raised."""
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in datasets:
            for label in labels:
                for method, overrides in methods.items():
                    cell = Cell(data, label, method)
                    for seed in seeds:
                        run_dir = Path(tmp) / f"{data}-{label}-{method}-{seed}"
                        cfg = compose_cfg(
                            run_dir, f"data={data}", f"data.samples_per_class={LABEL_CHOICES.get(label, label)}",
                            f"seed={seed}", "logger=none", *QUIET, *common, *overrides,
                        )
                        start = time.perf_counter()
                        try:
                            record = train(cfg).record
                        except Exception as err:  # one failed cell must not lose the others
                            cell.errors.append(f"{type(err).__name__}: {err}")
                            print(f"FAILED {data} {label} {method} seed {seed}: {cell.errors[-1]}", flush=True)
                            continue
                        wall = time.perf_counter() - start
                        cell.accs.append(record["metrics"]["test/acc"])
                        cell.walls.append(wall)
                        line = {"data": data, "labels": label, "method": method, "seed": seed,
                                "test_acc": cell.accs[-1], "wall_s": wall, "weights": record["weights"],
                                "feature_cache": record["finetune_detail"]["feature_cache"]["used"]}
                        print(json.dumps(line), flush=True)
                        if log_path:
                            with open(log_path, "a") as f:
                                f.write(json.dumps(line) + "\n")
                    cells.append(cell)
    return cells


def mean_std(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def table(cells: list[Cell]) -> str:
    """Markdown: one row per (data, labels, method)."""
    lines = ["| data | labels per class | method | test acc (mean +- std) | wall time per run (s) | seeds |",
             "|---|---|---|---|---|---|"]
    for c in cells:
        wall = f"{statistics.fmean(c.walls):.0f}" if c.walls else "-"
        failed = f" ({len(c.errors)} failed)" if c.errors else ""
        lines.append(f"| {c.data} | {c.labels} | {c.method} | {mean_std(c.accs)} | {wall} | {len(c.accs)}{failed} |")
    return "\n".join(lines)


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'' if threads == 1 else 's'}"

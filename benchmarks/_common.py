"""Shared pieces of the benchmarks: compose a config, time epochs, print a table."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir

import experiments.config  # noqa: F401  (registers the config resolvers)

CONF = Path(__file__).resolve().parents[1] / "conf"
QUIET = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def compose_cfg(run_dir: Path, *overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("run", overrides=[f"paths.run_dir={run_dir}", *overrides])


class EpochTimer(L.Callback):
    """Seconds of each training epoch, validation and checkpointing included (start to start)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()

    @property
    def epochs(self) -> list[float]:
        marks = [*self.starts, self.end]
        return [b - a for a, b in zip(marks, marks[1:])]


def median_after_first(values: list[float]) -> float:
    """Median epoch time, leaving out the first (warm-up) epoch when there are more."""
    return statistics.median(values[1:] if len(values) > 1 else values)

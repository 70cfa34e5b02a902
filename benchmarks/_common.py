"""Shared pieces of the benchmarks: compose a config, time epochs, print a table."""

from __future__ import annotations

import statistics
import time

import lightning as L

from experiments.config.compose import compose_config

QUIET = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


compose_cfg = compose_config  # the one compose helper, shared with the tests


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

"""The TensorBoard logger of a run: Lightning's, without the cards nobody reads.

Lightning adds an ``epoch`` scalar to every metrics write: in TensorBoard it is one more card, a
staircase that says nothing the step axis and the per-epoch curves do not. The final metrics of
the best checkpoint go under each stage's own group (``val/best/acc``; the test metrics are already
single points, ``test/acc``), so the cards open on the run's curves
(:class:`~experiments.reporting.hparams.FinalMetricsHparams`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger

from experiments.config.declared import Flag


class RunTensorBoardLogger(TensorBoardLogger):
    """:class:`~lightning.pytorch.loggers.TensorBoardLogger` that writes no ``epoch`` scalar."""

    KEYS = {"log_graph": Flag(), "default_hp_metric": Flag()}

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        super().log_metrics({key: value for key, value in metrics.items() if key != "epoch"}, step)

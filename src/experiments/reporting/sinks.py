"""Where figures and text go: every logger of the Trainer that can take them.

TensorBoard takes them through its ``SummaryWriter`` (``add_figure``, ``add_text``), MLflow
(:class:`~experiments.reporting.mlflow_logger.MLflowRunLogger`) as artifacts (``log_figure``,
``log_text``); a CSV logger takes neither. The callbacks that draw ask :func:`takes_figures` first,
so nothing is drawn for a run without such a logger.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
from matplotlib.figure import Figure


def takes_figures(trainer: L.Trainer) -> bool:
    """True when a logger of ``trainer`` shows figures."""
    return any(hasattr(lg, "log_figure") or hasattr(getattr(lg, "experiment", None), "add_figure") for lg in trainer.loggers)


def log_figures(trainer: L.Trainer, figures: Mapping[str, Figure]) -> None:
    """Each ``tag -> figure`` to every logger that shows figures, at the trainer's global step."""
    for logger in trainer.loggers:
        for tag, figure in figures.items():
            if hasattr(logger, "log_figure"):
                logger.log_figure(tag, figure, trainer.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_figure"):
                logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)


def log_text(trainer: L.Trainer, tag: str, text: str) -> None:
    """``text`` under ``tag`` in every logger that takes text: a preformatted block in
    TensorBoard's TEXT tab, an artifact in MLflow."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_text"):
            logger.log_text(tag, text)
        elif hasattr(getattr(logger, "experiment", None), "add_text"):
            logger.experiment.add_text(tag, "```\n" + text + "\n```", 0)

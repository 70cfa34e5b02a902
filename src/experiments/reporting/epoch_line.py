"""A line per epoch in the job's log (console and ``run.log``): what timm's and fastai's loops print.

``epoch 3/10  train/loss 0.2104  val/loss 0.1810  val/acc 0.9512  2.1 s`` after each epoch's
validation, so a piped or CI log shows progress between the start and the summary line, and the
progress bar (a TTY only) is not the only place the numbers appear.
"""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from experiments.config.declared import Integer

log = logging.getLogger("experiments.epochs")

#: shown first when logged (then the objective, then any other val/ metric, in name order)
LEADING = ("train/loss", "val/loss", "val/acc")


class EpochLine(L.Callback):
    """Logs one line per training epoch: the epoch, its train and validation metrics, its seconds.

    Args:
        max_metrics: at most this many metrics on the line.
    """

    KEYS = {"max_metrics": Integer(low=1)}

    def __init__(self, max_metrics: int = 6) -> None:
        self.max_metrics = max_metrics
        self._start = 0.0
        self._pending: tuple[int, float] | None = None  # (epoch, seconds) not yet printed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._emit(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the module logs its train/ metrics in its own on_train_epoch_end, which Lightning calls
        # after the callbacks' hooks: the line waits for them (the next epoch's start, or the end)
        if not trainer.sanity_checking:
            self._pending = (trainer.current_epoch, time.perf_counter() - self._start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._emit(trainer)

    @rank_zero_only
    def _emit(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        epoch, seconds = self._pending
        self._pending = None
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        names = [k for k in LEADING if k in metrics]
        names += sorted(k for k in metrics if k not in names)
        shown = "  ".join(f"{k} {float(metrics[k]):.4f}" for k in names[: self.max_metrics])
        log.info("epoch %d/%d  %s  %.1f s", epoch + 1, trainer.max_epochs, shown, seconds)

"""The live progress bar: Lightning's rich bar with the running training loss, redrawn every few steps.

Lightning's bar redraws and re-reads its metrics after every batch; the training loss is not among
them here, because a per-step ``self.log`` costs about a millisecond a step (the module accumulates
its metrics and logs them once per epoch). :class:`LiveProgressBar` shows the epoch's running mean
loss, read from the module's accumulator (:meth:`ClassificationModule.running_loss`) every
``every_n_steps`` training batches: one device-to-host copy per redraw, none on the other steps.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from experiments.config.declared import Flag, Integer


class LiveProgressBar(RichProgressBar):
    """:class:`~lightning.pytorch.callbacks.RichProgressBar` that redraws the training bar every
    ``every_n_steps`` batches (and on an epoch's last) and shows ``train/loss``, the epoch's running
    mean training loss, beside the validation metrics.

    Args:
        every_n_steps: training batches between redraws (>= 1).
        **kwargs: RichProgressBar's own arguments (``leave``, ``theme``, ``console_kwargs``).
    """

    KEYS = {"every_n_steps": Integer(low=1), "leave": Flag()}

    def __init__(self, every_n_steps: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every_n_steps = every_n_steps
        self._loss: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss = None
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        done = batch_idx + 1
        if done % self.every_n_steps and done != self.total_train_batches:
            return  # no redraw, no metric read: nothing that waits for the device
        running = getattr(pl_module, "running_loss", None)
        loss = running() if callable(running) else None
        self._loss = float(loss) if loss is not None else None
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: the run dir says which run this is
        if self._loss is not None and trainer.training:
            metrics = {"train/loss": f"{self._loss:.4g}", **metrics}
        return metrics

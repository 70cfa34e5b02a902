"""Confusion matrix and sample predictions as TensorBoard images at the end of ``trainer.test``."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from experiments.reporting.figures import confusion_matrix_figure, sample_grid_figure

log = logging.getLogger(__name__)

CONFUSION_TAG = "test/confusion_matrix"
SAMPLES_TAG = "test/samples"


class PredictionFigures(L.Callback):
    """Logs ``test/confusion_matrix`` and ``test/samples`` (the first ``num_samples`` test inputs with
    predicted and true class) to every logger that can take figures (TensorBoard).

    It reads the predicted classes that ClassificationModule.test_step returns (no second forward
    pass). The confusion matrix is a torchmetrics metric: with
    DDP it is summed over all processes before rank 0 draws it. Nothing is computed when no
    logger can show figures.

    Args:
        num_samples: inputs in the sample grid (0: no grid). Only image batches ``(N, C, H, W)``
            with 1 or 3 channels are drawn.
    """

    def __init__(self, num_samples: int = 16) -> None:
        self.num_samples = num_samples
        self._matrix: MulticlassConfusionMatrix | None = None
        self._samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    @staticmethod
    def _writers(trainer: L.Trainer) -> list[Any]:
        return [lg.experiment for lg in trainer.loggers if hasattr(getattr(lg, "experiment", None), "add_figure")]

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples = []
        self._matrix = None
        num_classes = getattr(trainer.datamodule, "num_classes", None)
        if num_classes and self._writers(trainer):
            self._matrix = MulticlassConfusionMatrix(num_classes=num_classes).to(pl_module.device)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._matrix is None:
            return
        x, y = batch[0], batch[1]
        predicted = outputs["predictions"]
        self._matrix.update(predicted, y)
        kept = sum(len(s[0]) for s in self._samples)
        if kept < self.num_samples and _is_image_batch(x):
            take = self.num_samples - kept
            self._samples.append((x[:take].float().cpu(), predicted[:take].cpu(), y[:take].cpu()))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._matrix is None:
            return
        matrix = self._matrix.compute().cpu().numpy()  # a collective under DDP: every rank calls it
        if not trainer.is_global_zero:
            return
        names = _class_names(trainer.datamodule, matrix.shape[0])
        figures = {CONFUSION_TAG: confusion_matrix_figure(matrix, names)}
        if self._samples:
            images = torch.cat([s[0] for s in self._samples]).numpy()
            predicted = torch.cat([s[1] for s in self._samples]).tolist()
            labels = torch.cat([s[2] for s in self._samples]).tolist()
            figures[SAMPLES_TAG] = sample_grid_figure(images, predicted, labels, names)
        for writer in self._writers(trainer):
            for tag, figure in figures.items():
                writer.add_figure(tag, figure, global_step=trainer.global_step, close=False)
        log.info("test figures logged: %s", ", ".join(figures))
        self._samples, self._matrix = [], None


def _is_image_batch(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.layout == torch.strided and x.dim() == 4 and x.shape[1] in (1, 3)


def _class_names(datamodule: Any, num_classes: int) -> list[str]:
    names = getattr(datamodule, "class_names", None)
    names = list(names()) if callable(names) else []
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]

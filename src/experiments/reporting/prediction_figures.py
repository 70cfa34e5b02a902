"""Confusion matrix and sample predictions as TensorBoard images at the end of ``trainer.test``."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from experiments.reporting.figures import confusion_matrix_figure, sample_grid_figure
from experiments.reporting.sinks import log_figures, takes_figures

log = logging.getLogger(__name__)

CONFUSION_TAG = "test/confusion_matrix"
SAMPLES_TAG = "test/samples"


class PredictionFigures(L.Callback):
    """Logs ``test/confusion_matrix`` and ``test/samples`` (the first ``num_samples`` test inputs with
    predicted and true class) to every logger that can take figures (TensorBoard, MLflow).

    It reads the predicted classes that ClassificationModule.test_step returns (no second forward
    pass). With several test loaders (a domain-adaptation run: source, target) each gets its own
    figures, tagged ``test/confusion_matrix/<name>`` with the names the data module's
    ``test_loader_names`` gives. The confusion matrix is a torchmetrics metric: with
    DDP it is summed over all processes before rank 0 draws it. Nothing is computed when no
    logger can show figures.

    Args:
        num_samples: inputs in the sample grid (0: no grid). Only image batches ``(N, C, H, W)``
            with 1 or 3 channels are drawn.
    """

    def __init__(self, num_samples: int = 16) -> None:
        self.num_samples = num_samples
        self._num_classes: int | None = None
        self._matrices: dict[int, MulticlassConfusionMatrix] = {}
        self._samples: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self._matrices = {}, {}
        num_classes = getattr(trainer.datamodule, "num_classes", None)
        self._num_classes = num_classes if num_classes and takes_figures(trainer) else None

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._num_classes is None:
            return
        x, y = batch[0], batch[1]
        predicted = outputs["predictions"]
        if dataloader_idx not in self._matrices:
            self._matrices[dataloader_idx] = MulticlassConfusionMatrix(num_classes=self._num_classes).to(pl_module.device)
        self._matrices[dataloader_idx].update(predicted, y)
        samples = self._samples.setdefault(dataloader_idx, [])
        kept = sum(len(s[0]) for s in samples)
        if kept < self.num_samples and _is_image_batch(x):
            take = self.num_samples - kept
            samples.append((x[:take].float().cpu(), predicted[:take].cpu(), y[:take].cpu()))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # compute() is a collective under DDP: every rank calls it
        matrices = {i: m.compute().cpu().numpy() for i, m in sorted(self._matrices.items())}
        if not matrices or not trainer.is_global_zero:
            return
        loader_names = list(getattr(trainer.datamodule, "test_loader_names", None) or [])
        figures = {}
        for index, matrix in matrices.items():
            suffix = "" if len(matrices) == 1 else "/" + (loader_names[index] if index < len(loader_names) else str(index))
            names = _class_names(trainer.datamodule, matrix.shape[0])
            figures[CONFUSION_TAG + suffix] = confusion_matrix_figure(matrix, names)
            samples = self._samples.get(index)
            if samples:
                images = torch.cat([s[0] for s in samples]).numpy()
                predicted = torch.cat([s[1] for s in samples]).tolist()
                labels = torch.cat([s[2] for s in samples]).tolist()
                figures[SAMPLES_TAG + suffix] = sample_grid_figure(images, predicted, labels, names)
        log_figures(trainer, figures)
        log.info("test figures logged: %s", ", ".join(figures))
        self._samples, self._matrices = {}, {}


def _is_image_batch(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.layout == torch.strided and x.dim() == 4 and x.shape[1] in (1, 3)


def _class_names(datamodule: Any, num_classes: int) -> list[str]:
    names = getattr(datamodule, "class_names", None)
    names = list(names()) if callable(names) else []
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]

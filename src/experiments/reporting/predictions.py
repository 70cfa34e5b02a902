"""``predictions.csv``: one row per sample of the predict split, written while ``trainer.predict`` runs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

PREDICTIONS_FILE = "predictions.csv"


class PredictionsCsvWriter(BasePredictionWriter):
    """Streams ``index, label, predicted, prob_<class>...`` rows to ``path`` batch by batch.

    ``index`` is the sample's position in the predict split; ``label`` is present when the split's
    batches carry targets; ``predicted`` is the class index with the highest probability. The
    module's ``predict_step`` must return class probabilities ``(batch, num_classes)``.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.class_names = list(class_names)
        self.rows = 0
        self._handle = None
        self._writer: Any = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("w", newline="")
        self._writer = csv.writer(self._handle)

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: torch.Tensor,
        batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        probs = prediction.float().cpu()
        labels = batch[1].tolist() if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        if self.rows == 0:
            header = ["index", *(["label"] if labels is not None else []), "predicted"]
            self._writer.writerow(header + [f"prob_{name}" for name in self.class_names])
        for offset, row in enumerate(probs.tolist()):
            label = [labels[offset]] if labels is not None else []
            self._writer.writerow([self.rows + offset, *label, int(probs[offset].argmax())] + [f"{p:.6g}" for p in row])
        self.rows += len(probs)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

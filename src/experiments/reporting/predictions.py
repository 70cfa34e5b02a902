"""``predictions.csv``: one row per sample of the predict split, written while ``trainer.predict`` runs."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from experiments.atomic import output_error, temporary_beside

PREDICTIONS_FILE = "predictions.csv"


class _CsvStream(BasePredictionWriter):
    """A CSV file at ``path`` written batch by batch while ``trainer.predict`` runs, under a
    temporary name that becomes ``path`` once the last batch is in (:mod:`experiments.atomic`): a
    failure, a full disk or a kill never leaves a partial file under the final name."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.rows = 0
        self._handle = None
        self._writer: Any = None
        self._tmp: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = 0
        self._tmp = temporary_beside(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self._tmp.open("w", newline="")
        except OSError as err:
            raise output_error(err, self.path, "the predictions") from err
        self._writer = csv.writer(self._handle)

    @property
    def predicted(self) -> int:
        """Rows that hold a prediction (not a file that could not be read)."""
        return self.rows - getattr(self, "errors", 0)

    def write_rows(self, rows: list[list[Any]]) -> None:
        try:
            self._writer.writerows(rows)
        except OSError as err:
            self._discard()
            raise output_error(err, self.path, "the predictions") from err

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handle is None or self._tmp is None:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self._tmp, self.path)
        except OSError as err:
            self._discard()
            raise output_error(err, self.path, "the predictions") from err
        self._handle = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._discard()

    def _discard(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass  # the temporary file goes anyway
            self._handle = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


class PredictionsCsvWriter(_CsvStream):
    """Streams ``index, label, predicted, prob_<class>...`` rows to ``path`` batch by batch.

    ``index`` is the sample's position in the predict split; ``label`` is present when the split's
    batches carry targets; ``predicted`` is the class index with the highest probability. The
    module's ``predict_step`` must return class probabilities ``(batch, num_classes)``.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str]) -> None:
        super().__init__(path)
        self.class_names = list(class_names)

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: torch.Tensor,
        batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        probs = prediction.float().cpu()
        labels = batch[1].tolist() if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        rows = []
        if self.rows == 0:
            header = ["index", *(["label"] if labels is not None else []), "predicted"]
            rows.append(header + [f"prob_{name}" for name in self.class_names])
        for offset, row in enumerate(probs.tolist()):
            label = [labels[offset]] if labels is not None else []
            rows.append([self.rows + offset, *label, int(probs[offset].argmax())] + [f"{p:.6g}" for p in row])
        self.write_rows(rows)
        self.rows += len(probs)


class InputPredictionsWriter(_CsvStream):
    """``predictions.csv`` for ``predict.inputs``: per input ``input, predicted, probability``, then
    ``top<i>, top<i>_probability`` for the ``top_k`` most probable classes, then ``error`` (a file
    that could not be decoded has only its name and the error). Streams batch by batch; keeps the
    first ``grid`` image inputs for :meth:`figure`.

    Batches are ``(inputs, indices, errors)`` (:class:`~experiments.datamodules.inputs.InputCollate`);
    ``names[index]`` names an input in the CSV (its path, or ``line N`` of a text file).
    """

    def __init__(self, path: str | Path, names: Sequence[str], class_names: Sequence[str], top_k: int = 5,
                 grid: int = 16) -> None:
        super().__init__(path)
        self.names, self.class_names = list(names), list(class_names)
        self.top_k, self.grid = min(top_k, len(self.class_names)), grid
        self.errors = 0
        self.shown: list[tuple[torch.Tensor, int]] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.errors = 0
        self.shown = []
        tops = [column for i in range(1, self.top_k + 1) for column in (f"top{i}", f"top{i}_probability")]
        self.write_rows([["input", "predicted", "probability", *tops, "error"]])

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: torch.Tensor,
        batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        inputs, indices, errors = batch
        probs, classes = prediction.float().cpu().topk(self.top_k, dim=1)
        rows = []
        for row, (index, error) in enumerate(zip(indices.tolist(), errors)):
            name = self.names[index]
            if error:
                rows.append([name, "", "", *[""] * (2 * self.top_k), error])
                self.errors += 1
                continue
            tops = [(self.class_names[c], f"{p:.6g}") for c, p in zip(classes[row].tolist(), probs[row].tolist())]
            rows.append([name, *tops[0], *[value for top in tops for value in top], ""])
            if len(self.shown) < self.grid and inputs.dim() == 4 and inputs.shape[1] in (1, 3):
                self.shown.append((inputs[row].float().cpu(), int(classes[row, 0])))
        self.write_rows(rows)
        self.rows += len(indices)

    def figure(self):
        """The first image inputs with their predicted class (None: no image was predicted)."""
        if not self.shown:
            return None
        from experiments.reporting.figures import sample_grid_figure

        images = torch.stack([image for image, _ in self.shown]).numpy()
        return sample_grid_figure(images, [c for _, c in self.shown], None, self.class_names)

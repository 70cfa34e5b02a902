"""``predictions.csv``: one row per input (the predict split's samples or new files), written while
``trainer.predict`` runs, and ``predictions.png``, the first files as predicted."""

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


class PredictionsWriter(_CsvStream):
    """``predictions.csv``, one layout for the data's predict split and for new files: per input
    ``input, label, predicted, probability``, then ``top<i>, top<i>_probability`` for the ``top_k``
    most probable classes, then ``error``. Classes are names; probabilities have 6 significant digits.

    Two kinds of batches (the first decides): the predict split's ``(inputs, labels)``, where
    ``input`` is ``<split>[<position>]`` and ``label`` the true class; new files' ``(inputs,
    indices, errors)`` (:class:`~experiments.datamodules.inputs.InputCollate`), where ``input`` is
    ``names[index]`` (a path, or ``file:line N``), ``label`` is empty and a file that could not be
    decoded is a row with only its name and the error. Streams batch by batch; keeps the first
    ``grid`` files' rows for :meth:`figure`.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str], names: Sequence[str] | None = None,
                 top_k: int = 5, grid: int = 16, split: str = "test") -> None:
        super().__init__(path)
        self.names, self.class_names = (list(names) if names is not None else None), list(class_names)
        self.top_k, self.grid, self.split = min(top_k, len(self.class_names)), grid, split
        self.errors = 0
        self.shown: list[tuple[str, str, float | None]] = []  # (input, predicted class, probability)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.errors = 0
        self.shown = []
        tops = [column for i in range(1, self.top_k + 1) for column in (f"top{i}", f"top{i}_probability")]
        self.write_rows([["input", "label", "predicted", "probability", *tops, "error"]])

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: torch.Tensor,
        batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        probs, classes = prediction.float().cpu().topk(self.top_k, dim=1)
        if self.names is None:  # the predict split: (inputs, labels) or inputs alone
            labels = batch[1].tolist() if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
            inputs = [(f"{self.split}[{self.rows + i}]", "" if labels is None else self.class_names[int(labels[i])], "")
                      for i in range(len(probs))]
        else:
            _, indices, errors = batch
            inputs = [(self.names[index], "", error) for index, error in zip(indices.tolist(), errors)]
        rows = []
        for row, (name, label, error) in enumerate(inputs):
            if error:
                rows.append([name, label, "", "", *[""] * (2 * self.top_k), error])
                self.errors += 1
                self._keep(name, "cannot decode", None)
                continue
            tops = [(self.class_names[c], f"{p:.6g}") for c, p in zip(classes[row].tolist(), probs[row].tolist())]
            rows.append([name, label, *tops[0], *[value for top in tops for value in top], ""])
            self._keep(name, tops[0][0], float(probs[row, 0]))
        self.write_rows(rows)
        self.rows += len(inputs)

    def _keep(self, name: str, predicted: str, probability: float | None) -> None:
        if self.names is not None and len(self.shown) < self.grid:
            self.shown.append((name, predicted, probability))

    def figure(self, channels: int):
        """The first ``grid`` image files, in the CSV's order, each as the file shows it (decoded
        with ``channels``, not rescaled), titled with its file name, class and probability (None:
        no image file was predicted)."""
        from experiments.datamodules.image_files import read_image
        from experiments.errors import DataError
        from experiments.reporting.figures import input_grid_figure

        if not self.shown:
            return None
        images, titles = [], []
        for name, predicted, probability in self.shown:
            try:
                images.append(read_image(name, channels).numpy())
            except DataError:
                images.append(None)
            titles.append(f"{Path(name).name}\n{predicted}" + ("" if probability is None else f" {probability:.2f}"))
        return input_grid_figure(images, titles)

"""A user's own ``torch.utils.data.Dataset`` (``data=custom data.dataset._target_=pkg.MyDataset``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.contract import check_item, check_length
from experiments.errors import DataError

log = logging.getLogger(__name__)

#: datasets up to this size have their labels scanned when nothing else tells the class count
MAX_LABEL_SCAN = 10_000


class CustomDataModule(ClassificationDataModule):
    """Loaders, split and contract checks around datasets the user's code builds.

    Args:
        dataset: the training dataset (Hydra instantiates it from ``data.dataset``); val and test
            are carved from it (seeded) unless given.
        val_dataset, test_dataset: optional given splits.
        num_classes: the class count; ``None`` infers it from the dataset's ``classes`` or
            ``num_classes`` attribute, its ``targets``/``labels``, or (up to 10000 items) its labels.
        collate_fn: a collate function (a Hydra ``_partial_``), or ``None`` for PyTorch's default;
            its batches go through the same contract check.
        kwargs: the loader, split and transform options of :class:`ClassificationDataModule`.
    """

    def __init__(
        self,
        dataset: Dataset,
        val_dataset: Dataset | None = None,
        test_dataset: Dataset | None = None,
        num_classes: int | None = None,
        collate_fn: Callable[[list], Any] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for key, value in (("dataset", dataset), ("val_dataset", val_dataset), ("test_dataset", test_dataset)):
            if value is not None and not (hasattr(value, "__getitem__") and hasattr(value, "__len__")):
                raise DataError(
                    f"data.{key} built a {type(value).__name__}, not a Dataset: it needs __getitem__ and "
                    f"__len__ (give data.{key}._target_=your_module.YourDataset)"
                )
        if num_classes is not None and num_classes < 1:
            raise DataError(f"data.num_classes={num_classes} is invalid: expected an integer >= 1 (or null to infer)")
        self.dataset, self.val_dataset, self.test_dataset = dataset, val_dataset, test_dataset
        self._num_classes = num_classes
        self._collate = collate_fn
        self._input_shape: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = self._infer_num_classes()
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of the training dataset's first input (every input must share it)."""
        if self._input_shape is None:
            check_length(self.dataset, "train")
            x = check_item(self.dataset[0], "train item 0", self.num_classes)
            self._input_shape = tuple(x.shape)
        return self._input_shape

    def class_names(self) -> list[str]:
        classes = getattr(self.dataset, "classes", None)
        return [str(c) for c in classes] if classes is not None else super().class_names()

    def load_splits(self) -> tuple[Dataset, Dataset | None, Dataset | None]:
        return self.dataset, self.val_dataset, self.test_dataset

    def collate_fn(self) -> Callable[[list], Any] | None:
        return self._collate

    def _infer_num_classes(self) -> int:
        datasets = [d for d in (self.dataset, self.val_dataset, self.test_dataset) if d is not None]
        if isinstance(getattr(self.dataset, "num_classes", None), int):
            return self.dataset.num_classes
        if getattr(self.dataset, "classes", None) is not None:
            return len(self.dataset.classes)
        for attr in ("targets", "labels"):
            if all(getattr(d, attr, None) is not None for d in datasets):
                return 1 + max(int(torch.as_tensor(getattr(d, attr)).max()) for d in datasets)
        total = sum(check_length(d, "train") for d in datasets)
        if total > MAX_LABEL_SCAN:
            raise DataError(
                f"cannot tell the number of classes of {type(self.dataset).__name__} ({total} items): "
                "set data.num_classes=N, or give the dataset a `classes` list or a `targets` tensor"
            )
        labels = []
        for split, dataset in zip(("train", "val", "test"), (self.dataset, self.val_dataset, self.test_dataset)):
            for index in range(len(dataset) if dataset is not None else 0):
                item = dataset[index]
                check_item(item, f"{split} item {index}", num_classes=sys.maxsize)  # pair, tensor, label >= 0
                labels.append(int(item[1]))
        count = 1 + max(labels)
        log.info("data.num_classes inferred as %d from the labels of %d items", count, total)
        return count

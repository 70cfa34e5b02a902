"""The Dataset contract, checked before training and on every batch.

A dataset item is an ``(input, label)`` pair: ``input`` a ``torch.Tensor`` (dense or sparse) of the
same shape for every item, ``label`` an integer class index in ``[0, num_classes)``; ``__len__`` is
above 0. An unlabelled data set (a domain-adaptation target without class folders) gives every item
the label ``UNLABELLED`` (-1) instead. :func:`check_split` samples a few items of each split before the first epoch;
:class:`CheckedCollate` wraps the collate function (PyTorch's default or the user's) so a batch
that breaks the contract fails with the same message, naming the offending batch item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

from experiments.datamodules.transforms import CollatedBatch, TransformedDataset
from experiments.errors import DataError

Item = tuple[torch.Tensor, Any]

#: the label of every item of an unlabelled data set
UNLABELLED = -1


def check_length(dataset: Dataset, split: str) -> int:
    """``len(dataset)``, or DataError when it is 0 or the dataset has no ``__len__``."""
    try:
        n = len(dataset)
    except TypeError as err:
        raise DataError(f"the {split} dataset {type(dataset).__name__} has no __len__: {err}") from err
    if n == 0:
        raise DataError(
            f"the {split} dataset {_name(dataset)} has __len__ 0: it has no samples; "
            "check the dataset's arguments (path, files, filters)"
        )
    return n


def check_split(
    dataset: Dataset,
    split: str,
    num_classes: int,
    collate: Callable[[list], Any],
    n_samples: int = 8,
    seed: int = 0,
    labelled: bool = True,
) -> None:
    """Sample up to ``n_samples`` items of ``dataset`` (first, last, seeded others) and collate them.

    Raises DataError naming the split, the item index (and its index in the source dataset when
    the split is a subset) and the problem: a non-tensor input, a non-pair item, a label outside
    ``[0, num_classes)``, two items of different shapes, or a batch the collate function rejects.
    """
    n = check_length(dataset, split)
    generator = torch.Generator().manual_seed(seed)
    others = torch.randperm(n, generator=generator)[: max(0, n_samples - 2)].tolist()
    indices = sorted({0, n - 1, *others})
    items, first = [], None
    for index in indices:
        where = _where(dataset, split, index)
        if isinstance(dataset, TransformedDataset):  # the source's own item, before any transform
            check_item(_get(dataset.dataset, index, where), where, num_classes, labelled)
        item = _get(dataset, index, where)
        x = check_item(item, where, num_classes, labelled)
        if first is None:
            first = (where, x.shape)
        elif x.shape != first[1]:
            raise DataError(_shape_message(first[0], first[1], where, x.shape))
        items.append(item)
    collate(items[: min(len(items), 4)])


def check_item(item: Any, where: str, num_classes: int, labelled: bool = True) -> torch.Tensor:
    """The input tensor of ``item``; DataError if the item breaks the contract (``labelled=False``:
    the label must be ``UNLABELLED``)."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(
            f"{where} is a {_type(item)}: __getitem__ must return an (input tensor, label) pair"
        )
    x, label = item
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"{where} has an input of type {_type(x)}: __getitem__ must return a torch.Tensor "
            "(convert it with torch.as_tensor, or an image with torchvision.transforms.v2.functional.to_image)"
        )
    value = _label_value(label)
    if value is None:
        raise DataError(
            f"{where} has the label {label!r} of type {_type(label)}: expected an integer class index "
            "(int or an integer tensor with one element)"
        )
    if not labelled:
        if value != UNLABELLED:
            raise DataError(f"{where} has the label {value} in an unlabelled data set: its items carry {UNLABELLED}")
        return x
    if not 0 <= value < num_classes:
        raise DataError(
            f"{where} has the label {value}, outside [0, {num_classes}): labels must be class indices "
            f"0..{num_classes - 1}; remap the labels or set data.num_classes"
        )
    return x


class CheckedCollate:
    """A collate function (default: PyTorch's) whose batches are checked against the contract.

    When the collate function fails, the batch's items are checked one by one so the message names
    the offending item (ragged shapes, a non-tensor, a bad label) instead of a stacking error.
    Every batch's labels are range-checked (a cheap min/max). Picklable, so it runs in workers.
    """

    def __init__(self, num_classes: int, collate: Callable[[list], Any] | None = None, labelled: bool = True) -> None:
        self.num_classes = num_classes
        self.labelled = labelled
        self.collate = collate or default_collate

    @property
    def name(self) -> str:
        fn = getattr(self.collate, "func", self.collate)  # functools.partial from a _partial_ config
        return getattr(fn, "__qualname__", type(fn).__name__)

    def __call__(self, items: list) -> Any:
        if isinstance(items, CollatedBatch):  # fetched as one batch (Dataset.__getitems__)
            batch = list(items)
            self.check_batch(batch)
            return batch
        try:
            batch = self.collate(items)
        except DataError:
            raise
        except Exception as err:
            problem = self.diagnose(items)
            raise DataError(f"collate_fn {self.name} failed on a batch: {problem or f'{type(err).__name__}: {err}'}") from err
        self.check_batch(batch)
        return batch

    def diagnose(self, items: Sequence[Any]) -> str | None:
        """The first contract violation among ``items``, as a message, or None."""
        first = None
        for position, item in enumerate(items):
            where = f"batch item {position}"
            try:
                x = check_item(item, where, self.num_classes, self.labelled)
            except DataError as err:
                return str(err)
            if first is None:
                first = (where, x.shape)
            elif x.shape != first[1]:
                return _shape_message(first[0], first[1], where, x.shape)
        return None

    def check_batch(self, batch: Any) -> None:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(f"collate_fn {self.name} returned a {_type(batch)}: expected an (inputs, labels) pair")
        x, y = batch
        if not isinstance(x, torch.Tensor):
            raise DataError(f"collate_fn {self.name} returned inputs of type {_type(x)}: expected a torch.Tensor")
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise DataError(
                f"collate_fn {self.name} returned labels {_describe(y)}: expected a 1-D integer tensor of class indices"
            )
        if x.shape[0] != len(y):
            raise DataError(f"collate_fn {self.name} returned {x.shape[0]} inputs but {len(y)} labels")
        if not self.labelled:
            if (y != UNLABELLED).any():
                raise DataError(f"collate_fn {self.name} returned labels other than {UNLABELLED} for an unlabelled data set")
            return
        bad = ((y < 0) | (y >= self.num_classes)).nonzero()
        if len(bad):
            position = int(bad[0])
            raise DataError(
                f"batch item {position} has the label {int(y[position])}, outside [0, {self.num_classes}): "
                f"labels must be class indices 0..{self.num_classes - 1}; remap the labels or set data.num_classes"
            )


def source_index(dataset: Dataset, index: int) -> tuple[Dataset, int]:
    """Follow subsets and wrappers (anything with ``.dataset``) down to the source dataset."""
    while True:
        if isinstance(dataset, Subset):
            index = int(dataset.indices[index])
        inner = getattr(dataset, "dataset", None)
        if not isinstance(inner, Dataset):
            return dataset, index
        dataset = inner


def _where(dataset: Dataset, split: str, index: int) -> str:
    source, source_idx = source_index(dataset, index)
    where = f"{split} item {index}"
    if source_idx != index:
        where += f" (item {source_idx} of {_name(source)})"
    return where


def _get(dataset: Dataset, index: int, where: str) -> Any:
    try:
        return dataset[index]
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"reading {where} failed: {type(err).__name__}: {err}") from err


def _label_value(label: Any) -> int | None:
    if isinstance(label, bool):
        return None
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point() and label.dtype != torch.bool:
        return int(label)
    return None


def _shape_message(where_a: str, shape_a: torch.Size, where_b: str, shape_b: torch.Size) -> str:
    return (
        f"items have different shapes: {where_a} is {tuple(shape_a)} but {where_b} is {tuple(shape_b)}; "
        "every sample must have the same shape (images: set data.image_size to resize them)"
    )


def _type(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"of dtype {value.dtype} and shape {tuple(value.shape)}"
    return f"of type {_type(value)}"


def _name(dataset: Dataset) -> str:
    """The class name of the source dataset under any subsets or wrappers."""
    while isinstance(getattr(dataset, "dataset", None), Dataset):
        dataset = dataset.dataset
    return type(dataset).__name__

"""Choosing samples of an in-memory data set: a fixed domain partition, a class subset, N per class.

Shared by the options that hold their labels as one tensor (``digits``, ``digits_m``): every
function takes labels and returns indices (or new labels), so images and any side tensors follow
by indexing with the same indices. :class:`ClassSubsetMixin` gives such a DataModule
``data.classes`` (its ``num_classes`` and ``class_names``). Also for every data set: the labelled
validation limit (:func:`limit_labelled_split`) and the training order that is a pure function of
the epoch (:class:`EpochSeededRandomSampler`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch
from torch.utils.data import Dataset, RandomSampler, Subset

from experiments.config.rules import PARTITIONS
from experiments.errors import ConfigError

#: seed of the source/target partition: a constant, so the two halves never move with data.seed
PARTITION_SEED = 2_024_0611


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], generator: torch.Generator) -> list[torch.Tensor]:
    """Split the indices of ``labels`` into ``len(fractions)`` disjoint parts, class by class.

    Each class's members are shuffled with ``generator`` and cut at the rounded cumulative
    fractions, so every part holds about its share of every class. The fractions must sum to 1;
    the parts cover every index once and come back sorted.
    """
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions {list(fractions)} must sum to 1")
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for label in torch.unique(labels).tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        bounds, total = [0], 0.0
        for fraction in fractions:
            total += fraction
            bounds.append(round(total * len(members)))
        for part, (start, stop) in zip(parts, zip(bounds, bounds[1:])):
            part.append(members[start:stop])
    return [torch.sort(torch.cat(part)).values for part in parts]


def check_partition(partition: str) -> str:
    """``partition`` if it names a domain half (or ``all``); ConfigError otherwise."""
    if partition not in PARTITIONS:
        raise ConfigError(f"data.partition={partition!r} is invalid: expected one of {', '.join(PARTITIONS)}")
    return partition


def partition_indices(labels: torch.Tensor, partition: str) -> torch.Tensor:
    """The sorted indices of the ``source`` or ``target`` half of ``labels`` (``all``: every index).

    The halves are a stratified 50/50 split drawn from :data:`PARTITION_SEED`: disjoint, together
    every index, and the same in every run whatever the data seed.
    """
    check_partition(partition)
    if partition == "all":
        return torch.arange(len(labels))
    source, target = stratified_split(labels, (0.5, 0.5), torch.Generator().manual_seed(PARTITION_SEED))
    return source if partition == "source" else target


class ClassSelection:
    """The classes kept of a source (``data.classes``), relabelled ``0..K-1`` in the order given.

    Args:
        classes: indices into ``names`` to keep, e.g. ``[3, 7]``; None keeps every class.
        names: the source's class names; the kept ones keep their names (``['3', '7']``).

    Raises ConfigError (naming ``data.classes``) for an empty list, a repeated class or an index
    outside ``[0, len(names))``.
    """

    def __init__(self, classes: Sequence[int] | None, names: Sequence[str]) -> None:
        n = len(names)
        kept = list(range(n)) if classes is None else list(classes)
        if not kept or len(set(kept)) != len(kept) or not all(isinstance(c, int) and 0 <= c < n for c in kept):
            raise ConfigError(
                f"data.classes={kept!r} is invalid: expected null or a non-empty list of distinct class "
                f"indices in [0, {n}) (this data set's classes: {', '.join(names)})"
            )
        self.kept = kept
        self.names = [str(names[c]) for c in kept]
        self._table = torch.full((n,), -1, dtype=torch.long)
        self._table[torch.tensor(kept)] = torch.arange(len(kept))

    @property
    def num_classes(self) -> int:
        return len(self.kept)

    @property
    def keeps_all(self) -> bool:
        """True when every class is kept under its own index (nothing to select or relabel)."""
        return self.kept == list(range(len(self._table)))

    def select(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices of the samples of kept classes, their new labels)`` for source ``labels``."""
        new = self._table[labels]
        index = (new >= 0).nonzero().flatten()
        return index, new[index]


class ClassSubsetMixin:
    """Mixin of a DataModule whose source has fixed classes: ``num_classes`` and ``class_names``
    follow ``data.classes``. Put it before ClassificationDataModule in the bases; the class sets
    ``source_class_names`` and the instance ``self.classes`` (None: every class)."""

    source_class_names: Sequence[str] = ()
    classes: Sequence[int] | None = None

    @cached_property
    def selection(self) -> ClassSelection:
        """The kept classes, checked on first use (``num_classes``, right after instantiation), so
        a bad ``data.classes`` stops a run as a ConfigError rather than inside Hydra's wrapper."""
        return ClassSelection(self.classes, self.source_class_names)

    @property
    def num_classes(self) -> int:
        return self.selection.num_classes

    def class_names(self) -> list[str]:
        return self.selection.names


def limit_per_class(index: torch.Tensor, labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """The first ``n`` entries of ``index`` of each class of ``labels[index]``, shuffled together.

    Pass ``index`` in a random order for a random choice; the kept entries are shuffled with
    ``generator`` so classes interleave.
    """
    kept = [index[labels[index] == c][:n] for c in torch.unique(labels[index]).tolist()]
    index = torch.cat(kept)
    return index[torch.randperm(len(index), generator=generator)]


def limit_labelled_split(dataset: Dataset, n: int, generator: torch.Generator) -> Dataset:
    """At most ``n`` items of each class of ``dataset`` (a seeded draw, order kept). An in-memory
    dataset (a ``labels`` tensor) stays of its kind (its ``subset`` when it has one, else a new
    one from ``images``/``labels``), so its batched fetching and side tensors stay; any other is
    read item by item (validation splits are small) and wrapped in a ``Subset``."""
    labels = getattr(dataset, "labels", None)
    in_memory = isinstance(labels, torch.Tensor)
    if not in_memory:
        labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    order = torch.randperm(len(labels), generator=generator)
    kept = torch.sort(limit_per_class(order, labels, n, generator)).values
    if in_memory and hasattr(dataset, "subset"):
        return dataset.subset(kept)
    if in_memory and isinstance(getattr(dataset, "images", None), torch.Tensor):
        return type(dataset)(dataset.images[kept], labels[kept])
    return Subset(dataset, kept.tolist())


class EpochSeededRandomSampler(RandomSampler):
    """A new permutation every epoch, drawn from ``(seed, epoch)`` alone.

    PyTorch's RandomSampler draws from a generator whose state lives only in memory, so a run
    resumed from a checkpoint would see other batches than an uninterrupted one. Lightning calls
    ``set_epoch`` on the sampler before every epoch (as for DistributedSampler), which makes the
    order a pure function of the epoch: resumed runs replay the same batches.
    """

    def __init__(self, data_source, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()

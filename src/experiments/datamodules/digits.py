"""scikit-learn's bundled digits: 1797 grey 8x8 images of 10 classes, offline."""

from __future__ import annotations

import torch

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.selection import ClassSubsetMixin, check_partition, limit_per_class, partition_indices
from experiments.datamodules.transforms import TensorImageDataset

DIGIT_NAMES = [str(i) for i in range(10)]


def load_digit_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits: float images ``(N, 1, 8, 8)`` in [0, 1] and labels ``(N,)`` in 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(bunch.target, dtype=torch.long)


class DigitsDataModule(ClassSubsetMixin, ClassificationDataModule):
    """The embedded default data set (``data=digits``).

    Args:
        samples_per_class: keep at most this many training samples of each class (a seeded
            choice), for small-data experiments; ``None`` keeps all.
        train_fraction: keep this share of the training split (seeded), in (0, 1].
        partition: ``all`` digits, or the ``source`` or ``target`` half of a fixed, stratified
            50/50 partition (the same whatever ``seed``); train/val/test are split within it.
            ``data=digits_m`` is built from the target half.
        classes: keep only these digits, relabelled 0..K-1 in the order given (``[3, 7]``: class
            names ``['3', '7']``); ``None`` keeps all ten.
        channels: 1 (grey) or 3 (the grey value repeated, an RGB-shaped source for ``digits_m``).
        kwargs: the loader and split options of :class:`ClassificationDataModule`.
    """

    source_class_names = DIGIT_NAMES
    default_mean = (0.3,)
    default_std = (0.38,)

    def __init__(
        self,
        samples_per_class: int | None = None,
        train_fraction: float = 1.0,
        partition: str = "all",
        classes: list[int] | None = None,
        channels: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)  # values are checked by experiments.config.rules before this runs
        self.samples_per_class = samples_per_class
        self.train_fraction = train_fraction
        self.partition = check_partition(partition)
        self.classes = classes
        self.channels = channels

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.channels, 8, 8)

    def load_splits(self):
        images, labels = load_digit_tensors()
        index = partition_indices(labels, self.partition)
        kept, labels = self.selection.select(labels[index])
        images = images[index[kept]].expand(-1, self.channels, -1, -1)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(labels), generator=generator)
        n_test = round(len(labels) * self.test_fraction)
        n_val = round(len(labels) * self.val_fraction)
        test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        train_idx = self._shrink(train_idx, labels, generator)
        split = lambda idx: TensorImageDataset(images[idx], labels[idx])  # noqa: E731
        return split(train_idx), split(val_idx), split(test_idx)

    def _shrink(self, idx: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply ``train_fraction`` then ``samples_per_class`` to the training indices."""
        if self.train_fraction < 1:
            idx = idx[: max(1, round(len(idx) * self.train_fraction))]
        if self.samples_per_class is not None:
            idx = limit_per_class(idx, labels, self.samples_per_class, generator)
        return idx

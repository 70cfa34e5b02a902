"""scikit-learn's bundled digits: 1797 grey 8x8 images of 10 classes, offline."""

from __future__ import annotations

import torch

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.transforms import TensorImageDataset
from experiments.errors import ConfigError


class DigitsDataModule(ClassificationDataModule):
    """The embedded default data set (``data=digits``).

    Args:
        samples_per_class: keep at most this many training samples of each class (a seeded
            choice), for small-data experiments; ``None`` keeps all.
        train_fraction: keep this share of the training split (seeded), in (0, 1].
        kwargs: the loader and split options of :class:`ClassificationDataModule`.
    """

    default_mean = (0.3,)
    default_std = (0.38,)

    def __init__(self, samples_per_class: int | None = None, train_fraction: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if samples_per_class is not None and samples_per_class < 1:
            raise ConfigError(f"data.samples_per_class={samples_per_class} must be >= 1 (or null for all)")
        if not 0 < train_fraction <= 1:
            raise ConfigError(f"data.train_fraction={train_fraction} must be in (0, 1]")
        self.samples_per_class = samples_per_class
        self.train_fraction = train_fraction

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, 8, 8)

    def load_splits(self):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(bunch.target, dtype=torch.long)
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
            kept = [idx[labels[idx] == c][: self.samples_per_class] for c in range(self.num_classes)]
            idx = torch.cat(kept)[torch.randperm(sum(len(k) for k in kept), generator=generator)]
        return idx

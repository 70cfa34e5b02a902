"""Two domains for domain adaptation: a labelled source and a target (labels optional, only evaluated).

``data=da_pair`` nests two ordinary data options, ``data.source`` and ``data.target``; each keeps all
its own options (loaders, split, transforms). Training iterates both at once; validation and test
run the source loader, then the target loader when the target has labels.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, default_collate

from experiments.adapt.methods.base import DomainBatch
from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.device_augment import DeviceAugment
from experiments.datamodules.transforms import CollatedBatch, TransformedDataset
from experiments.config.domains import DOMAINS
from experiments.errors import ConfigError
from experiments.models.core import Preprocessing


class ImagesOnly(Dataset):
    """The inputs of an ``(input, label)`` dataset; the label is passed over, never read.

    With ``order_seed`` the items are served in a fixed seeded permutation: a sampler seeded like
    the source's then does not walk two equally long domains in lockstep (the demo's target holds
    the source's images inverted: batches would pair every image with its counterpart).
    """

    def __init__(self, dataset: Dataset, order_seed: int | None = None) -> None:
        self.dataset = dataset
        self.order = None
        if order_seed is not None:
            self.order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(order_seed)).tolist()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset[index if self.order is None else self.order[index]][0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor | list[torch.Tensor]:
        """A batch's images as one tensor when the dataset fetches batches at once (an in-memory
        target: one indexing and one transform per batch), else the images one by one."""
        if self.order is not None:
            indices = [self.order[i] for i in indices]
        fetch = getattr(self.dataset, "__getitems__", None)
        batch = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        return batch[0] if isinstance(batch, CollatedBatch) else [image for image, _ in batch]


def collate_images(images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """The collate of :class:`ImagesOnly`: a batch fetched at once passes through, items are stacked."""
    return images if isinstance(images, torch.Tensor) else default_collate(images)


class DomainPairDataModule(L.LightningDataModule):
    """A source and a target :class:`ClassificationDataModule` seen as one data module.

    Args:
        source: the labelled domain; ``num_classes`` and class names come from it.
        target: the domain to adapt to. Its training labels are read only when
            ``train_target_labels`` is set (the oracle, through the module builder); a target
            without labels (``has_labels`` false, e.g. an image folder without class folders) is
            trained on and never evaluated.
        name: for logs and results (default ``<source>-><target>``).
        mean, std: one normalisation for both domains (None: each domain its own statistics).
        device_augment: per-sample augmentation of the SOURCE's training batches on the device
            (``augment=digits`` with ``data=da_pair``); each domain's own ``device_augment``
            (``data.source.device_augment``, ``data.target.device_augment``) works as well.
        target_views: named augmentations of the target's training batches, built on the device
            beside the ``plain`` view (``{"weak": DeviceAugment, "strong": DeviceAugment}``); the
            yaml takes them from the method (``${adapt.views}``), which reads them by name.

    The two domains must give images of the same height and width (after ``image_size``) and the
    same number of classes; their channels may differ when one is grey: the model takes the larger
    count and grey images are repeated. Raises ConfigError otherwise.

    Training batches: ``{"source": (x, y), "target": x}`` (``(x, y)`` with target labels), from
    Lightning's ``CombinedLoader`` in ``max_size_cycle`` mode: an epoch runs through the longer
    domain once and cycles the shorter one. On the device they become a
    :class:`~experiments.adapt.methods.base.DomainBatch` (augmented source, target views).
    """

    is_domain_pair = True  # experiments.config.domains.is_domain_pair

    def __init__(self, source: ClassificationDataModule, target: ClassificationDataModule, name: str | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 device_augment: DeviceAugment | None = None,
                 target_views: dict[str, DeviceAugment] | None = None) -> None:
        super().__init__()
        self.source, self.target = source, target
        if device_augment is not None:
            if source.device_augment is not None:
                raise ConfigError("data.device_augment (augment=) and data.source.device_augment both augment the "
                                  "source: keep one")
            source.device_augment = device_augment
        self.target_views = dict(target_views or {})
        if "plain" in self.target_views:
            raise ConfigError("data.target_views.plain is the unaugmented target view: name the view otherwise")
        self.name = name or f"{source.name}->{target.name}"
        #: one normalisation for both domains when the model's weights prescribe none (null: each
        #: domain its own statistics, which already adapts the target's first moments)
        self.shared_stats = (tuple(mean), tuple(std)) if mean is not None and std is not None else None
        self.train_target_labels = False
        self._input_shape = self._check_domains()

    # -- what the pipeline reads ----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` that both domains' images have after their transforms."""
        return self._input_shape

    @property
    def target_has_labels(self) -> bool:
        return getattr(self.target, "has_labels", True)

    @property
    def train_is_deterministic(self) -> bool:
        return self.source.train_is_deterministic and self.target.train_is_deterministic

    @property
    def preprocessing(self) -> Preprocessing:
        return self.source.preprocessing

    def class_names(self) -> list[str]:
        return self.source.class_names()

    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        if self.shared_stats is not None and preprocessing.mean is None:
            preprocessing = dataclasses.replace(preprocessing, mean=self.shared_stats[0], std=self.shared_stats[1])
        self.source.set_preprocessing(preprocessing)
        self.target.set_preprocessing(preprocessing)

    def setup(self, stage: str | None = None) -> None:
        self.source.setup(stage)
        self.target.setup(stage)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch becomes a DomainBatch: the source with its augmentation, the target as
        named views (each domain's augmentation drawn from its own seeded generator)."""
        trainer = self.trainer
        if trainer is None or not trainer.training or not isinstance(batch, dict):
            return batch
        return as_domain_batch(batch, self, trainer.current_epoch, trainer.global_rank)

    # -- loaders ----------------------------------------------------------------------------------
    def train_dataloader(self) -> CombinedLoader:
        self.setup("fit")
        images = ImagesOnly(self.target.train_set, order_seed=self.target.seed + 1)
        target = (self.target.train_dataloader() if self.train_target_labels
                  else self.target.make_loader(images, train=True, collate_fn=collate_images))
        return CombinedLoader({"source": self.source.train_dataloader(), "target": target}, mode="max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        """The source's validation split and the target's: labelled, or a held-out share of the
        unlabelled target images (carved like any validation split), whose predictions alone feed
        the label-free validators (``val/target_im``, ``val/target_snd``, ...)."""
        return [self.source.val_dataloader(), self.target.val_dataloader()]

    @property
    def test_loader_names(self) -> list[str]:
        """The domains of the validation and test loaders, in order."""
        return list(DOMAINS) if self.target_has_labels else [DOMAINS[0]]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.source.test_dataloader(), *([self.target.test_dataloader()] if self.target_has_labels else [])]

    def predict_dataloader(self) -> DataLoader:
        """The target's test split (images only when it has no labels)."""
        if self.target_has_labels:
            return self.target.predict_dataloader()
        self.target.setup("predict")
        return self.target.make_loader(ImagesOnly(self.target.test_set), train=False, collate_fn=collate_images)

    def target_images(self) -> Iterator[torch.Tensor]:
        """Batches of the target's training images under the evaluation transforms, in order
        (what AdaBN estimates statistics on); labels are not read."""
        self.setup("fit")
        raw = self.target.train_set.dataset if isinstance(self.target.train_set, TransformedDataset) else self.target.train_set
        images = ImagesOnly(TransformedDataset(raw, self.target.build_transform(train=False)))
        return iter(self.target.make_loader(images, train=False, collate_fn=collate_images))

    # -- checks -----------------------------------------------------------------------------------
    def _check_domains(self) -> tuple[int, ...]:
        source_shape, target_shape = _shape_after_resize(self.source), _shape_after_resize(self.target)
        if len(source_shape) != 3 or len(target_shape) != 3:
            raise ConfigError(f"domain adaptation takes images (C, H, W): the source gives {source_shape}, "
                              f"the target {target_shape}")
        side = max(source_shape[-1], target_shape[-1])
        fix = f"resize both to one size, e.g. data.source.image_size={side} data.target.image_size={side}"
        by_model = [d.image_size == "model" for d in (self.source, self.target)]
        if any(by_model) and not all(by_model):
            raise ConfigError(f"data.source.image_size={self.source.image_size} but data.target.image_size="
                              f"{self.target.image_size}: give both the same size (both 'model', or {fix})")
        if source_shape[1:] != target_shape[1:] and not all(by_model):
            raise ConfigError(
                f"the source domain's images are {source_shape} (C, H, W) but the target's are {target_shape}: "
                f"both domains go through one network and must have the same size; {fix}"
            )
        channels = {source_shape[0], target_shape[0]}
        if len(channels) > 1 and 1 not in channels:
            raise ConfigError(
                f"the source domain's images have {source_shape[0]} channels, the target's {target_shape[0]}: "
                "only grey (1 channel) images can be matched to another count; convert one domain"
            )
        if self.target_has_labels and self.target.num_classes != self.source.num_classes:
            raise ConfigError(
                f"the source domain has {self.source.num_classes} classes ({self.source.name}) but the target "
                f"{self.target.num_classes} ({self.target.name}): adaptation needs the same label set in both; "
                "give the target the source's class folders (or none, to leave it unlabelled)"
            )
        if self.target_has_labels:
            self._check_class_names()
        return (max(channels), *source_shape[1:])

    def _check_class_names(self) -> None:
        """Class ``i`` must be the same class in both domains: their names must agree, in order.
        A target {cat, bird} against a source {cat, dog} would otherwise score bird as dog."""
        source, target = self.source.class_names(), self.target.class_names()
        if source == target:
            return
        if set(source) == set(target):
            raise ConfigError(
                f"the source domain's classes are {source} but the target's are {target}: the same names in "
                "another order, so class i would mean two things; give both domains the same order "
                "(e.g. data.source.classes and data.target.classes alike)"
            )
        only_source = sorted(set(source) - set(target))
        only_target = sorted(set(target) - set(source))
        raise ConfigError(
            f"the source domain's classes ({self.source.name}) are {source} but the target's ({self.target.name}) "
            f"are {target}: classes are matched by name, and the target's {only_target} are not in the source "
            f"(which has {only_source} instead); rename the target's class folders to the source's names (or remove "
            "them all, to leave the target unlabelled)"
        )


def as_domain_batch(batch: dict[str, Any], pair: DomainPairDataModule | None = None, epoch: int = 0,
                    rank: int = 0) -> DomainBatch:
    """``{"source": (x, y), "target": x or (x, y)}`` as a :class:`DomainBatch`; with ``pair`` its
    domains' device augmentations and target views are applied, without it the target has only its
    ``plain`` view (a loader given to ``Trainer.fit`` directly)."""
    source_x, source_y = batch["source"]
    target = batch["target"]
    target_x, target_y = target if isinstance(target, (tuple, list)) else (target, None)
    views = {}
    if pair is not None:
        if pair.source.device_augment is not None:
            source_x = pair.source.augment_on_device(pair.source.device_augment, source_x, epoch, rank)
        if pair.target.device_augment is not None:
            target_x = pair.target.augment_on_device(pair.target.device_augment, target_x, epoch, rank, stream=1)
        views = {name: pair.target.augment_on_device(augment, target_x, epoch, rank, stream=1)
                 for name, augment in pair.target_views.items()}
    return DomainBatch(source_x, source_y, {"plain": target_x, **views}, target_y)


def _shape_after_resize(data: ClassificationDataModule) -> tuple[int, ...]:
    """``input_shape`` with ``image_size`` applied (``"model"``: the same for both domains, kept)."""
    shape = tuple(data.input_shape)
    size = data.image_size
    if size in (None, "model") or len(shape) != 3:
        return shape
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in list(size)[-2:])
    return (shape[0], *hw)

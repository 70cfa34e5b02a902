"""Cached-feature fast path: while the backbone is frozen, train the head on features computed once.

A frozen backbone in eval mode maps each (deterministically transformed) sample to the same
feature vector every epoch, so recomputing it is waste: compute the features once under
``Trainer.predict`` (eval mode, inference mode, the configured device and precision), then feed
(features, label) batches to the head. The path is taken only when it gives the same result as the
uncached one:

* the strategy freezes the whole backbone for some leading epochs (classifier_only: all of them;
  lp_ft: the probe stage),
* the training transforms are deterministic (no random augmentation),
* frozen BatchNorm does not train (``finetune.train_bn=false``).

During cached epochs the ClassificationModule runs only its head (``features_input``); the
loaders switch back to images when the backbone thaws.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.domain_pair import DomainPairDataModule
from experiments.errors import FinetuneError
from experiments.finetune.strategies import FinetuneStrategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachePlan:
    """Whether the fast path runs, for how many leading epochs, and why (or why not)."""

    used: bool
    epochs: int
    reason: str

    def as_dict(self) -> dict:
        return {"used": self.used, "epochs": self.epochs, "reason": self.reason}


def plan_feature_cache(strategy: FinetuneStrategy, datamodule: ClassificationDataModule, max_epochs: int) -> CachePlan:
    """Decide the path from ``finetune.cache_features`` (auto | true | false) and validity."""
    setting = str(strategy.cache_features).lower()
    frozen_epochs = strategy.frozen_backbone_epochs(max_epochs)
    if setting == "false":
        return CachePlan(False, 0, "finetune.cache_features=false")
    problems = []
    if isinstance(datamodule, DomainPairDataModule):
        problems.append("domain adaptation trains through the backbone on both domains (data is a domain pair)")
    if frozen_epochs == 0:
        problems.append(f"finetune={strategy.name} trains backbone blocks from the first epoch")
    if not datamodule.train_is_deterministic:
        problems.append("data.train_transforms has random augmentation (features differ every epoch)")
    if strategy.train_bn:
        problems.append("finetune.train_bn=true updates BatchNorm statistics while training")
    if problems:
        reason = "; ".join(problems)
        if setting == "true":
            raise FinetuneError(f"finetune.cache_features=true cannot apply: {reason}; use auto or false")
        return CachePlan(False, 0, reason)
    return CachePlan(True, frozen_epochs, f"backbone frozen for epochs 0-{frozen_epochs - 1}, deterministic inputs")


class _FeatureExtractor(L.LightningModule):
    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def predict_step(self, batch, batch_idx: int):
        x, y = batch
        return self.backbone(x).float(), y


def extract_features(trainer_kwargs: dict, backbone: torch.nn.Module, loader: DataLoader) -> TensorDataset:
    """Features of every sample of ``loader`` under ``Trainer.predict`` (eval + inference mode)."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[], **trainer_kwargs)
    # A loader iterator draws its base seed from the global RNG: fork it so the cached path leaves
    # the training shuffle order exactly as the uncached path has it.
    with torch.random.fork_rng(devices=[]):
        outputs = trainer.predict(_FeatureExtractor(backbone), dataloaders=loader)
    features = torch.cat([f for f, _ in outputs]).cpu()
    labels = torch.cat([torch.as_tensor(y) for _, y in outputs]).cpu()
    return TensorDataset(features, labels)


class CachedFeatureDataModule(L.LightningDataModule):
    """Serves cached features while ``current_epoch < epochs``, then the wrapped images.

    Train and validation features are computed on first use. Loaders come from the wrapped module's ``make_loader`` (batch size, sampler, drop_last), so the
    head sees the same batches in the same order as on the uncached path.
    """

    def __init__(self, inner: ClassificationDataModule, backbone: torch.nn.Module, epochs: int, trainer_kwargs: dict) -> None:
        super().__init__()
        self.inner = inner
        self.backbone = backbone
        self.epochs = epochs
        self.trainer_kwargs = trainer_kwargs
        self._train: TensorDataset | None = None
        self._val: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    def _cached(self) -> bool:
        trainer = self.trainer
        return trainer is None or trainer.current_epoch < self.epochs


    def extract(self) -> None:
        """Backbone features of the train and val splits (the backbone's frozen weights at start
        are the ones every cached epoch sees, resumed runs included)."""
        self.inner.setup("fit")
        train_in_order = self.inner.make_loader(self.inner.train_set, train=False)
        self._train = extract_features(self.trainer_kwargs, self.backbone, train_in_order)
        self._val = extract_features(self.trainer_kwargs, self.backbone, self.inner.val_dataloader())

    def train_dataloader(self) -> DataLoader:
        if not self._cached():
            return self.inner.train_dataloader()
        assert self._train is not None, "call extract() before fit"
        return self.inner.make_loader(self._train, train=True)

    def val_dataloader(self) -> DataLoader:
        if not self._cached():
            return self.inner.val_dataloader()
        assert self._val is not None, "call extract() before fit"
        return self.inner.make_loader(self._val, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.inner.test_dataloader()


class FeatureInputCallback(L.Callback):
    """Tells the module whether a batch holds cached features (head only) or images."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def _set(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.features_input = trainer.current_epoch < self.epochs

    on_train_epoch_start = _set
    on_validation_start = _set

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.features_input = False

"""Cached-feature fast path: while the backbone is frozen, train the head on features computed once.

A frozen backbone in eval mode maps each (deterministically transformed) sample to the same
feature vector every epoch, so recomputing it is waste: compute the features once under
``Trainer.predict`` (eval mode, inference mode, the configured device and precision), then feed
(features, label) batches to the head. The path is taken only when it gives the same result as the
uncached one:

* the strategy freezes the whole backbone, unmodified, for some leading epochs (classifier_only:
  all of them; lp_ft: the probe stage; never BitFit, norm tuning or LoRA, whose backbone
  parameters or adapters train from the first step),
* the training transforms are deterministic (no random augmentation),
* frozen BatchNorm does not train (``finetune.train_bn=false``).

During cached epochs the LightningModule runs only its head (``read_cached_features``); the
loaders switch back to inputs when the backbone thaws. :class:`FeatureCache` is the one object the
pipeline talks to.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from experiments.datamodules.base import ClassificationDataModule
from experiments.config.domains import is_domain_pair
from experiments.datamodules.transforms import TensorImageDataset
from experiments.errors import FinetuneError
from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachePlan:
    """Whether the fast path runs, for how many leading epochs, and why (or why not)."""

    used: bool
    epochs: int
    reason: str


def plan_feature_cache(strategy: FinetuneStrategy, datamodule: ClassificationDataModule, max_epochs: int,
                       n_blocks: int) -> CachePlan:
    """Decide the path from ``finetune.cache_features`` (auto | true | false) and validity, for a
    model of ``n_blocks`` blocks."""
    setting = str(strategy.cache_features).lower()
    frozen_epochs = strategy.frozen_backbone_epochs(max_epochs, n_blocks)
    if setting == "false":
        return CachePlan(False, 0, "finetune.cache_features=false")
    problems = []
    if is_domain_pair(datamodule):
        problems.append("domain adaptation trains through the backbone on both domains (data is a domain pair)")
    if frozen_epochs == 0:
        problems.append(f"finetune={strategy.name} trains backbone parameters (or adapters) from the first epoch")
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


class FeatureCache:
    """The cached-feature path of one run, in one object.

    It hands the pipeline the datamodule to fit on, the callbacks and the trainer settings the
    path needs (none when the plan says no), and its record for results.json.
    """

    def __init__(self, strategy: FinetuneStrategy, datamodule: ClassificationDataModule, model: TransferModel,
                 trainer_cfg: Mapping[str, Any]) -> None:
        self.max_epochs = int(trainer_cfg["max_epochs"])
        self.plan = plan_feature_cache(strategy, datamodule, self.max_epochs, len(model.blocks))
        self.head_fit = getattr(strategy, "head_fit", "none")
        self.head_fit_record: dict[str, Any] | None = None
        self.datamodule = datamodule
        self.model = model
        # the extraction runs where training will run, on one device
        self.device = {k: trainer_cfg[k] for k in ("accelerator", "precision") if k in trainer_cfg}
        log.info("feature cache: %s (%s)", "on" if self.plan.used else "off", self.plan.reason)

    def fit_datamodule(self) -> L.LightningDataModule:
        """What ``Trainer.fit`` gets: cached features for the frozen epochs, or the data itself.

        Features are extracted here, before fit: a Trainer nested inside fit would move the model
        between devices at its teardown.
        """
        if not self.plan.used:
            return self.datamodule
        cached = CachedFeatureDataModule(self.datamodule, self.model, self.plan.epochs, {**self.device, "devices": 1})
        cached.extract()
        if self.head_fit == "lbfgs":
            self._fit_head(cached)
        return cached

    def _fit_head(self, cached: CachedFeatureDataModule) -> None:
        """The head fitted to convergence on the cached features (finetune.head_fit=lbfgs)."""
        from experiments.finetune.head_fit import fit_linear_head

        try:
            fit = fit_linear_head(self.model.head, cached.train_features.tensors, cached.val_features.tensors)
        except ValueError as err:  # a head that is not one linear layer: the epochs train it
            log.warning("finetune.head_fit=lbfgs skipped: %s", err)
            self.head_fit_record = {"method": "none", "reason": str(err)}
            return
        self.head_fit_record = fit.record()
        log.info("head fitted on cached features (L-BFGS, l2=%g chosen on validation): train acc %.3f, val acc %s, %.2fs",
                 fit.l2, fit.train_acc, "-" if fit.val_acc is None else f"{fit.val_acc:.3f}", fit.seconds)

    def callbacks(self) -> list[L.Callback]:
        return [FeatureInputCallback(self.plan.epochs)] if self.plan.used else []

    def trainer_settings(self) -> dict[str, Any]:
        """Loaders are re-requested every epoch when the path switches from features to inputs."""
        switches = self.plan.used and self.plan.epochs < self.max_epochs
        return {"reload_dataloaders_every_n_epochs": 1} if switches else {}

    def record(self) -> dict[str, Any]:
        out = {"used": self.plan.used, "epochs": self.plan.epochs, "reason": self.plan.reason}
        if self.head_fit == "lbfgs":
            out["head_fit"] = self.head_fit_record or {"method": "none", "reason": f"no cached features: {self.plan.reason}"}
        return out


class _FeatureExtractor(L.LightningModule):
    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model

    def predict_step(self, batch, batch_idx: int):
        x, y = batch
        return self.model.forward_features(x).float(), y


def extract_features(trainer_kwargs: dict, model: TransferModel, loader: DataLoader) -> TensorImageDataset:
    """Features of every sample of ``loader`` under ``Trainer.predict`` (eval + inference mode)."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[], **trainer_kwargs)
    # A loader iterator draws its base seed from the global RNG: fork it so the cached path leaves
    # the training shuffle order exactly as the uncached path has it.
    with torch.random.fork_rng(devices=[]):
        outputs = trainer.predict(_FeatureExtractor(model), dataloaders=loader)
    features = torch.cat([f for f, _ in outputs]).cpu()
    labels = torch.cat([torch.as_tensor(y) for _, y in outputs]).cpu()
    return TensorImageDataset(features, labels)  # fetched a batch at a time


class CachedFeatureDataModule(L.LightningDataModule):
    """Serves cached features while ``current_epoch < epochs``, then the wrapped images.

    Train and validation features are computed on first use. Loaders come from the wrapped module's ``make_loader`` (batch size, sampler, drop_last), so the
    head sees the same batches in the same order as on the uncached path.
    """

    def __init__(self, inner: ClassificationDataModule, model: TransferModel, epochs: int, trainer_kwargs: dict) -> None:
        super().__init__()
        self.inner = inner
        self.model = model
        self.epochs = epochs
        self.trainer_kwargs = trainer_kwargs
        self._train: TensorImageDataset | None = None
        self._val: TensorImageDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    @property
    def train_features(self) -> TensorImageDataset:
        assert self._train is not None, "call extract() first"
        return self._train

    @property
    def val_features(self) -> TensorImageDataset:
        assert self._val is not None, "call extract() first"
        return self._val

    def _cached(self) -> bool:
        trainer = self.trainer
        return trainer is None or trainer.current_epoch < self.epochs

    def extract(self) -> None:
        """Backbone features of the train and val splits (the backbone's frozen weights at start
        are the ones every cached epoch sees, resumed runs included)."""
        self.inner.setup("fit")
        train_in_order = self.inner.make_loader(self.inner.train_set, train=False)
        self._train = extract_features(self.trainer_kwargs, self.model, train_in_order)
        self._val = extract_features(self.trainer_kwargs, self.model, self.inner.val_dataloader())

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
    """Switches the module to features (head only) during cached fit epochs, to inputs otherwise.

    Decided from the trainer's state, not the configured epochs: a run that stops early
    (``max_steps``, ``fast_dev_run``, early stopping) validates and tests on inputs afterwards.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def _set(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        pl_module.read_cached_features(fitting and trainer.current_epoch < self.epochs)

    on_train_epoch_start = _set
    on_validation_start = _set
    on_test_start = _set
    on_predict_start = _set

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.read_cached_features(False)

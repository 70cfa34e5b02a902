"""The one place that picks the LightningModule: classification, or domain adaptation when
``adapt=`` names a method. ``train.build_components`` calls it, so every mode (train, test,
predict) rebuilds the module a checkpoint came from."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from experiments.adapt.methods.base import AdaptationMethod
from experiments.datamodules.domain_pair import DomainPairDataModule
from experiments.errors import ConfigError
from experiments.finetune.strategies import FinetuneStrategy
from experiments.lightningmodules.classification import ClassificationModule
from experiments.lightningmodules.domain_adaptation import DomainAdaptationModule
from experiments.models.core import TransferModel


def build_module(cfg: DictConfig, model: TransferModel, datamodule, strategy: FinetuneStrategy) -> ClassificationModule:
    """A :class:`DomainAdaptationModule` when ``cfg.adapt`` is set, else a :class:`ClassificationModule`.

    Also tells a domain pair whether its target's training labels may be read (only for a method
    that trains on them, the oracle). Raises ConfigError when the data and ``adapt`` do not fit:
    a method without two domains, two domains without a method, an oracle without target labels.
    """
    common = dict(
        num_classes=datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
        finetune=strategy,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        max_epochs=cfg.trainer.max_epochs,
    )
    is_pair = isinstance(datamodule, DomainPairDataModule)
    data_name = getattr(datamodule, "name", type(datamodule).__name__)
    if cfg.get("adapt") is None:
        if is_pair:
            raise ConfigError(f"data={data_name} holds a source and a target domain but adapt is null: choose a "
                              "method, e.g. adapt=dann (adapt=source_only for the baseline)")
        if not getattr(datamodule, "has_labels", True):
            raise ConfigError(f"data={data_name} has no labels (no class folders): it can only be the target of "
                              "a domain adaptation (data=da_folders data.target.root=DIR adapt=dann)")
        return ClassificationModule(model, **common)
    method: AdaptationMethod = instantiate(cfg.adapt)
    if not is_pair:
        raise ConfigError(f"adapt={method.name} needs a source and a target domain but data={data_name} is one "
                          "data set: use data=da_pair (data.source / data.target) or data=da_folders")
    if method.uses_target_labels and not datamodule.target_has_labels:
        raise ConfigError(f"adapt={method.name} trains on target labels but the target {datamodule.target.name} has "
                          "none (no class folders); choose a method that needs no target labels, e.g. adapt=dann")
    datamodule.train_target_labels = method.uses_target_labels
    return DomainAdaptationModule(model, adapt=method, **common)

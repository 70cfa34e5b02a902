"""The training pipeline: compose -> instantiate -> fit -> test the best checkpoint -> record.

Imported only after the config has been validated (it pulls in torch and Lightning).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.datamodules.base import ClassificationDataModule
from experiments.finetune.cache import CachedFeatureDataModule, CachePlan, FeatureInputCallback, plan_feature_cache
from experiments.finetune.callback import FinetuneCallback, count_parameters
from experiments.finetune.strategies import FinetuneStrategy
from experiments.lightningmodules.build import build_module
from experiments.lightningmodules.classification import ClassificationModule
from experiments.models.core import TransferModel
from experiments.reporting.hparams import hparams_of

log = logging.getLogger(__name__)

# Lightning adds its own console handlers; route its records through Hydra's handlers instead,
# so they land once on the console and in the job's log file.
for _name in ("lightning", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).handlers.clear()
    logging.getLogger(_name).propagate = True


def build_model(cfg: DictConfig, datamodule: ClassificationDataModule, strategy: FinetuneStrategy) -> TransferModel:
    """The configured model, its head sized from the data; scratch never loads weights."""
    overrides: dict[str, Any] = {}
    if not strategy.uses_pretrained and (cfg.model.get("pretrained") or cfg.model.get("weights")):
        log.warning("finetune=%s starts from random init: model.pretrained/model.weights ignored", strategy.name)
        overrides = {"pretrained": False, "weights": None}
    channels, *hw = datamodule.input_shape
    model = instantiate(cfg.model)(
        num_classes=datamodule.num_classes, in_chans=channels, input_hw=tuple(hw) or None, **overrides
    )
    if strategy.uses_pretrained and strategy.max_depth(cfg.trainer.max_epochs) < len(model.blocks) and model.info.weights == "random":
        log.warning(
            "finetune=%s freezes blocks of a randomly initialised %s: frozen random features rarely "
            "transfer; set model.pretrained=true or model.weights=PATH",
            strategy.name, model.info.name,
        )
    return model


def build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback], reload_each_epoch: bool = False) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    extra = {"reload_dataloaders_every_n_epochs": 1} if reload_each_epoch else {}
    return instantiate(cfg.trainer, callbacks=callbacks + extra_callbacks, logger=loggers or False, **extra)


def with_feature_cache(
    cfg: DictConfig, datamodule: ClassificationDataModule, model: TransferModel, cache: CachePlan
) -> tuple[L.LightningDataModule, list[L.Callback]]:
    """The data to fit on and the callbacks the cached-feature path needs (none when off)."""
    if not cache.used:
        return datamodule, []
    device = {k: cfg.trainer[k] for k in ("accelerator", "precision") if k in cfg.trainer}
    cached = CachedFeatureDataModule(datamodule, model.backbone, cache.epochs, {**device, "devices": 1})
    cached.extract()
    return cached, [FeatureInputCallback(cache.epochs)]


def best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback else ""
    return path or None


def build_components(
    cfg: DictConfig,
) -> tuple[FinetuneStrategy, ClassificationDataModule, TransferModel, ClassificationModule]:
    """Seeded: the strategy, the data, the model sized from it and the LightningModule around it.

    Every mode builds through here, so a checkpoint's state_dict always meets the module it came from.
    """
    L.seed_everything(cfg.seed, workers=True)
    strategy: FinetuneStrategy = instantiate(cfg.finetune)
    datamodule: ClassificationDataModule = instantiate(cfg.data)
    model = build_model(cfg, datamodule, strategy)
    strategy.validate(len(model.blocks), cfg.trainer.max_epochs)
    datamodule.set_preprocessing(model.preprocessing)

    module = build_module(cfg, model, datamodule, strategy)  # classification, or domain adaptation (adapt=)
    return strategy, datamodule, model, module


def run_facts(model: TransferModel, module: ClassificationModule, datamodule: ClassificationDataModule) -> dict[str, Any]:
    """What a run ran on (model, weights, strategy, parameter counts, data): part of every record."""
    return {
        "model": model.info.name,
        "model_family": model.info.family,
        "weights": model.info.weights,
        "finetune": module.finetune.name,
        "params": count_parameters(model, module.param_groups()),
        "data": {"name": datamodule.name, "num_classes": datamodule.num_classes, "input_shape": list(datamodule.input_shape)},
    }


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Fit and test one configured run; returns the results record (status ``ok``)."""
    start = time.time()
    strategy, datamodule, model, module = build_components(cfg)
    finetune_callback = FinetuneCallback(strategy, module.base_lr)
    cache = plan_feature_cache(strategy, datamodule, cfg.trainer.max_epochs)
    log.info("feature cache: %s (%s)", "on" if cache.used else "off", cache.reason)
    fit_data, extra = with_feature_cache(cfg, datamodule, model, cache)
    trainer = build_trainer(cfg, [finetune_callback, *extra], reload_each_epoch=cache.used and cache.epochs < cfg.trainer.max_epochs)
    log_config(trainer, cfg)

    # every checkpoint load is tensors-only: a checkpoint file cannot run code
    trainer.fit(module, datamodule=fit_data, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    best = best_checkpoint(trainer)
    val = trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
    test = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)

    metrics = {k: float(v) for k, v in {**val[0], **test[0]}.items()}
    return {
        "status": "ok",
        "metrics": metrics,
        **run_facts(model, module, datamodule),
        "epochs": trainer.current_epoch,
        "wall_time_s": time.time() - start,
        "best_checkpoint": best,
        "finetune_detail": {
            **finetune_callback.summary(model, trainer.optimizers[0] if trainer.optimizers else None),
            "feature_cache": cache.as_dict(),
        },
    }


def log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The resolved config as text in TensorBoard, so a run's settings sit beside its curves, and as
    the loggers' hyperparameters (TensorBoard's HPARAMS tab gets the final metrics after testing)."""
    params = hparams_of(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            text = OmegaConf.to_yaml(cfg, resolve=True)
            experiment.add_text("config", "```\n" + text + "\n```", 0)


"""Builders every task shares: data, model, strategy, LightningModule, Trainer, and the evaluation.

Imported only after the config has been validated (it pulls in torch and Lightning). A checkpoint's
state_dict always meets the module it came from, because every task builds through
:func:`build_components`.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.checkpoints import AtomicCheckpointIO, BackgroundCheckpointIO
from experiments.datamodules.base import ClassificationDataModule
from experiments.errors import ConfigError, DataError, ModelError
from experiments.finetune.advice import Advice
from experiments.finetune.groups import count_parameters
from experiments.finetune.strategies import Auto, FinetuneStrategy
from experiments.models.core import TransferModel, create_model
from experiments.reporting.hparams import hparams_of
from experiments.reporting.sinks import log_text
from experiments.values import accepted_kwargs

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What one run is made of, built from its config."""

    strategy: FinetuneStrategy
    datamodule: ClassificationDataModule
    model: TransferModel
    module: L.LightningModule
    #: finetune=auto: what was measured and why ``strategy`` was chosen
    advice: Advice | None = None


def model_from_config(model_cfg: DictConfig, num_classes: int, input_shape: tuple[int, ...],
                      use_weights: bool = True) -> TransferModel:
    """A TransferModel from a ``model=`` config, for data of ``input_shape`` and ``num_classes``.

    The family builder (a ``_partial_``) gets ``num_classes``, ``in_chans`` and ``input_hw`` where
    its signature names them and returns a :class:`~experiments.models.core.ModelSpec`;
    :func:`create_model` sizes the head and loads ``model.weights`` for every family alike.
    ``use_weights=False`` builds from random init (no pretrained weights, no weights file).
    """
    params = OmegaConf.to_container(model_cfg, resolve=True)
    weights = params.pop("weights", None)
    if not use_weights:
        weights = None
    if not use_weights and "pretrained" in params:
        params["pretrained"] = False
    factory = instantiate(params)
    channels, *hw = input_shape
    offered = {"num_classes": num_classes, "in_chans": channels, "input_hw": tuple(hw) or None}
    return create_model(factory(**accepted_kwargs(factory, through_kwargs=False, **offered)), num_classes, weights)


def build_model(cfg: DictConfig, datamodule: ClassificationDataModule, strategy: FinetuneStrategy) -> TransferModel:
    """The configured model, its head sized from the data; scratch never loads weights."""
    use_weights = strategy.uses_pretrained
    if not use_weights and (cfg.model.get("pretrained") or cfg.model.get("weights")):
        log.warning("finetune=%s starts from random init: model.pretrained/model.weights ignored", strategy.name)
    model = model_from_config(cfg.model, datamodule.num_classes, tuple(datamodule.input_shape), use_weights)
    if len(datamodule.input_shape) == 1 and getattr(model.preprocessing, "tokenizer", None) is None:
        check_takes_vectors(model, datamodule)
    frozen_somewhere = strategy.max_depth(cfg.trainer.max_epochs) < len(model.blocks)
    if use_weights and frozen_somewhere and model.info.weights == "random":
        log.warning(
            "finetune=%s freezes blocks of a randomly initialised %s: frozen random features rarely "
            "transfer; set model.pretrained=true or model.weights=PATH",
            strategy.name, model.info.name,
        )
    return model


def check_takes_vectors(model: TransferModel, datamodule: ClassificationDataModule) -> None:
    """ModelError when feature-vector data (sparse rows, TF-IDF) meets a model for images: one
    forward pass of two zero vectors, batched as the data batches them (sparse layouts included),
    says it before training instead of a conv2d shape error."""
    import torch

    collate = datamodule.collate_fn()
    features = datamodule.input_shape[0]
    if getattr(collate, "layout", None):  # sparse batches (SparseCollate): probe in the same layout
        probe = collate([(torch.zeros(features).to_sparse(), 0)] * 2)[0]
    else:
        probe = torch.zeros(2, features)
    try:
        with torch.no_grad():
            model.eval()(probe)
    except RuntimeError as err:
        raise ModelError(
            f"model {model.info.name} cannot take data={datamodule.name}'s items, vectors of "
            f"{features} features ({str(err).splitlines()[0]}): use model=sparse_mlp, "
            "which takes sparse and dense feature vectors"
        ) from err
    finally:
        model.train()


def build_components(cfg: DictConfig, strategy: FinetuneStrategy | None = None) -> Components:
    """Seeded: the strategy (``cfg.finetune`` unless given), the data, the model sized from it and
    the LightningModule around it.

    ``finetune=auto`` measures the run here and is replaced by the strategy it chooses before the
    module is built (:func:`build_chosen`).
    """
    L.seed_everything(cfg.seed, workers=True)
    strategy = strategy or instantiate(cfg.finetune)
    datamodule: ClassificationDataModule = instantiate(cfg.data)
    model = build_model(cfg, datamodule, strategy)
    datamodule.set_preprocessing(model.preprocessing)
    if isinstance(strategy, Auto):
        return build_chosen(cfg, strategy, datamodule, model)
    return assemble(cfg, strategy, datamodule, model)


def assemble(cfg: DictConfig, strategy: FinetuneStrategy, datamodule: ClassificationDataModule,
             model: TransferModel) -> Components:
    """The LightningModule that trains ``model`` with ``strategy``, checked against the data."""
    strategy.validate(cfg.trainer.max_epochs, n_blocks=len(model.blocks))
    if datamodule.num_classes < 2:
        raise DataError(
            f"data={datamodule.name} has {datamodule.num_classes} class(es) ({datamodule.class_names()}): "
            "classification needs at least 2; check data.classes or the class folders under data.root"
        )
    for key in ("optimizer", "scheduler"):
        if cfg.get(key):
            check_arguments(key, cfg[key])
    module = instantiate(cfg.module)(
        model=model,
        num_classes=datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
        finetune=strategy,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        max_epochs=cfg.trainer.max_epochs,
    )
    module.check_data(datamodule)  # classification or domain adaptation (adapt= selects module=)
    if cfg.mode == "train":
        check_objective(str(cfg.objective), module.epoch_metrics())
    return Components(strategy, datamodule, model, module)


def check_arguments(key: str, node: DictConfig) -> None:
    """ConfigError when ``node`` (a ``_target_`` config) sets a keyword its target does not take,
    e.g. ``+optimizer.momentum`` on AdamW: said before training instead of a TypeError after."""
    target = get_object(str(node._target_))
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for name in node:
        if not str(name).startswith("_") and name not in params:
            takes = ", ".join(p for p in params if p not in ("params", "optimizer", "self"))
            raise ConfigError(
                f"{key}.{name} is not an argument of {node._target_} (it takes: {takes}); remove it "
                f"(~{key}.{name}) or choose another {key} that has it" + (" (optimizer=sgd)" if name == "momentum" else "")
            )


def check_objective(objective: str, logged: set[str]) -> None:
    """The objective (checkpoint selection, sweeps) must be a metric the run logs every epoch."""
    if objective not in logged:
        raise ConfigError(
            f"objective={objective} is not a metric this run logs; choose one of {sorted(logged)} "
            "(val/ metrics select without touching the test split)"
        )


def build_chosen(cfg: DictConfig, auto: Auto, datamodule: ClassificationDataModule, model: TransferModel) -> Components:
    """``finetune=auto``: measure the run, then build it with the strategy the advisor chose.

    Measuring changes neither the weights nor the random state, so a pretrained choice trains the
    very model and data a run with that strategy named would; ``scratch`` is built afresh (random
    init, the data's own normalisation), exactly as ``finetune=scratch`` builds it.
    """
    from experiments.finetune.advisor import advise

    advice = advise(auto, datamodule, model, cfg.trainer)
    chosen = advice.build_strategy()
    if chosen.uses_pretrained:
        parts = assemble(cfg, chosen, datamodule, model)
    else:
        parts = build_components(cfg, chosen)
    return replace(parts, advice=advice)


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback] = (), **settings: Any) -> L.Trainer:
    """The configured Trainer with the configured callbacks and loggers, plus ``callbacks`` and
    ``settings`` (Trainer arguments) that a task adds."""
    configured = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    background = bool(OmegaConf.select(cfg, "checkpoint.background", default=False))
    settings.setdefault("plugins", [BackgroundCheckpointIO() if background else AtomicCheckpointIO()])
    return instantiate(cfg.trainer, callbacks=[*configured, *callbacks], logger=loggers or False, **settings)


def evaluate(trainer: L.Trainer, parts: Components, ckpt_path: str | None) -> dict[str, float]:
    """Validation then test metrics of ``ckpt_path`` (None: the weights in memory), merged.

    Validation runs on its own before the test, so its metrics are the checkpoint's, not the last
    training epoch's. Checkpoints load tensors-only: a checkpoint file cannot run code.
    """
    metrics: dict[str, float] = {}
    for run in (trainer.validate, trainer.test):
        outputs = run(parts.module, datamodule=parts.datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
        metrics.update({k: float(v) for output in outputs for k, v in output.items()})
    return metrics


def run_facts(parts: Components) -> dict[str, Any]:
    """What a run ran on (model, weights, strategy, parameter counts, data): part of every record."""
    model, datamodule = parts.model, parts.datamodule
    method = getattr(parts.module, "adapt", None)  # domain adaptation only
    return {
        **({"adapt": {"method": method.name, "adabn": bool(method.adabn)}} if method is not None else {}),
        "model": model.info.name,
        "model_family": model.info.family,
        "weights": model.info.weights,
        "finetune": parts.strategy.name,
        "params": count_parameters(model, parts.module.param_groups()),
        "data": {"name": datamodule.name, "num_classes": datamodule.num_classes, "input_shape": list(datamodule.input_shape),
                 **val_record(datamodule)},
    }


def val_record(datamodule: Any) -> dict[str, Any]:
    """The validation limit when one applies (few-shot runs) or the whole split was asked for."""
    limit = getattr(datamodule, "val_limit", None)
    if limit is not None:
        return {"val_samples_per_class": limit}
    return {"val_samples_per_class": "all"} if getattr(datamodule, "val_samples_per_class", None) == "all" else {}


def log_config(trainer: L.Trainer, cfg: DictConfig, overrides: list[str] = ()) -> None:
    """The resolved config as text in TensorBoard, so a run's settings sit beside its curves, and
    the values a person compares as the loggers' hyperparameters (TensorBoard's HPARAMS tab gets
    the final metrics after testing)."""
    params = hparams_of(cfg, overrides)
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
    log_text(trainer, "config", OmegaConf.to_yaml(cfg, resolve=True))

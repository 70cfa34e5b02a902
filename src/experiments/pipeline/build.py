"""Builders every task shares: data, model, strategy, LightningModule, Trainer, and the evaluation.

Imported only after the config has been validated (it pulls in torch and Lightning). A checkpoint's
state_dict always meets the module it came from, because every task builds through
:func:`build_components`. The builders take a concrete strategy: ``finetune=auto`` is resolved
before them (:mod:`experiments.pipeline.auto`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.checkpoints import AtomicCheckpointIO, BackgroundCheckpointIO
from experiments.checkpoints.frozen import UnchangedTensors
from experiments.datamodules.base import ClassificationDataModule
from experiments.errors import ConfigError, DataError, ModelError
from experiments.finetune.groups import count_parameters
from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel, create_model
from experiments.config.arguments import accepted_kwargs, unknown_argument
from experiments.config.run_names import CHECKPOINT_MODES
from experiments.pipeline.budget import apply_step_budget

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What one run is made of, built from its config."""

    strategy: FinetuneStrategy
    datamodule: ClassificationDataModule
    model: TransferModel
    module: L.LightningModule


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
    if (weights or not use_weights) and "pretrained" in params:
        params["pretrained"] = False  # a weights file replaces the library's weights: nothing to download
    factory = instantiate(params)
    channels, *hw = input_shape
    offered = {"num_classes": num_classes, "in_chans": channels, "input_hw": tuple(hw) or None}
    return create_model(factory(**accepted_kwargs(factory, through_kwargs=False, **offered)), num_classes, weights)


def build_model(cfg: DictConfig, datamodule: ClassificationDataModule, strategy: FinetuneStrategy) -> TransferModel:
    """The configured model, its head sized from the data; scratch never loads weights."""
    use_weights = strategy.uses_pretrained
    if not use_weights and cfg.model.get("weights"):
        log.warning("finetune=%s starts from random init: model.weights ignored", strategy.name)
    check_takes_texts(cfg.model, datamodule)
    model = model_from_config(cfg.model, datamodule.num_classes, tuple(datamodule.input_shape), use_weights)
    strategy.inject(model)  # adapters (finetune=lora) join the loaded weights before anything else sees them
    if len(datamodule.input_shape) == 1 and getattr(model.preprocessing, "tokenizer", None) is None:
        check_takes_vectors(model, datamodule)
    return model


def warn_frozen_random(strategy: FinetuneStrategy, model: TransferModel, max_epochs: int) -> None:
    """A strategy that freezes parameters of a randomly initialised model is almost surely a
    mistake: frozen random features rarely transfer (read from the plan, per parameter)."""
    from experiments.finetune.plan import ever_trainable, parameter_table

    rows = parameter_table(model)
    frozen_somewhere = not all(ever_trainable(rows, strategy, len(model.blocks), max_epochs))
    if strategy.uses_pretrained and frozen_somewhere and model.info.weights == "random":
        log.warning(
            "finetune=%s freezes parameters of a randomly initialised %s: frozen random features rarely "
            "transfer; set model.pretrained=true or model.weights=PATH",
            strategy.name, model.info.name,
        )


def check_takes_texts(model_cfg: DictConfig, datamodule: ClassificationDataModule) -> None:
    """ModelError, before the model is built, when a text model (its builder's ``input_kind`` is
    ``text``) meets data that gives no texts."""
    kind = getattr(datamodule, "input_kind", "image")
    if getattr(get_object(str(model_cfg._target_)), "input_kind", None) == "text" and kind != "text":
        items = {"image": "images", "vectors": "feature vectors"}.get(kind, kind)
        raise ModelError(
            f"model.name={model_cfg.get('name')} is a text model: it takes the token ids of texts, but data={datamodule.name} gives {items} "
            f"{tuple(datamodule.input_shape)}: use a model for them (e.g. model=small_cnn or model=resnet18 for "
            "images, model=sparse_mlp for feature vectors), or text data (data=text data.path=FILE)"
        )


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


def build_data_and_model(cfg: DictConfig, strategy: FinetuneStrategy) -> tuple[ClassificationDataModule, TransferModel]:
    """Seeded: the data and the model sized from it (its preprocessing handed to the data), with the
    run's epochs resolved from ``train_steps``. ``finetune=auto``'s measurements start here too."""
    check_all_arguments(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule: ClassificationDataModule = instantiate(cfg.data)
    model = build_model(cfg, datamodule, strategy)
    datamodule.set_preprocessing(model.preprocessing)
    apply_step_budget(cfg, datamodule)
    return datamodule, model


def build_components(cfg: DictConfig) -> Components:
    """Seeded: the strategy (``cfg.finetune``, a concrete one), the data, the model sized from it
    and the LightningModule around it."""
    strategy: FinetuneStrategy = instantiate(cfg.finetune)
    datamodule, model = build_data_and_model(cfg, strategy)
    strategy = strategy.for_run(cfg.trainer.max_epochs, len(model.blocks))
    warn_frozen_random(strategy, model, cfg.trainer.max_epochs)
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
        check_objective(str(cfg.objective), module.epoch_metrics(), getattr(module, "unlogged_reason", None))
        check_monitors(cfg, module.epoch_metrics())
    return Components(strategy, datamodule, model, module)


def check_monitors(cfg: DictConfig, logged: set[str]) -> None:
    """Every callback that watches a metric (early stopping, checkpoints) watches one this run logs,
    in the direction in which it is better: a typo or ``mode=min`` on an accuracy would stop the run
    early, or keep the wrong checkpoint, without a word."""
    from experiments.config.metrics import objective_mode

    for name, node in (cfg.get("callbacks") or {}).items():
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        if monitor is None:
            continue
        if str(monitor) not in logged:
            raise ConfigError(f"callbacks.{name}.monitor={monitor} is not a metric this run logs; choose one of "
                              f"{sorted(logged)} (or drop the key: it follows objective=)")
        mode = node.get("mode")
        if mode is not None and str(mode) != objective_mode(str(monitor)):
            raise ConfigError(f"callbacks.{name}.mode={mode} but {monitor} is better {'higher' if objective_mode(str(monitor)) == 'max' else 'lower'}: "
                              f"use callbacks.{name}.mode={objective_mode(str(monitor))} (or drop the key: it follows the metric)")


#: options whose keys become keyword arguments of their ``_target_``: an added key (``+data.foo=1``)
#: is named with the keys the option takes before anything is built (``model.weights`` is read by
#: create_model, not by the family builder)
ARGUMENT_OPTIONS = {"data": (), "data.device_augment": (), "data.source": (), "data.target": (),
                    "model": ("weights",), "finetune": (), "adapt": (), "optimizer": (), "scheduler": ()}


def check_all_arguments(cfg: DictConfig) -> None:
    """ConfigError for the first option of :data:`ARGUMENT_OPTIONS` that sets a keyword its
    ``_target_`` does not take (``+optimizer.momentum`` on AdamW), before anything is built."""
    keyed = [f"{section}.{name}" for section in ("callbacks", "logger") for name in (cfg.get(section) or {})]
    for key, also in [*ARGUMENT_OPTIONS.items(), *((k, ()) for k in keyed)]:
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, DictConfig) and node.get("_target_") and (problem := unknown_argument(key, node, also)):
            raise ConfigError(problem)


def check_objective(objective: str, logged: set[str], unlogged_reason: Callable[[str], str | None] | None = None) -> None:
    """The objective (checkpoint selection, sweeps) must be a metric the run logs every epoch;
    ``unlogged_reason`` (the module's) says why a metric it could log is not logged by this run."""
    reason = unlogged_reason(objective) if unlogged_reason is not None and objective not in logged else None
    if reason:
        raise ConfigError(f"objective={objective} is not logged by this run: {reason}")
    if objective not in logged:
        raise ConfigError(
            f"objective={objective} is not a metric this run logs; choose one of {sorted(logged)} "
            "(val/ metrics select without touching the test split)"
        )


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback] = (), **settings: Any) -> L.Trainer:
    """The configured Trainer with the configured callbacks and loggers, plus ``callbacks`` and
    ``settings`` (Trainer arguments) that a task adds."""
    configured = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    configured = [c for c in configured if not _switched_off(cfg, c)]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    if cfg.get("mode") in CHECKPOINT_MODES:  # TensorBoard lists every folder with event files as a run: only training writes them
        from lightning.pytorch.loggers import TensorBoardLogger  # imported with lightning already

        loggers = [logger for logger in loggers if not isinstance(logger, TensorBoardLogger)]
    background = bool(OmegaConf.select(cfg, "checkpoint.background", default=False))
    settings.setdefault("plugins", [BackgroundCheckpointIO() if background else AtomicCheckpointIO()])
    if OmegaConf.select(cfg, "checkpoint.reference_frozen", default=True):  # the writer's partner
        configured.append(UnchangedTensors())
    settings.setdefault("logger", loggers or False)
    return instantiate(cfg.trainer, callbacks=[*configured, *callbacks], **settings)


def _switched_off(cfg: DictConfig, callback: L.Callback) -> bool:
    """A progress bar or model summary callback that ``trainer.enable_progress_bar=false`` or
    ``trainer.enable_model_summary=false`` switches off (Lightning refuses the pair; the switch
    is what the user meant)."""
    from lightning.pytorch.callbacks import ModelSummary
    from lightning.pytorch.callbacks.progress import ProgressBar

    bar = isinstance(callback, ProgressBar) and OmegaConf.select(cfg, "trainer.enable_progress_bar", default=True) is False
    summary = isinstance(callback, ModelSummary) and OmegaConf.select(cfg, "trainer.enable_model_summary", default=True) is False
    return bar or summary


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

"""TensorBoard's HPARAMS tab with the run's real final metrics (not a placeholder ``hp_metric``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, ListConfig, OmegaConf

#: what a person compares between runs; keys a command line overrides (a sweep's) join them
COMPARED = (
    "model.name", "finetune.name", "data.name", "optimizer.lr", "optimizer.weight_decay",
    "data.batch_size", "trainer.max_epochs", "seed", "adapt.name", "adapt.adabn", "adapt.loss_weight",
)

def final_tag(key: str) -> str:
    """The TensorBoard tag of a final metric: ``val/acc`` of the best checkpoint is ``val/best/acc``
    (plain ``val/acc`` is the per-epoch curve); ``test/acc`` is logged once, so it keeps its name."""
    stage, _, name = key.partition("/")
    return f"{stage}/best/{name}" if stage == "val" else key


def hparams_of(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The values TensorBoard's HPARAMS tab shows: :data:`COMPARED` plus every key in
    ``overrides`` (``key=value`` strings; a group override ``model=resnet18`` shows ``model.name``).

    The whole resolved config is in the TEXT tab instead; ~60 columns would bury what differs.
    Non-scalar values and integers become strings (TensorBoard takes only numbers, strings and
    booleans, and shows every number as a real).
    """
    keys = list(COMPARED)
    chosen: dict[str, str] = {}  # a group without a name (logger=mlflow): the option typed, not its whole config
    for override in overrides:
        key, _, typed = override.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra"):
            continue
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, DictConfig) and "name" not in node:
            chosen[key] = typed
        keys.append(f"{key}.name" if isinstance(node, DictConfig) and "name" in node else key)
    params: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        if key in chosen:
            params[key] = chosen[key]
            continue
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None:
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        # an integer as text: TensorBoard shows numbers as reals (batch size 64.000)
        params[key] = str(value) if type(value) is int else value if isinstance(value, (float, str, bool)) else str(value)
    return params


class FinalMetricsHparams(L.Callback):
    """After ``trainer.test``, writes the hyperparameters with the final validation and test metrics.

    Validation metrics come from a stand-alone ``trainer.validate`` (the best checkpoint's
    re-evaluation) before the test, so they equal results.json's. The HPARAMS tab reads their values
    from scalars at the last step: ``val/best/...`` and ``test/...`` (:func:`final_tag`).
    """

    def __init__(self) -> None:
        self._val: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._val = _floats(trainer.callback_metrics, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {**self._val, **_floats(trainer.callback_metrics, "test/")}
        final = {final_tag(key): value for key, value in metrics.items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and final:
                logger.log_hyperparams(dict(logger.hparams), metrics=final, step=trainer.global_step)


def _floats(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if key.startswith(prefix)}



class RunConfigText(L.Callback):
    """At the first stage a Trainer runs (fit, validate, ...): the values a person compares as
    the loggers' hyperparameters (:func:`hparams_of`), the resolved config as text (TensorBoard's
    TEXT tab, an MLflow artifact), so a run's settings sit beside its curves, and ``texts``
    (``tag -> text``: finetune=auto's analysis) beside it."""

    def __init__(self, cfg: DictConfig, overrides: Sequence[str] = (), texts: dict[str, str] | None = None) -> None:
        self.cfg, self.overrides, self.texts = cfg, list(overrides), dict(texts or {})
        self._logged = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._logged:
            return
        from experiments.reporting.sinks import log_text

        self._logged = True
        params = hparams_of(self.cfg, self.overrides)
        for logger in trainer.loggers:
            logger.log_hyperparams(params)
        for tag, text in {"config": OmegaConf.to_yaml(self.cfg, resolve=True), **self.texts}.items():
            log_text(trainer, tag, text)

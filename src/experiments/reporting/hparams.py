"""TensorBoard's HPARAMS tab with the run's real final metrics (not a placeholder ``hp_metric``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf

#: config groups that say where and how a run reports, not what it trains: left out of hparams
_NOT_HPARAMS = ("callbacks", "logger", "paths", "hydra")

#: tags of the final metrics in TensorBoard: ``final/val/acc`` ... (plain ``val/acc`` is per epoch)
FINAL_PREFIX = "final/"


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to ``{"optimizer.lr": 0.003, ...}`` without reporting groups.

    Lists become strings (TensorBoard takes only scalars, strings and booleans).
    """
    tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (not prefix and key in _NOT_HPARAMS) or key == "_partial_":
                    continue
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(tree, "")
    return flat


class FinalMetricsHparams(L.Callback):
    """After ``trainer.test``, writes the hyperparameters with the final validation and test metrics.

    Validation metrics come from a stand-alone ``trainer.validate`` (the best checkpoint's
    re-evaluation) before the test, so they equal results.json's. The metrics are also logged as
    scalars under ``final/...`` at the last step: that is where the HPARAMS tab reads their values.
    """

    def __init__(self) -> None:
        self._val: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._val = _floats(trainer.callback_metrics, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {**self._val, **_floats(trainer.callback_metrics, "test/")}
        final = {FINAL_PREFIX + key: value for key, value in metrics.items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and final:
                logger.log_hyperparams(dict(logger.hparams), metrics=final, step=trainer.global_step)


def _floats(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if key.startswith(prefix)}

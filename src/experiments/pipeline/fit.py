"""The one fit: Trainer, callbacks, the frozen-backbone feature cache and its head fit, then
``Trainer.fit``. ``tasks.train``, ``finetune=auto``'s race trials and the benchmarks call it, so a
frozen-backbone head gets its L-BFGS fit and its cached features wherever it trains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
from omegaconf import DictConfig

from experiments.finetune.cache import FeatureCache
from experiments.pipeline.build import Components, build_trainer


@dataclass
class Fitted:
    """What a fit leaves: its Trainer (metrics, checkpoints, loggers) and its feature cache (record)."""

    trainer: L.Trainer
    cache: FeatureCache


def fit(cfg: DictConfig, parts: Components, callbacks: Sequence[L.Callback] = (), ckpt_path: str | None = None,
        **trainer_settings: Any) -> Fitted:
    """Fit ``parts.module`` as ``cfg`` says, resuming from ``ckpt_path`` when given.

    ``callbacks`` join the configured ones; ``trainer_settings`` (Trainer arguments) override the
    configured ``trainer`` keys (a race trial's ``limit_train_batches``, no checkpointing). The
    strategy's own callback comes with the module (``configure_callbacks``).
    """
    cache = FeatureCache(parts.strategy, parts.datamodule, parts.model, cfg.trainer)
    data = cache.fit_datamodule()  # features extracted and the head fitted before the Trainer exists
    trainer = build_trainer(cfg, [*cache.callbacks(), *callbacks], **{**cache.trainer_settings(), **trainer_settings})
    trainer.fit(parts.module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    return Fitted(trainer, cache)

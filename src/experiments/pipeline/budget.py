"""Training budgets in optimizer steps: what ``train_steps=N`` makes of ``trainer.max_epochs``.

Depends on the data module alone (its training loader's length), so the builders, the run and
``finetune=auto``'s race size their epochs from one answer.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def steps_per_epoch(trainer_cfg: DictConfig, datamodule: Any) -> int:
    """Optimizer steps in one training epoch: the loader's batches, cut by
    ``trainer.limit_train_batches`` (a count or a fraction), over ``accumulate_grad_batches``."""
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    limit = trainer_cfg.get("limit_train_batches")
    if limit is not None:
        batches = min(batches, int(limit)) if isinstance(limit, int) and not isinstance(limit, bool) else \
            max(1, int(batches * float(limit)))
    return max(1, math.ceil(batches / int(trainer_cfg.get("accumulate_grad_batches") or 1)))


def apply_step_budget(cfg: DictConfig, datamodule: Any) -> None:
    """``train_steps=N``: ``trainer.max_epochs`` becomes the epochs that make at least N optimizer
    steps on this data, so a 100-image run trains as long as a 10,000-image one instead of making
    30 steps. Every schedule (strategy, scheduler) then spans the resolved epochs. A strategy's
    ``steps_mult`` (scratch's own budget) multiplies the budget, steps or epochs."""
    steps = cfg.get("train_steps")
    mult = float(cfg.finetune.get("steps_mult") or 1.0)
    if steps is None:
        if mult != 1.0:
            epochs = math.ceil(int(cfg.trainer.max_epochs) * mult)
            log.info("finetune.steps_mult=%g: trainer.max_epochs=%d (was %d)", mult, epochs, cfg.trainer.max_epochs)
            cfg.trainer.max_epochs = epochs
        return
    per_epoch = steps_per_epoch(cfg.trainer, datamodule)
    epochs = math.ceil(int(steps) * mult / per_epoch)
    if epochs != cfg.trainer.max_epochs:
        log.info("train_steps=%d%s: %d optimizer steps per epoch -> trainer.max_epochs=%d (was %d)", steps,
                 f" x finetune.steps_mult={mult:g}" if mult != 1.0 else "", per_epoch, epochs, cfg.trainer.max_epochs)
    cfg.trainer.max_epochs = epochs

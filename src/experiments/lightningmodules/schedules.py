"""Learning-rate schedules that need the run's length in optimizer steps.

A ``_partial_`` scheduler whose constructor takes ``total_steps`` is completed by the module with
``Trainer.estimated_stepping_batches`` (the steps the run will make, known only once the Trainer
holds the data), so a schedule never repeats ``trainer.max_epochs`` or ``limit_train_batches``.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from experiments.errors import ConfigError
from experiments.config.arguments import is_number


class InverseDecayLR(LambdaLR):
    """``lr * (1 + gamma * p) ** -power`` with ``p = min(step / total_steps, 1)`` (DANN's schedule;
    ``gamma=10, power=0.75`` ends at ~0.17 of the starting rate). Step it every optimizer step
    (``module.scheduler_interval=step``, which ``scheduler=inv_decay`` sets)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, gamma: float = 10.0, power: float = 0.75,
                 last_epoch: int = -1) -> None:
        for key, value in (("gamma", gamma), ("power", power)):
            if not is_number(value) or value < 0:
                raise ConfigError(f"scheduler.{key}={value!r} is invalid: expected a number >= 0")
        if total_steps < 1:
            raise ConfigError(f"scheduler=inv_decay needs the run's length in steps, got {total_steps}")
        self.total_steps, self.gamma, self.power = int(total_steps), gamma, power
        super().__init__(optimizer, self.factor, last_epoch)

    def factor(self, step: int) -> float:
        return (1.0 + self.gamma * min(step / self.total_steps, 1.0)) ** -self.power

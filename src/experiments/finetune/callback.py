"""Apply a fine-tuning schedule during training: freezing, norm layers' modes, learning rates.

Every decision reads the plan of what trains (:mod:`experiments.finetune.plan`): which parameters
train this epoch, which norm layers are held in eval mode, each group's learning rate."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import nn

from experiments.finetune.groups import group_key
from experiments.finetune.plan import Row, held_norm_layers, parameter_table, summary, trainable
from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel

log = logging.getLogger(__name__)


class FinetuneCallback(L.Callback):
    """Freezes and thaws parameters as ``strategy`` says, holds norm layers in eval mode unless
    their block trains whole, and moves learning rates at stage changes, scheduler included.

    The state is recomputed from the epoch number at every epoch start, so resuming from a
    checkpoint lands in the right stage with no extra saved state.
    """

    def __init__(self, strategy: FinetuneStrategy, base_lr: float) -> None:
        self.strategy = strategy
        self.base_lr = base_lr
        self._eval_modules: list[nn.Module] = []
        self.history: list[dict[str, Any]] = []  # one entry per change of the trainable set
        self._last_epoch = 0
        self._rows: tuple[int, list[Row]] | None = None  # the plan's table, per model

    # -- state of one epoch ----------------------------------------------------------------------
    def rows(self, model: TransferModel) -> list[Row]:
        """The plan's table of ``model``'s parameters (computed once per model)."""
        if self._rows is None or self._rows[0] != id(model):
            self._rows = (id(model), parameter_table(model))
        return self._rows[1]

    def trainable_mask(self, model: TransferModel, epoch: int) -> list[bool]:
        """Per block: whether any of its parameters trains in ``epoch``."""
        rows = self.rows(model)
        return _per_block(model, rows, trainable(rows, self.strategy, len(model.blocks), epoch))

    def apply(self, model: TransferModel, epoch: int) -> list[bool]:
        """Set ``requires_grad`` of every parameter for ``epoch``; returns the per-block mask."""
        rows = self.rows(model)
        on = trainable(rows, self.strategy, len(model.blocks), epoch)
        for row, trains in zip(rows, on):
            row.param.requires_grad_(trains)
        self._eval_modules = self.held_modules(model, rows, on)
        model.backbone.train()  # modes persist across epochs: thawed blocks must leave eval mode
        self._set_eval()
        return _per_block(model, rows, on)

    def held_modules(self, model: TransferModel, rows: list[Row], on: list[bool]) -> list[nn.Module]:
        """Modules to hold in eval mode: a wholly frozen backbone (its dropout too, so it computes
        exactly what the cached-feature path computes), else the norm layers whose block does not
        train whole (:func:`~experiments.finetune.plan.held_norm_layers`)."""
        if self.strategy.train_bn:
            return []
        if not any(t for r, t in zip(rows, on) if r.block is not None):
            return [model.backbone]
        return held_norm_layers(model, rows, on)

    def _set_eval(self) -> None:
        for module in self._eval_modules:
            if module.training:  # .eval() recurses over every sub-module: skip when nothing changed
                module.eval()

    def _target_lrs(self, trainer: L.Trainer, model: TransferModel, epoch: int) -> list[float]:
        lrs = []
        for group in trainer.optimizers[0].param_groups:
            key = group_key(group.get("name", ""), len(model.blocks))
            # a group outside the model (a domain discriminator): the schedule does not move it
            lrs.append(self.base_lr if key is None else self.strategy.group_lr(self.base_lr, key[0], epoch, key[1]))
        return lrs

    def _move_learning_rates(self, trainer: L.Trainer, model: TransferModel, epoch: int) -> None:
        """Scale groups whose scheduled base rate changes between ``epoch - 1`` and ``epoch``."""
        if epoch == 0 or not trainer.optimizers:
            return
        before = self._target_lrs(trainer, model, epoch - 1)
        after = self._target_lrs(trainer, model, epoch)
        optimizer = trainer.optimizers[0]
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        for i, (old, new) in enumerate(zip(before, after)):
            if old == new:
                continue
            ratio = new / old
            group = optimizer.param_groups[i]
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
            for scheduler in schedulers:
                if hasattr(scheduler, "base_lrs"):
                    scheduler.base_lrs[i] *= ratio
            log.info("finetune %s: group %s lr %.3g -> %.3g at epoch %d", self.strategy.name, group["name"], old, new, epoch)

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Freeze for the first epoch before the fit starts, so what reports the model before
        training (the model summary's trainable count) sees what the strategy will train; every
        epoch start sets it again (a resumed run lands in its own epoch's stage there)."""
        if stage == "fit":
            self.apply(pl_module.model, 0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        epoch = trainer.current_epoch
        mask = self.apply(model, epoch)
        self._move_learning_rates(trainer, model, epoch)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        names = [b.name for b, t in zip(model.blocks, mask) if t]
        if not self.history or self.history[-1]["trainable_blocks"] != names:
            self.history.append({"epoch": epoch, "trainable_blocks": names})
        self._last_epoch = epoch
        pl_module.log("finetune/trainable_params", float(trainable), on_step=False, on_epoch=True)
        pl_module.log("finetune/trainable_blocks", float(sum(mask)), on_step=False, on_epoch=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Re-asserted every batch: Lightning restores module modes after validation and calls
        # .train() between stages, which would put frozen BatchNorm back to batch statistics.
        self._set_eval()

    def summary(self, model: TransferModel, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """The ``finetune_detail`` block of results.json: per block and per kind what trained at
        the end, the schedule's changes, each group's final rate and weight decay."""
        rows = self.rows(model)
        plan = summary(model, rows, trainable(rows, self.strategy, len(model.blocks), self._last_epoch))
        groups = optimizer.param_groups if optimizer is not None else []
        return {
            "strategy": self.strategy.name,
            **plan,
            "schedule": self.history,
            "lr_groups": [{"name": g.get("name"), "lr_at_end": g["lr"], "weight_decay": g.get("weight_decay")}
                          for g in groups],
        }


def _per_block(model: TransferModel, rows: list[Row], on: list[bool]) -> list[bool]:
    """Per block of ``model``: whether any of its rows is on."""
    return [any(t for r, t in zip(rows, on) if r.block == index) for index in range(len(model.blocks))]

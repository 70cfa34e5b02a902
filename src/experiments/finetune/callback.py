"""Apply a fine-tuning schedule during training: freezing, BatchNorm modes, learning rates."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import nn

from experiments.finetune.groups import block_depths
from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel

log = logging.getLogger(__name__)

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


class FinetuneCallback(L.Callback):
    """Freezes and thaws blocks as ``strategy`` says, keeps frozen norm layers in eval mode and
    moves learning rates at stage changes, scheduler included.

    The state is recomputed from the epoch number at every epoch start, so resuming from a
    checkpoint lands in the right stage with no extra saved state.
    """

    def __init__(self, strategy: FinetuneStrategy, base_lr: float) -> None:
        self.strategy = strategy
        self.base_lr = base_lr
        self._eval_modules: list[nn.Module] = []
        self.history: list[dict[str, Any]] = []  # one entry per change of the trainable set
        self._last_epoch = 0

    # -- state of one epoch ----------------------------------------------------------------------
    def trainable_mask(self, model: TransferModel, epoch: int) -> list[bool]:
        depth = self.strategy.trainable_depth(epoch)
        return [d <= depth for d in block_depths(model)]

    def apply(self, model: TransferModel, epoch: int) -> list[bool]:
        """Set ``requires_grad`` of every block for ``epoch``; returns the trainable mask."""
        mask = self.trainable_mask(model, epoch)
        for index, trainable in enumerate(mask):
            for param in model.block_parameters(index):
                param.requires_grad_(trainable)
        for param in model.head_parameters():
            param.requires_grad_(True)
        self._eval_modules = self.frozen_modules(model, any(mask))
        model.backbone.train()  # modes persist across epochs: thawed blocks must leave eval mode
        self._set_eval()
        return mask

    def frozen_modules(self, model: TransferModel, any_block_trains: bool) -> list[nn.Module]:
        """Modules to hold in eval mode: a wholly frozen backbone (its dropout too, so it computes
        exactly what the cached-feature path computes), else the frozen norm layers."""
        if self.strategy.train_bn:
            return []
        return frozen_norm_layers(model.backbone) if any_block_trains else [model.backbone]

    def _set_eval(self) -> None:
        for module in self._eval_modules:
            if module.training:  # .eval() recurses over every sub-module: skip when nothing changed
                module.eval()

    def _target_lrs(self, trainer: L.Trainer, model: TransferModel, epoch: int) -> list[float]:
        depth_of = dict(zip(range(len(model.blocks)), block_depths(model)))
        lrs = []
        for group in trainer.optimizers[0].param_groups:
            name = group.get("name", "")
            if name == "head":
                lrs.append(self.strategy.head_lr(self.base_lr, epoch))
            elif name.startswith("block"):
                depth = depth_of[int(name.removeprefix("block"))]
                lrs.append(self.strategy.block_lr(self.base_lr, depth, epoch))
            else:  # a group outside the model (a domain discriminator): the schedule does not move it
                lrs.append(self.base_lr)
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
        """The ``finetune_detail`` block of results.json."""
        mask = self.trainable_mask(model, self._last_epoch)
        groups = optimizer.param_groups if optimizer is not None else []
        return {
            "strategy": self.strategy.name,
            "blocks": [
                {"name": b.name, "params": sum(p.numel() for p in model.block_parameters(i)), "trainable_at_end": t}
                for i, (b, t) in enumerate(zip(model.blocks, mask))
            ],
            "schedule": self.history,
            "lr_groups": [{"name": g.get("name"), "lr_at_end": g["lr"]} for g in groups],
        }


def frozen_norm_layers(module: nn.Module) -> list[nn.Module]:
    """Norm layers whose parameters are all frozen (affine-free ones carry no signal: skipped)."""
    out = []
    for sub in module.modules():
        if isinstance(sub, _NORMS):
            params = list(sub.parameters())
            if params and not any(p.requires_grad for p in params):
                out.append(sub)
    return out

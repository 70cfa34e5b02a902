"""AdaBN (Li et al. 2016): BatchNorm statistics re-estimated on the target domain.

A network's BatchNorm running statistics describe the domain it was trained on. Re-estimating
them on target images, and nothing else, adapts it without a gradient step: every weight stays
bit-identical, only ``running_mean``/``running_var``/``num_batches_tracked`` change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from torch import nn

from experiments.models.core import batchnorm_layers

log = logging.getLogger(__name__)

BNState = dict[str, tuple[torch.Tensor, ...]]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace the BatchNorm running statistics of ``model`` by those of ``batches``.

    The statistics are reset and re-accumulated as an exact cumulative average (``momentum=None``)
    over every batch, with only the BatchNorm layers in train mode (dropout and the rest stay in
    eval mode) and no gradient. Each module's mode and momentum are restored afterwards.
    ``batches`` yields input tensors already on the model's device. Returns the samples seen.
    """
    norms = batchnorm_layers(model)
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms.values()}
    seen = 0
    try:
        model.eval()
        for bn in norms.values():
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for x in batches:
            model(x)
            seen += len(x)
    finally:
        for module, training in modes.items():
            module.training = training
        for bn, momentum in momenta.items():
            bn.momentum = momentum
    return seen


def batchnorm_state(model: nn.Module) -> BNState:
    """A copy of every BatchNorm layer's running statistics."""
    return {
        name: (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
        for name, bn in batchnorm_layers(model).items()
    }


@torch.no_grad()
def load_batchnorm_state(model: nn.Module, state: BNState) -> None:
    for name, bn in batchnorm_layers(model).items():
        mean, var, count = state[name]
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.num_batches_tracked.copy_(count)


class AdaBNCallback(L.Callback):
    """Evaluates each domain with its own BatchNorm statistics.

    Before every validation, test and predict run, the statistics of the evaluated network
    (``pl_module.evaluated_model()``) are re-estimated on the target's training images
    (``trainer.datamodule.target_images()``, evaluation transforms, labels never read). The source
    loader (dataloader 0) is then evaluated with the trained statistics, the target loader
    (dataloader 1) and prediction with the target's; afterwards the trained statistics are put
    back, so training and checkpoints are untouched.
    """

    def __init__(self) -> None:
        self._trained: BNState | None = None
        self._target: BNState | None = None
        self._loaded: int | None = None

    def _begin(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.evaluated_model()
        if not batchnorm_layers(model):
            log.warning("adapt.adabn=true but %s has no BatchNorm layer with running statistics: nothing to adapt",
                        type(model).__name__)
        self._trained = batchnorm_state(model)
        device = pl_module.device
        images = (x.to(device, non_blocking=True) for x in trainer.datamodule.target_images())
        seen = adapt_batchnorm(model, images)
        self._target = batchnorm_state(model)
        self._loaded = 1
        log.debug("AdaBN: BatchNorm statistics re-estimated on %d target images", seen)

    def _use(self, pl_module: L.LightningModule, dataloader_idx: int) -> None:
        if self._trained is None or self._loaded == dataloader_idx:
            return
        state = self._trained if dataloader_idx == 0 else self._target
        load_batchnorm_state(pl_module.evaluated_model(), state)
        self._loaded = dataloader_idx

    def _end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._trained is not None:
            load_batchnorm_state(pl_module.evaluated_model(), self._trained)
        self._trained = self._target = self._loaded = None

    def _batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                     dataloader_idx: int = 0) -> None:
        self._use(pl_module, dataloader_idx)

    on_validation_start = on_test_start = on_predict_start = _begin
    on_validation_batch_start = on_test_batch_start = _batch_start
    on_validation_end = on_test_end = on_predict_end = _end

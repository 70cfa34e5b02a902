"""``adapt=oracle``: supervised on the target's labels as well, the upper bound of adaptation."""

from __future__ import annotations

import torch

from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, DomainBatch, LossFn
from experiments.errors import ConfigError
from experiments.models.core import TransferModel


class Oracle(AdaptationMethod):
    """Cross-entropy on labelled source and labelled target-train batches (one forward pass).

    It reads the target's training labels, which no real adaptation may: its score bounds what
    the methods can reach, it is not one of them.
    """

    uses_target_labels = True
    log_names = ("target_loss",)

    def __init__(self, name: str = "oracle", adabn: bool = False, views=None) -> None:
        super().__init__(name, adabn, views)

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        if batch.target_y is None:
            raise ConfigError("adapt=oracle trains on target labels but the target batches carry none; "
                              "give a labelled target (class folders) or choose another adapt= method")
        n = len(batch.source_x)
        logits = model(torch.cat([batch.source_x, batch.target["plain"]]))
        target_loss = loss_fn(logits[n:], batch.target_y)
        return AdaptStep(loss_fn(logits[:n], batch.source_y) + target_loss, logits[:n],
                         {"target_loss": target_loss.detach()})

"""``adapt=oracle``: supervised on the target's labels as well, the upper bound of adaptation."""

from __future__ import annotations

import torch

from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, LossFn
from experiments.errors import ConfigError
from experiments.models.core import TransferModel


class Oracle(AdaptationMethod):
    """Cross-entropy on labelled source and labelled target-train batches (one forward pass).

    It reads the target's training labels, which no real adaptation may: its score bounds what
    the methods can reach, it is not one of them.
    """

    uses_target_labels = True
    log_names = ("target_loss",)

    def __init__(self, name: str = "oracle", adabn: bool = False) -> None:
        super().__init__(name, adabn)

    def training_step(self, model: TransferModel, source_x: torch.Tensor, target_x: torch.Tensor,
                      target_y: torch.Tensor | None, progress: float, loss_fn: LossFn) -> AdaptStep:
        if target_y is None:
            raise ConfigError("adapt=oracle trains on target labels but the target batches carry none; "
                              "give a labelled target (class folders) or choose another adapt= method")
        logits = model(torch.cat([source_x, target_x]))
        n = len(source_x)
        target_loss = loss_fn(logits[n:], target_y)
        return AdaptStep(logits[:n], target_loss, {"target_loss": target_loss.detach()})

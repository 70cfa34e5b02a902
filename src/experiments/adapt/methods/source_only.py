"""``adapt=source_only``: the baseline every adaptation is measured against."""

from __future__ import annotations

import torch

from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, LossFn
from experiments.models.core import TransferModel


class SourceOnly(AdaptationMethod):
    """Trains on labelled source data alone; the target is only evaluated (AdaBN optional)."""

    def __init__(self, name: str = "source_only", adabn: bool = False) -> None:
        super().__init__(name, adabn)

    def training_step(self, model: TransferModel, source_x: torch.Tensor, target_x: torch.Tensor,
                      target_y: torch.Tensor | None, progress: float, loss_fn: LossFn) -> AdaptStep:
        logits = model(source_x)
        return AdaptStep(logits, logits.new_zeros(()))

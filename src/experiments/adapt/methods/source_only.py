"""``adapt=source_only``: the baseline every adaptation is measured against."""

from __future__ import annotations

from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, DomainBatch, LossFn
from experiments.models.core import TransferModel


class SourceOnly(AdaptationMethod):
    """Trains on labelled source data alone; the target is only evaluated (AdaBN optional)."""

    def __init__(self, name: str = "source_only", adabn: bool = False, views=None) -> None:
        super().__init__(name, adabn, views)

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        logits = model(batch.source_x)
        return AdaptStep(loss_fn(logits, batch.source_y), logits)

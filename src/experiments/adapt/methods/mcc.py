"""``adapt=mcc``: minimum class confusion (Jin et al. 2020).

No discriminator: the target predictions' class-confusion matrix (how often two classes are
predicted together for the same samples) is pushed towards the diagonal, so target samples commit
to one class each while the source cross-entropy keeps the classes right.
"""

from __future__ import annotations

import torch

from experiments.adapt.entropy import certainty_weights
from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, DomainBatch, LossFn
from experiments.config.declared import Number
from experiments.models.core import TransferModel


def class_confusion(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """MCC's loss of target logits ``(B, K)``: the off-diagonal mass of the row-normalised,
    certainty-weighted class correlation matrix, over ``K``."""
    probs = (logits / temperature).softmax(dim=-1)
    weights = certainty_weights(probs)
    confusion = (probs * weights.unsqueeze(1)).t() @ probs  # (K, K)
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / len(confusion)


class MCC(AdaptationMethod):
    """Source cross-entropy plus ``loss_weight`` times the target's class confusion at
    ``temperature`` (2.5 in the paper); source and target in one forward pass.

    Args:
        loss_weight, temperature: as above. name, adabn, views: see :class:`AdaptationMethod`.
    """

    log_names = ("class_confusion",)
    KEYS = {"loss_weight": Number(low=0), "temperature": Number(low=0, low_open=True)}  # 2.5 in the paper

    def __init__(self, name: str = "mcc", adabn: bool = False, loss_weight: float = 1.0, temperature: float = 2.5,
                 views=None) -> None:
        super().__init__(name, adabn, views)
        self.loss_weight, self.temperature = loss_weight, temperature

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        n = len(batch.source_x)
        logits = model(torch.cat([batch.source_x, batch.target["plain"]]))
        confusion = class_confusion(logits[n:], self.temperature)
        loss = loss_fn(logits[:n], batch.source_y) + self.loss_weight * confusion
        return AdaptStep(loss, logits[:n], {"class_confusion": confusion.detach()})

"""``adapt=adamatch``: AdaMatch (Berthelot et al. 2022), FixMatch for a shifted target.

The network labels the WEAK view of each target image; where that label is confident enough it
trains on the STRONG view of the same image. Two changes make FixMatch work across domains:
the confidence threshold is RELATIVE (``tau`` times the mean top probability on the source batch,
so it follows how sure the network is where it is right), and the target's pseudo-label
distribution is ALIGNED to the source's class distribution before thresholding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, DomainBatch, LossFn
from experiments.config.declared import Flag, Number
from experiments.models.core import TransferModel


def warmup(progress: float) -> float:
    """AdaMatch's target-loss warm-up ``1/2 - cos(min(pi, 2 pi p)) / 2``: 0 -> 1 over the first half."""
    return 0.5 - math.cos(min(math.pi, 2 * math.pi * max(progress, 0.0))) / 2


class AdaMatch(AdaptationMethod):
    """Source cross-entropy plus ``loss_weight * warmup(progress)`` times the pseudo-label
    cross-entropy on the strong target view, masked by the relative threshold.

    Source, weak and strong target views go through the network in one pass (AdaMatch's
    batch-norm treatment of the source and target together).

    Args:
        tau: relative confidence threshold (0.9 in the paper).
        loss_weight: weight of the target loss after the warm-up.
        distribution_alignment: scale target probabilities by source mean / target mean.
        name, adabn, views: see :class:`AdaptationMethod` (views ``weak`` and ``strong``).
    """

    log_names = ("target_loss", "mask_rate", "threshold")
    KEYS = {"tau": Number(low=0, high=1), "loss_weight": Number(low=0), "distribution_alignment": Flag()}

    def __init__(self, name: str = "adamatch", adabn: bool = False, tau: float = 0.9, loss_weight: float = 1.0,
                 distribution_alignment: bool = True, views=None) -> None:
        super().__init__(name, adabn, views)
        self.tau, self.loss_weight = tau, loss_weight
        self.distribution_alignment = bool(distribution_alignment)

    @property
    def confidence_threshold(self) -> float:  # the validator's threshold: tau of a sure source
        return self.tau

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        weak, strong = self.view(batch, "weak"), self.view(batch, "strong")
        n, m = len(batch.source_x), len(weak)
        logits = model(torch.cat([batch.source_x, weak, strong]))
        source_logits, weak_logits, strong_logits = logits[:n], logits[n:n + m], logits[n + m:]
        with torch.no_grad():
            source_probs = source_logits.float().softmax(dim=-1)
            probs = weak_logits.float().softmax(dim=-1)
            if self.distribution_alignment:
                probs = probs * (source_probs.mean(dim=0) / probs.mean(dim=0).clamp_min(1e-6))
                probs = probs / probs.sum(dim=-1, keepdim=True)
            threshold = self.tau * source_probs.max(dim=-1).values.mean()
            confidence, pseudo = probs.max(dim=-1)
            mask = (confidence >= threshold).float()
        target_loss = (F.cross_entropy(strong_logits, pseudo, reduction="none") * mask).mean()
        loss = loss_fn(source_logits, batch.source_y) + self.loss_weight * warmup(progress) * target_loss
        logs = {"target_loss": target_loss.detach(), "mask_rate": mask.mean(), "threshold": threshold}
        return AdaptStep(loss, source_logits, logs)

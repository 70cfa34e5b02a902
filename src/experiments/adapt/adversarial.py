"""The reusable adversarial loss that DANN and CDAN share: a domain discriminator behind a
gradient reversal layer whose strength follows training progress."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from experiments.adapt.discriminator import DomainDiscriminator
from experiments.adapt.grl import GradientReversal, dann_lambda


class DomainAdversarialLoss(nn.Module):
    """``loss(f_s, f_t, progress)``: binary cross-entropy of a discriminator telling source
    features ``(B_s, D)`` from target features ``(B_t, D)``, seen by whatever produced them through
    a gradient reversal of strength ``dann_lambda(progress, gamma, lambda_max)``.

    Args:
        in_features: ``D``; hidden, layers, dropout: the discriminator (:class:`DomainDiscriminator`).
        gamma, lambda_max: the reversal schedule (:func:`~experiments.adapt.grl.dann_lambda`).

    ``forward`` returns ``(loss, accuracy, lambda)``; optional per-sample ``weights`` ``(B_s + B_t,)``
    weigh the cross-entropy (CDAN's entropy conditioning).
    """

    def __init__(self, in_features: int, hidden: int = 256, layers: int = 2, dropout: float = 0.0,
                 gamma: float = 10.0, lambda_max: float = 1.0) -> None:
        super().__init__()
        self.discriminator = DomainDiscriminator(in_features, hidden, layers, dropout)
        self.reversal = GradientReversal(0.0)
        self.gamma, self.lambda_max = gamma, lambda_max

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, progress: float,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.reversal.lambda_ = dann_lambda(progress, self.gamma, self.lambda_max)
        logits = self.discriminator(self.reversal(torch.cat([f_s, f_t])))
        is_source = torch.cat([logits.new_ones(len(f_s)), logits.new_zeros(len(f_t))])
        loss = F.binary_cross_entropy_with_logits(logits, is_source, weight=weights)
        accuracy = ((logits > 0).float() == is_source).float().mean()
        return loss, accuracy, logits.new_tensor(self.reversal.lambda_)

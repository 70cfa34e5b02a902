"""``adapt=cdan``: conditional domain-adversarial training with entropy conditioning (CDAN+E,
Long et al. 2018).

The discriminator sees the outer product of the features and the class probabilities, so it aligns
the domains class by class rather than as two clouds; confident (low-entropy) samples weigh more.
It shares :class:`~experiments.adapt.adversarial.DomainAdversarialLoss` with DANN: only the
discriminator's input and the sample weights differ.
"""

from __future__ import annotations

import torch

from experiments.adapt.entropy import certainty_weights
from experiments.adapt.methods.base import AdaptStep, DomainBatch, LossFn
from experiments.adapt.methods.dann import DANN, joint_features
from experiments.config.declared import Flag
from experiments.models.core import TransferModel


class CDAN(DANN):
    """DANN on the multilinear map ``p (x) f`` (``K * F`` wide), each sample weighted by
    ``1 + exp(-H(p))`` (``entropy_conditioning``), the weights normalised to mean 1.

    The class probabilities are detached, as in the paper's code: the classifier learns from the
    source labels only. Args as :class:`DANN`, plus ``entropy_conditioning``.
    """

    KEYS = {"entropy_conditioning": Flag()}

    def __init__(self, name: str = "cdan", adabn: bool = False, hidden: int = 256, layers: int = 2,
                 dropout: float = 0.0, loss_weight: float = 1.0, gamma: float = 10.0, lambda_max: float = 1.0,
                 entropy_conditioning: bool = True, views=None) -> None:
        super().__init__(name, adabn, hidden, layers, dropout, loss_weight, gamma, lambda_max, views)
        self.entropy_conditioning = bool(entropy_conditioning)

    def adversary_features(self, model: TransferModel) -> int:
        return model.num_features * model.num_classes

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        n = len(batch.source_x)
        features = joint_features(model, batch, self.name)
        logits = model.forward_head(features)
        probs = logits.softmax(dim=-1).detach()
        joint = torch.bmm(probs.unsqueeze(2), features.unsqueeze(1)).flatten(1)  # (B, K * F)
        weights = certainty_weights(probs) if self.entropy_conditioning else None
        domain_loss, domain_acc, lambda_ = self.adversary(joint[:n], joint[n:], progress, weights)
        logs = {"domain_loss": domain_loss.detach(), "domain_acc": domain_acc, "dann_lambda": lambda_}
        loss = loss_fn(logits[:n], batch.source_y) + self.loss_weight * domain_loss
        return AdaptStep(loss, logits[:n], logs)

"""``adapt=dann``: domain-adversarial training (Ganin et al. 2016).

A domain discriminator on the backbone's features learns to tell source from target; a gradient
reversal layer between them turns its gradient around, so the backbone learns features the
discriminator cannot separate while the head keeps them discriminative for the source labels.
"""

from __future__ import annotations

from typing import Any

import torch

from experiments.adapt.adversarial import DomainAdversarialLoss
from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, DomainBatch, LossFn
from experiments.config.declared import Integer, Number
from experiments.errors import ModelError
from experiments.models.core import TransferModel


def joint_features(model: TransferModel, batch: DomainBatch, method: str) -> torch.Tensor:
    """The backbone's ``(B_s + B_t, F)`` features of the source and the plain target view in one
    pass (shared BatchNorm statistics: the discriminator compares features of one network)."""
    features = model.forward_features(torch.cat([batch.source_x, batch.target["plain"]]))
    if features.dim() != 2:
        raise ModelError(
            f"adapt={method} feeds the backbone's features to a domain discriminator and needs them as "
            f"(batch, features), but the backbone of {model.info.name} returns shape {tuple(features.shape)}; "
            "use a model whose head is a Linear layer on pooled features (model.head=<path> names it)"
        )
    return features


class DANN(AdaptationMethod):
    """Source cross-entropy plus ``loss_weight`` times the discriminator's binary cross-entropy
    (:class:`~experiments.adapt.adversarial.DomainAdversarialLoss`).

    Args:
        hidden, layers, dropout: the discriminator's size (:class:`DomainDiscriminator`).
        loss_weight: weight of the domain loss.
        gamma: steepness of the lambda schedule (10 in the paper).
        lambda_max: the reversal strength the schedule approaches.
        name, adabn, views: see :class:`AdaptationMethod`.
    """

    log_names = ("domain_loss", "domain_acc", "dann_lambda")
    KEYS = {"hidden": Integer(low=1), "layers": Integer(low=1), "dropout": Number(low=0, high=1, high_open=True),
            "loss_weight": Number(low=0), "gamma": Number(low=0), "lambda_max": Number(low=0)}

    def __init__(self, name: str = "dann", adabn: bool = False, hidden: int = 256, layers: int = 2,
                 dropout: float = 0.0, loss_weight: float = 1.0, gamma: float = 10.0, lambda_max: float = 1.0,
                 views=None) -> None:
        super().__init__(name, adabn, views)
        self.adversary_options = {"hidden": hidden, "layers": layers, "dropout": dropout, "gamma": gamma,
                                  "lambda_max": lambda_max}
        self.loss_weight = loss_weight

    def adversary_features(self, model: TransferModel) -> int:
        """The discriminator's input size."""
        return model.num_features

    def bind(self, model: TransferModel) -> None:
        self.adversary = DomainAdversarialLoss(self.adversary_features(model), **self.adversary_options)

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        return [{"name": "discriminator", "params": list(self.adversary.parameters()), "lr": base_lr}]

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        n = len(batch.source_x)
        features = joint_features(model, batch, self.name)
        source_logits = model.forward_head(features[:n])
        domain_loss, domain_acc, lambda_ = self.adversary(features[:n], features[n:], progress)
        logs = {"domain_loss": domain_loss.detach(), "domain_acc": domain_acc, "dann_lambda": lambda_}
        loss = loss_fn(source_logits, batch.source_y) + self.loss_weight * domain_loss
        return AdaptStep(loss, source_logits, logs)

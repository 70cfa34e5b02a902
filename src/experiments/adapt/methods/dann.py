"""``adapt=dann``: domain-adversarial training (Ganin et al. 2016).

A domain discriminator on the backbone's features learns to tell source from target; a gradient
reversal layer between them turns its gradient around, so the backbone learns features the
discriminator cannot separate while the head keeps them discriminative for the source labels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from experiments.adapt.discriminator import DomainDiscriminator
from experiments.adapt.grl import GradientReversal, dann_lambda
from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, LossFn
from experiments.errors import ConfigError, ModelError
from experiments.models.core import TransferModel


class DANN(AdaptationMethod):
    """Source cross-entropy plus ``loss_weight`` times the discriminator's binary cross-entropy,
    seen by the backbone through a gradient reversal of strength ``dann_lambda(progress)``.

    Source and target batches go through the backbone in one pass (shared BatchNorm statistics,
    as the discriminator compares features of one network).

    Args:
        hidden, layers, dropout: the discriminator's size (:class:`DomainDiscriminator`).
        loss_weight: weight of the domain loss.
        gamma: steepness of the lambda schedule (10 in the paper).
        lambda_max: the reversal strength the schedule approaches.
        name, adabn: see :class:`AdaptationMethod`.
    """

    log_names = ("domain_loss", "domain_acc", "dann_lambda")

    def __init__(self, name: str = "dann", adabn: bool = False, hidden: int = 256, layers: int = 2,
                 dropout: float = 0.0, loss_weight: float = 1.0, gamma: float = 10.0, lambda_max: float = 1.0) -> None:
        super().__init__(name, adabn)
        for key, value in (("loss_weight", loss_weight), ("gamma", gamma), ("lambda_max", lambda_max)):
            if value < 0:
                raise ConfigError(f"adapt.{key}={value} must be >= 0")
        self.hidden, self.layers, self.dropout = hidden, layers, dropout
        self.loss_weight, self.gamma, self.lambda_max = loss_weight, gamma, lambda_max
        self.reversal = GradientReversal(0.0)

    def bind(self, model: TransferModel) -> None:
        self.discriminator = DomainDiscriminator(model.num_features, self.hidden, self.layers, self.dropout)

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        return [{"name": "discriminator", "params": list(self.discriminator.parameters()), "lr": base_lr}]

    def training_step(self, model: TransferModel, source_x: torch.Tensor, target_x: torch.Tensor,
                      target_y: torch.Tensor | None, progress: float, loss_fn: LossFn) -> AdaptStep:
        n = len(source_x)
        features = model.backbone(torch.cat([source_x, target_x]))
        if features.dim() != 2:
            raise ModelError(
                f"adapt=dann feeds the backbone's features to a domain discriminator and needs them as "
                f"(batch, features), but the backbone of {model.info.name} returns shape {tuple(features.shape)}; "
                "use a model whose head is a Linear layer on pooled features (model.head=<path> names it)"
            )
        self.reversal.lambda_ = dann_lambda(progress, self.gamma, self.lambda_max)
        domain_logits = self.discriminator(self.reversal(features))
        is_source = torch.zeros_like(domain_logits)
        is_source[:n] = 1
        domain_loss = F.binary_cross_entropy_with_logits(domain_logits, is_source)
        domain_acc = ((domain_logits > 0).float() == is_source).float().mean()
        logs = {"domain_loss": domain_loss.detach(), "domain_acc": domain_acc,
                "dann_lambda": domain_logits.new_tensor(self.reversal.lambda_)}
        return AdaptStep(model.head(features[:n]), self.loss_weight * domain_loss, logs)

"""What every domain-adaptation method (``adapt=``) provides to the DomainAdaptationModule.

A method is an ``nn.Module`` so the parts it owns (a discriminator, a teacher) move to the device
and live in the checkpoint with the model. The module calls, in order:

* ``bind(model)`` once, at construction: build the parts sized from the model;
* ``param_groups(base_lr)``: optimizer groups for those parts (beside the model's own);
* ``training_step(...)`` every batch: the source logits and the adaptation loss, which the module
  adds to the source cross-entropy;
* ``after_optimizer_step(model)`` after every batch (an EMA update);
* ``evaluated(model)``: the network that validation, test, predict and AdaBN use.

Target labels reach ``training_step`` only when ``uses_target_labels`` is true (the oracle); for
every other method the data module never reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from experiments.models.core import TransferModel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AdaptStep:
    """One training step's outcome.

    ``source_logits`` ``(B_source, num_classes)``; ``loss`` the scalar added to the source
    cross-entropy; ``logs`` scalars averaged over the epoch and logged as ``train/<name>``.
    """

    source_logits: torch.Tensor
    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class AdaptationMethod(nn.Module):
    """Base of the methods: plain source training, evaluated as it is.

    Args:
        name: the method's name, for run names and results.
        adabn: re-estimate BatchNorm statistics on the target's training images before the target
            is evaluated (see :class:`experiments.adapt.adabn.AdaBNCallback`).
    """

    #: True only for methods that train on target labels (the oracle)
    uses_target_labels: bool = False
    #: the names of the per-step scalars in ``AdaptStep.logs``
    log_names: tuple[str, ...] = ()

    def __init__(self, name: str, adabn: bool = False) -> None:
        super().__init__()
        self.name = name
        self.adabn = bool(adabn)

    def bind(self, model: TransferModel) -> None:
        """Build what is sized from ``model`` (nothing for methods without own parts)."""

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups of the method's own trainable parts."""
        return []

    def training_step(
        self,
        model: TransferModel,
        source_x: torch.Tensor,
        target_x: torch.Tensor,
        target_y: torch.Tensor | None,
        progress: float,
        loss_fn: LossFn,
    ) -> AdaptStep:
        """The step's source logits and adaptation loss; ``progress`` is in [0, 1]."""
        raise NotImplementedError

    def after_optimizer_step(self, model: TransferModel) -> None:
        """Runs after every training batch (the optimizer has stepped)."""

    def evaluated(self, model: TransferModel) -> nn.Module:
        """The network to evaluate and predict with."""
        return model

"""What every domain-adaptation method (``adapt=``) provides to the DomainAdaptationModule.

A method is one class (a subclass of :class:`AdaptationMethod`) and one yaml in ``conf/adapt/``
whose ``_target_`` names the class by its full path. It is an ``nn.Module`` so the parts it owns (a
discriminator, a teacher) move to the device and live in the checkpoint with the model.

The module calls, in order:

* ``bind(model)`` once, at construction: build the parts sized from the model;
* ``param_groups(base_lr)``: optimizer groups for those parts (beside the model's own);
* ``training_step(model, batch, progress, loss_fn)`` every batch: the WHOLE training loss (the
  source cross-entropy included, so a source-free method can leave it out) and the source logits;
* ``after_optimizer_step(model)`` after every batch (an EMA update);
* ``on_train_epoch_start(model, epoch)`` before every training epoch (pseudo-labels once an epoch);
* ``evaluated(model)``: the network that validation, test, predict and AdaBN use.

The target part of a batch is a dict of named VIEWS of the same images, built on the device by the
domain pair (``plain`` always; the method's yaml asks for more under ``views:``, e.g. ``weak`` and
``strong``). Target labels reach ``training_step`` only when ``uses_target_labels`` is true (the
oracle); for every other method the data module never reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from experiments.config.declared import Flag, checked_init
from experiments.errors import ConfigError
from experiments.models.core import TransferModel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DomainBatch:
    """One training batch of a domain pair.

    ``source_x`` ``(B_s, ...)`` and ``source_y`` ``(B_s,)``: the labelled source (augmented);
    ``target``: named views ``(B_t, ...)`` of the same target images (``plain`` and the views the
    method asked for); ``target_y``: the target's labels, only for a method that uses them.
    """

    source_x: torch.Tensor
    source_y: torch.Tensor
    target: Mapping[str, torch.Tensor]
    target_y: torch.Tensor | None = None


@dataclass
class AdaptStep:
    """One training step's outcome.

    ``loss``: the scalar the optimizer minimises (source cross-entropy included);
    ``source_logits`` ``(B_source, num_classes)`` (the source accuracy stream), or None for a method
    that does not look at the source; ``logs``: scalars averaged over the epoch, logged as
    ``train/<name>`` (each name must be in the method's ``log_names``).
    """

    loss: torch.Tensor
    source_logits: torch.Tensor | None
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class AdaptationMethod(nn.Module):
    """Base of the methods: plain source training, evaluated as it is.

    Args:
        name: the method's name, for run names and results.
        adabn: re-estimate BatchNorm statistics on the target's training images before the target
            is evaluated (see :class:`experiments.adapt.adabn.AdaBNCallback`).
        views: the target views the method reads besides ``plain`` (``{name: DeviceAugment}``; the
            domain pair builds them from the same yaml key, ``data.target_views: ${adapt.views}``).
    """

    #: True only for methods that train on target labels (the oracle)
    uses_target_labels: bool = False
    #: the names of the per-step scalars in ``AdaptStep.logs``
    log_names: tuple[str, ...] = ()
    #: the top-probability above which a target prediction counts as confident (the validator
    #: ``val/target_confident`` uses the method's own threshold where it has one)
    confidence_threshold: float = 0.9
    #: the rules of the constructor's keys (``adapt.<key>``), declared once: checked before torch
    #: is imported (read from this source by :mod:`experiments.config.declared`) and at construction.
    #: A subclass declares its own keys; its bases' are inherited.
    KEYS = {"adabn": Flag()}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # every method's constructor checks its declared keys first
            cls.__init__ = checked_init(cls.__dict__["__init__"], cls, "adapt", ConfigError)

    def __init__(self, name: str, adabn: bool = False, views: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.name = name
        self.adabn = bool(adabn)
        self.view_names = tuple(views or ())

    def bind(self, model: TransferModel) -> None:
        """Build what is sized from ``model`` (nothing for methods without own parts)."""

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups of the method's own trainable parts."""
        return []

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        """The step's loss and source logits; ``progress`` (optimizer steps done / planned) is in [0, 1]."""
        raise NotImplementedError

    def on_train_epoch_start(self, model: TransferModel, epoch: int) -> None:
        """Runs before every training epoch."""

    def after_optimizer_step(self, model: TransferModel) -> None:
        """Runs after every training batch (the optimizer has stepped)."""

    def evaluated(self, model: TransferModel) -> nn.Module:
        """The network to evaluate and predict with."""
        return model

    def view(self, batch: DomainBatch, name: str) -> torch.Tensor:
        """The target view ``name``, with the fix when the data did not build it."""
        if name not in batch.target:
            raise ConfigError(f"adapt={self.name} reads the target view {name!r} but the batches carry "
                              f"{sorted(batch.target)}: keep data.target_views: ${{adapt.views}} (data=da_pair)")
        return batch.target[name]

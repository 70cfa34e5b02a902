"""``adapt=mean_teacher``: self-ensembling for domain adaptation (French et al. 2018).

A teacher, the exponential moving average of the student, labels the target softly; the student
is trained to agree with it on differently augmented views of the same target images, where the
teacher is confident. The teacher is the network that is evaluated, selected and saved.
"""

from __future__ import annotations

import math

import torch

from experiments.adapt.augment import LightAugment
from experiments.adapt.ema import ema_teacher, ema_update
from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, LossFn
from experiments.errors import ConfigError
from experiments.models.core import TransferModel


def sigmoid_rampup(progress: float, length: float) -> float:
    """``exp(-5 (1 - progress / length)^2)`` until ``progress`` reaches ``length``, then 1."""
    if length <= 0 or progress >= length:
        return 1.0
    return math.exp(-5.0 * (1.0 - max(progress, 0.0) / length) ** 2)


class MeanTeacher(AdaptationMethod):
    """Source cross-entropy plus a confidence-masked consistency loss on the target.

    Each step the student sees the source batch and an augmented target batch in separate
    forward passes (so each gets its own BatchNorm batch statistics); the teacher sees another
    augmentation of the same target batch. The consistency is the squared distance between the
    two class-probability vectors, counted only where the teacher's top probability exceeds
    ``confidence_threshold``, averaged over the batch and weighted by ``consistency_weight``
    ramped up over the first ``rampup`` fraction of training.

    Args:
        ema_decay: the teacher keeps this share of itself at each step.
        confidence_threshold: teacher confidence below which a target sample is masked out.
        consistency_weight: weight of the consistency loss after the ramp-up.
        rampup: fraction of the training steps over which that weight rises from ~0.
        augment: options of :class:`~experiments.adapt.augment.LightAugment`.
        name, adabn: see :class:`AdaptationMethod`.
    """

    log_names = ("consistency", "mask_rate")

    def __init__(self, name: str = "mean_teacher", adabn: bool = False, ema_decay: float = 0.99,
                 confidence_threshold: float = 0.9, consistency_weight: float = 3.0, rampup: float = 0.1,
                 augment: dict | None = None) -> None:
        super().__init__(name, adabn)
        checks = (("ema_decay", ema_decay, 0 <= ema_decay < 1, "[0, 1)"),
                  ("confidence_threshold", confidence_threshold, 0 <= confidence_threshold < 1, "[0, 1)"),
                  ("consistency_weight", consistency_weight, consistency_weight >= 0, ">= 0"),
                  ("rampup", rampup, 0 <= rampup <= 1, "[0, 1] (a fraction of training)"))
        for key, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"adapt.{key}={value} is invalid: expected {allowed}")
        self.ema_decay, self.confidence_threshold = ema_decay, confidence_threshold
        self.consistency_weight, self.rampup = consistency_weight, rampup
        self.augment = LightAugment(**(augment or {}))

    def bind(self, model: TransferModel) -> None:
        self.teacher = ema_teacher(model)

    def training_step(self, model: TransferModel, source_x: torch.Tensor, target_x: torch.Tensor,
                      target_y: torch.Tensor | None, progress: float, loss_fn: LossFn) -> AdaptStep:
        source_logits = model(source_x)
        student = model(self.augment(target_x)).float().softmax(dim=-1)
        with torch.no_grad():
            for t, s in zip(self.teacher.modules(), model.modules()):  # same dropout/BN modes
                t.training = s.training
            teacher = self.teacher(self.augment(target_x)).float().softmax(dim=-1)
        mask = (teacher.max(dim=-1).values > self.confidence_threshold).float()
        consistency = (((student - teacher) ** 2).sum(dim=-1) * mask).mean()
        weight = self.consistency_weight * sigmoid_rampup(progress, self.rampup)
        logs = {"consistency": consistency.detach(), "mask_rate": mask.mean()}
        return AdaptStep(source_logits, weight * consistency, logs)

    def after_optimizer_step(self, model: TransferModel) -> None:
        ema_update(self.teacher, model, self.ema_decay)

    def evaluated(self, model: TransferModel) -> torch.nn.Module:
        return self.teacher

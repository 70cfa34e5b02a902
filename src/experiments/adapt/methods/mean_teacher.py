"""``adapt=mean_teacher``: self-ensembling for domain adaptation (French et al. 2018).

A teacher, the exponential moving average of the student, labels the target softly; the student
is trained to agree with it on differently augmented views of the same target images, where the
teacher is confident. A class-balance term keeps the student's mean target prediction near uniform
(so no class swallows the target). The teacher is the network that is evaluated, selected and saved.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from experiments.adapt.ema import ema_teacher, ema_update
from experiments.adapt.methods.base import AdaptationMethod, AdaptStep, DomainBatch, LossFn
from experiments.config.declared import Number
from experiments.models.core import TransferModel


def sigmoid_rampup(progress: float, length: float) -> float:
    """``exp(-5 (1 - progress / length)^2)`` until ``progress`` reaches ``length``, then 1."""
    if length <= 0 or progress >= length:
        return 1.0
    return math.exp(-5.0 * (1.0 - max(progress, 0.0) / length) ** 2)


def class_balance(probs: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the mean prediction ``probs.mean(0)`` ``(K,)`` against ``1/K``,
    summed over the classes (self-ensembling's class-balance loss)."""
    mean = probs.mean(dim=0).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(mean, torch.full_like(mean, 1.0 / len(mean)), reduction="sum")


class MeanTeacher(AdaptationMethod):
    """Source cross-entropy, a confidence-masked consistency loss and a class-balance loss.

    Each step the student sees the source batch and the ``student`` view of the target batch in
    separate forward passes (each domain gets its own BatchNorm batch statistics); the teacher sees
    the ``teacher`` view (another draw of the augmentation). The consistency is the squared
    distance between the two class-probability vectors, counted only where the teacher's top
    probability exceeds ``confidence_threshold``, averaged over the batch and weighted by
    ``consistency_weight`` ramped up over the first ``rampup`` of training; the class balance is
    weighted by ``class_balance`` times the share of confident samples.

    Args:
        ema_decay: the teacher keeps this share of itself at each step.
        confidence_threshold: teacher confidence below which a target sample is masked out.
        consistency_weight: weight of the consistency loss after the ramp-up.
        class_balance: weight of the class-balance loss (0 leaves it out).
        rampup: fraction of the training steps over which the consistency weight rises from ~0.
        name, adabn, views: see :class:`AdaptationMethod` (views ``student`` and ``teacher``).
    """

    log_names = ("consistency", "mask_rate", "class_balance")
    KEYS = {"ema_decay": Number(low=0, high=1, high_open=True), "confidence_threshold": Number(low=0, high=1, high_open=True),
            "rampup": Number(low=0, high=1), "consistency_weight": Number(low=0), "class_balance": Number(low=0)}

    def __init__(self, name: str = "mean_teacher", adabn: bool = False, ema_decay: float = 0.99,
                 confidence_threshold: float = 0.968, consistency_weight: float = 3.0, class_balance: float = 0.005,
                 rampup: float = 0.0, views=None) -> None:
        super().__init__(name, adabn, views)
        self.ema_decay, self.confidence_threshold = ema_decay, confidence_threshold
        self.consistency_weight, self.class_balance, self.rampup = consistency_weight, class_balance, rampup

    def bind(self, model: TransferModel) -> None:
        self.teacher = ema_teacher(model)

    def training_step(self, model: TransferModel, batch: DomainBatch, progress: float, loss_fn: LossFn) -> AdaptStep:
        source_logits = model(batch.source_x)
        student = model(self.view(batch, "student")).float().softmax(dim=-1)
        with torch.no_grad():
            for t, s in zip(self.teacher.modules(), model.modules()):  # same dropout/BN modes
                t.training = s.training
            teacher = self.teacher(self.view(batch, "teacher")).float().softmax(dim=-1)
        mask = (teacher.max(dim=-1).values > self.confidence_threshold).float()
        consistency = (((student - teacher) ** 2).sum(dim=-1) * mask).mean()
        balance = class_balance(student) * mask.mean()
        weight = self.consistency_weight * sigmoid_rampup(progress, self.rampup)
        loss = loss_fn(source_logits, batch.source_y) + weight * consistency + self.class_balance * balance
        logs = {"consistency": consistency.detach(), "mask_rate": mask.mean(), "class_balance": balance.detach()}
        return AdaptStep(loss, source_logits, logs)

    def after_optimizer_step(self, model: TransferModel) -> None:
        ema_update(self.teacher, model, self.ema_decay)

    def evaluated(self, model: TransferModel) -> torch.nn.Module:
        return self.teacher

"""Strategies that start with the head alone on a frozen backbone: ``classifier_only`` (never
more), ``gradual`` (blocks thaw one by one) and ``lp_ft`` (a linear probe, then every layer).

Their frozen epochs can run on cached features, and the head can start fitted to convergence on
them (``head_fit``: :mod:`experiments.finetune.head_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from experiments.errors import FinetuneError
from experiments.finetune.strategies import EVERY_BLOCK, FinetuneStrategy, _integer, _number, _require


#: ``head_fit`` values: fit the head on the cached features before the first epoch, or not
HEAD_FITS = ("lbfgs", "none")


@dataclass
class HeadFirst(FinetuneStrategy):
    """A strategy whose first epochs train the head alone on a frozen backbone.

    Args:
        head_fit: ``lbfgs``: before the first epoch, the head is fitted to convergence on the cached
            features (:mod:`experiments.finetune.head_fit`; only on the cached-feature path);
            ``none``: the head starts from its init and only the epochs train it.
    """

    head_fit: str = "lbfgs"

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        super().validate(max_epochs, n_blocks)
        _require(self.head_fit in HEAD_FITS, "head_fit", self.head_fit, " or ".join(HEAD_FITS))


@dataclass
class ClassifierOnly(HeadFirst):
    """Only the head trains; the backbone is frozen (BatchNorm statistics included)."""

    name: str = "classifier_only"

    def trainable_depth(self, epoch: int) -> int:
        return 0


@dataclass
class Gradual(HeadFirst):
    """Starts as classifier_only; every ``unfreeze_every`` epochs one more block thaws.

    Each newly thawed block learns at a smaller rate than the one above it:
    ``lr * backbone_lr_mult * block_lr_decay**(depth - 1)``.
    """

    name: str = "gradual"
    unfreeze_every: int | None = 1
    block_lr_decay: float = 0.5

    def for_run(self, max_epochs: int, n_blocks: int) -> FinetuneStrategy:
        """``unfreeze_every=null``: every block thawed by about 5/6 of the run."""
        if self.unfreeze_every is not None:
            return self
        return replace(self, unfreeze_every=max(1, max_epochs // (max(n_blocks, 1) + 1)))

    def trainable_depth(self, epoch: int) -> int:
        return epoch // self.unfreeze_every

    def block_lr(self, base_lr: float, depth: int, epoch: int) -> float:
        if self.layer_decay is not None:
            return super().block_lr(base_lr, depth, epoch)
        return base_lr * self.backbone_lr_mult * self.block_lr_decay ** (depth - 1)

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        super().validate(max_epochs, n_blocks)
        u, r = self.unfreeze_every, self.block_lr_decay
        _require(u is None or (_integer(u) and u >= 1), "unfreeze_every", u, "null (sized from the run) or an integer >= 1")
        _require(_number(r) and 0 < r <= 1, "block_lr_decay", r, "a number in (0, 1]")
        if u is not None and u >= max_epochs:
            raise FinetuneError(
                f"finetune.unfreeze_every={u} with trainer.max_epochs={max_epochs}: no block ever thaws "
                f"(the first thaws at epoch {u}); lower unfreeze_every or raise max_epochs, or use "
                "finetune=classifier_only if that is what you want"
            )


@dataclass
class LinearProbeThenFinetune(HeadFirst):
    """LP-FT (Kumar et al. 2022): head only for ``probe_epochs``, then every layer, head included,
    at ``lr * backbone_lr_mult``."""

    name: str = "lp_ft"
    probe_epochs: int | None = 1

    def for_run(self, max_epochs: int, n_blocks: int) -> FinetuneStrategy:
        """``probe_epochs=null``: a quarter of the run."""
        return self if self.probe_epochs is not None else replace(self, probe_epochs=max(1, max_epochs // 4))

    def trainable_depth(self, epoch: int) -> int:
        return 0 if epoch < self.probe_epochs else EVERY_BLOCK

    def head_lr(self, base_lr: float, epoch: int) -> float:
        return base_lr if epoch < self.probe_epochs else base_lr * self.backbone_lr_mult

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        super().validate(max_epochs, n_blocks)
        p = self.probe_epochs
        _require(p is None or _integer(p), "probe_epochs", p, "null (a quarter of the run) or an integer >= 1")
        if max_epochs < 2:
            raise FinetuneError(
                f"finetune={self.name} trains in two stages (a probe of the head, then the whole model) but "
                f"trainer.max_epochs={max_epochs} leaves room for one: set trainer.max_epochs=2 or more, or use "
                "finetune=classifier_only for the probe alone"
            )
        if p is not None and not 1 <= p < max_epochs:
            raise FinetuneError(
                f"finetune.probe_epochs={self.probe_epochs} must be in 1..{max_epochs - 1} "
                f"(trainer.max_epochs={max_epochs}) so both stages run"
            )

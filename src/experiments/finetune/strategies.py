"""Fine-tuning strategies: which parameters train in which epoch, at which learning rate.

A strategy is a pure schedule over the model's parameters (see
:class:`experiments.models.core.TransferModel` and :mod:`experiments.finetune.plan`):
``trains(kind, block, n_blocks, epoch)`` says whether a backbone parameter of a kind (``weight``,
``bias``, ``norm``, ``adapter``) in a block trains in an epoch, and ``group_lr`` gives the learning
rates. The block-level strategies say it through ``trainable_depth(epoch)`` (how many blocks,
counted from the head down, train); the parameter-level ones (:mod:`experiments.finetune.parameters`:
BitFit, norm tuning, LoRA) by kind; ``partial`` can name the blocks (surgical fine-tuning). Being
a function of the epoch alone, a resumed run lands in exactly the right state.

Every parameter that ever trains sits in a named optimizer group from the first step (frozen ones
simply get no gradient), so schedulers never see groups appear mid-run (Lightning #12141).

The guidance the options encode:

=====================  ===============  =====================================
domain vs. pretraining  target data     strategy
=====================  ===============  =====================================
similar                small            ``classifier_only`` (or ``lp_ft``)
similar                large            ``partial`` (head + last blocks)
very different         large            ``full`` / ``gradual``
very different         small            transfer unsuitable; ``scratch`` or
                                        collect more data
=====================  ===============  =====================================

``finetune=auto`` (:class:`experiments.finetune.auto.Auto`) places a run in this table from
measurements, races the cell's strategy against its neighbours and trains the winner.
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.errors import FinetuneError
from experiments.config.arguments import is_integer, is_number

EVERY_BLOCK = 10**9  # a trainable depth deeper than any model: every block trains


_number, _integer = is_number, is_integer


def _require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise FinetuneError(f"finetune.{key}={value!r} is invalid: expected {allowed}")


@dataclass
class FinetuneStrategy:
    """Base schedule: everything trains, pretrained blocks at ``lr * backbone_lr_mult``.

    Args:
        name: the strategy's name, for run names and results.
        backbone_lr_mult: learning-rate multiplier of the pretrained blocks (small, so the
            pretrained knowledge is not overwritten).
        layer_decay: if set, block at depth ``d`` below the head learns at ``lr * layer_decay**d``
            instead (timm/BEiT layer-wise decay).
        train_bn: let frozen blocks' BatchNorm layers keep updating running statistics.
        cache_features: ``auto`` | ``true`` | ``false``: train the head on backbone features
            computed once while the backbone is frozen (see :mod:`experiments.finetune.cache`).
        uses_pretrained: False for strategies that must start from random init.
    """

    name: str = "full"
    backbone_lr_mult: float = 0.1
    layer_decay: float | None = None
    train_bn: bool = False
    cache_features: str | bool = "auto"
    uses_pretrained: bool = True

    # -- schedule ------------------------------------------------------------------------------
    def for_run(self, max_epochs: int, n_blocks: int) -> FinetuneStrategy:
        """This strategy with every key left null (sized from the run) filled in: a step budget
        (``train_steps``) decides the epochs only once the data is known."""
        return self

    def trainable_depth(self, epoch: int) -> int:
        """How many blocks, counted from the head, train in ``epoch`` (EVERY_BLOCK for every block)."""
        return EVERY_BLOCK

    def trains(self, kinds: tuple[str, ...], block: int, n_blocks: int, epoch: int) -> bool:
        """Whether a backbone parameter of ``kinds`` (``weight``, ``bias``, ``norm``, ``adapter``: a
        norm layer's bias is ``("norm", "bias")``) in block ``block`` (0: nearest the input, of
        ``n_blocks``) trains in ``epoch``. Here: every parameter but adapters, in the blocks that
        ``trainable_depth(epoch)`` reaches from the head."""
        return "adapter" not in kinds and n_blocks - block <= self.trainable_depth(epoch)

    def inject(self, model: object) -> None:
        """Add modules to ``model`` before training (adapters); nothing for the strategies here."""

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        """Raise FinetuneError when a key is out of range or the schedule cannot apply.

        Strategies import no torch, so the config check calls this before anything heavy loads
        (``n_blocks`` unknown); the pipeline calls it again once the model tells its block count.
        """
        b = self.backbone_lr_mult
        _require(_number(b) and b > 0, "backbone_lr_mult", b, "a number > 0")
        d = self.layer_decay
        _require(d is None or (_number(d) and 0 < d <= 1), "layer_decay", d, "null or a number in (0, 1]")
        c = self.cache_features
        _require(str(c).lower() in {"auto", "true", "false"}, "cache_features", c, "auto, true or false")
        _require(isinstance(self.train_bn, bool), "train_bn", self.train_bn, "true or false")

    #: the kinds a backbone parameter can have, as :meth:`trains` is asked about them (an adapter
    #: only exists once a strategy injected it)
    KINDS = (("weight",), ("bias",), ("norm",), ("norm", "bias"), ("adapter",))

    def backbone_trains(self, n_blocks: int, epoch: int) -> bool:
        """Whether any backbone parameter (of any kind) trains in ``epoch``."""
        return any(self.trains(kinds, block, n_blocks, epoch) for kinds in self.KINDS for block in range(n_blocks))

    def frozen_backbone_epochs(self, max_epochs: int, n_blocks: int) -> int:
        """Number of leading epochs in which no backbone parameter trains."""
        count = 0
        while count < max_epochs and not self.backbone_trains(n_blocks, count):
            count += 1
        return count

    # -- learning rates -------------------------------------------------------------------------
    def head_lr(self, base_lr: float, epoch: int) -> float:
        return base_lr

    def block_lr(self, base_lr: float, depth: int, epoch: int) -> float:
        """Learning rate of the block ``depth`` places below the head (depth 1 = last block)."""
        if self.layer_decay is not None:
            return base_lr * self.layer_decay**depth
        return base_lr * self.backbone_lr_mult

    def group_lr(self, base_lr: float, depth: int, epoch: int, adapter: bool = False) -> float:
        """The rate of an optimizer group: the head's (``depth`` 0) and an injected adapter's
        (new, not pretrained: it learns at the head's rate), else its block's."""
        return self.head_lr(base_lr, epoch) if depth == 0 or adapter else self.block_lr(base_lr, depth, epoch)


@dataclass
class Scratch(FinetuneStrategy):
    """Random init, every block at the full learning rate.

    Args:
        lr_mult: every group's rate is ``optimizer.lr * lr_mult`` (scratch's own rate, apart from
            the one fine-tuning strategies start from).
        steps_mult: the run trains ``steps_mult`` times its budget (``train_steps``, or
            ``trainer.max_epochs`` without one): random weights converge later than pretrained ones.
    """

    name: str = "scratch"
    backbone_lr_mult: float = 1.0
    uses_pretrained: bool = False
    lr_mult: float = 1.0
    steps_mult: float = 1.0

    def head_lr(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.lr_mult

    def block_lr(self, base_lr: float, depth: int, epoch: int) -> float:
        return super().block_lr(base_lr * self.lr_mult, depth, epoch)

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        super().validate(max_epochs, n_blocks)
        _require(_number(self.lr_mult) and self.lr_mult > 0, "lr_mult", self.lr_mult, "a number > 0")
        _require(_number(self.steps_mult) and self.steps_mult >= 1, "steps_mult", self.steps_mult,
                 "a number >= 1 (the run's budget times it)")


@dataclass
class Full(FinetuneStrategy):
    """Pretrained, every block trains at ``lr * backbone_lr_mult`` (or layer-wise decay)."""

    name: str = "full"


@dataclass
class Partial(FinetuneStrategy):
    """The head plus the last ``n_blocks`` blocks train, or the head plus the blocks named by
    ``blocks`` (surgical fine-tuning: ``[0]`` the first block, for input-level shift; negative
    indices count from the last, ``-1`` the last block).
    """

    name: str = "partial"
    n_blocks: int = 1
    blocks: list[int] | None = None

    def trainable_depth(self, epoch: int) -> int:
        return self.n_blocks

    def trains(self, kinds: tuple[str, ...], block: int, n_blocks: int, epoch: int) -> bool:
        if self.blocks is None:
            return super().trains(kinds, block, n_blocks, epoch)
        return "adapter" not in kinds and any(block == (b if b >= 0 else n_blocks + b) for b in self.blocks)

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        super().validate(max_epochs, n_blocks)
        _require(_integer(self.n_blocks) and self.n_blocks >= 1, "n_blocks", self.n_blocks, "an integer >= 1")
        b = self.blocks
        listed = isinstance(b, (list, tuple)) or type(b).__name__ == "ListConfig"
        chosen = list(b) if listed else None
        _require(b is None or (bool(chosen) and all(_integer(x) for x in chosen) and len(set(chosen)) == len(chosen)),
                 "blocks", b, "null (the last n_blocks) or a list of distinct block indices (0: the first, -1: the last)")
        if chosen is not None and n_blocks is not None and any(not -n_blocks <= b < n_blocks for b in chosen):
            raise FinetuneError(
                f"finetune.blocks={chosen} but this model has {n_blocks} blocks: use indices in 0..{n_blocks - 1} "
                f"(or -{n_blocks}..-1 from the last); a run's results.json lists them under finetune_detail.blocks"
            )
        if chosen is None and n_blocks is not None and self.n_blocks > n_blocks:
            raise FinetuneError(
                f"finetune.n_blocks={self.n_blocks} but this model has {n_blocks} blocks; "
                f"choose 1..{n_blocks} (finetune=full trains them all)"
            )

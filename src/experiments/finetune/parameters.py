"""Parameter-level fine-tuning: BitFit, norm tuning and LoRA adapters (through ``peft``).

Each is a strategy on the plan of :mod:`experiments.finetune.plan`: it says which *kinds* of
backbone parameter train, and LoRA injects its adapters before training starts. The head always
trains. Like every strategy the classes import no torch at module level, so the config check can
validate their keys before anything heavy loads; ``peft`` is imported when adapters are injected.

======================  ============================================  ==========================
``finetune=``           what trains (besides the head)                 norm statistics
======================  ============================================  ==========================
``bitfit``              every bias (Ben Zaken et al. 2022)             held (eval mode)
``norm``                the normalisation layers' affine parameters    held (eval mode)
``lora``                low-rank adapters beside the target layers     held (eval mode)
======================  ============================================  ==========================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from experiments.finetune.strategies import FinetuneStrategy, _integer, _number, _require

log = logging.getLogger(__name__)


@dataclass
class ByKind(FinetuneStrategy):
    """The head and the backbone parameters of the kinds in ``kinds``, in every block, from the
    first epoch; their learning rate is ``lr * backbone_lr_mult``."""

    name: str = "by_kind"
    kinds: tuple[str, ...] = ()

    def trains(self, kinds: tuple[str, ...], block: int, n_blocks: int, epoch: int) -> bool:
        return any(kind in self.kinds for kind in kinds)


@dataclass
class BitFit(ByKind):
    """BitFit: the biases (a norm layer's shift included) and the head train; every weight is
    frozen. The biases learn at the head's rate (``backbone_lr_mult=1``: BitFit's own setting, a
    few new degrees of freedom rather than pretrained weights to preserve)."""

    name: str = "bitfit"
    kinds: tuple[str, ...] = ("bias",)
    backbone_lr_mult: float = 1.0


@dataclass
class NormTuning(ByKind):
    """The normalisation layers' affine parameters (scale and shift) and the head train."""

    name: str = "norm"
    kinds: tuple[str, ...] = ("norm",)
    backbone_lr_mult: float = 1.0


#: adapter methods of peft that fit the same seam: one config class each
PEFT_METHODS = ("lora",)


@dataclass
class Lora(FinetuneStrategy):
    """Low-rank adapters (Hu et al. 2021) through ``peft``: beside each target layer ``W`` a
    trainable ``B A`` of rank ``rank`` (scaled by ``alpha / rank``) is added, ``W`` stays frozen;
    the head trains. The adapters learn at the head's rate (they are new, not pretrained).

    Args:
        rank: the adapters' rank ``r``.
        alpha: the scaling numerator (``lora_alpha``).
        dropout: dropout on the adapters' input.
        target_modules: the backbone's module names (exact names or suffixes, as peft takes them),
            or null: the family's default (:func:`default_targets`): a text encoder's
            ``query``/``key``/``value``; a network with depthwise convolutions (EfficientNet,
            MobileNet, ConvNeXt) its pointwise (1x1) convolutions and Linear layers (a ViT's
            ``qkv``/``proj``/``fc1``/``fc2``); any other its Linear layers and convolutions.
            Grouped convolutions are never targets (their adapters cannot be merged). A string is
            a regular expression over the module names (peft's full match).
    """

    name: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str | None = None

    def trains(self, kinds: tuple[str, ...], block: int, n_blocks: int, epoch: int) -> bool:
        return "adapter" in kinds

    def validate(self, max_epochs: int, n_blocks: int | None = None) -> None:
        super().validate(max_epochs, n_blocks)
        _require(_integer(self.rank) and self.rank >= 1, "rank", self.rank, "an integer >= 1")
        _require(_number(self.alpha) and self.alpha > 0, "alpha", self.alpha, "a number > 0")
        _require(_number(self.dropout) and 0 <= self.dropout < 1, "dropout", self.dropout, "a number in [0, 1)")
        t = self.target_modules
        names = isinstance(t, (list, tuple)) or type(t).__name__ == "ListConfig"
        _require(t is None or (isinstance(t, str) and t.strip() != "") or (names and len(t) > 0 and all(isinstance(x, str) and x for x in t)),
                 "target_modules", t, "null (the family's default), a non-empty list of module names or a regular "
                 "expression (peft's full match)")

    def inject(self, model: Any) -> None:
        """Add the adapters to ``model``'s backbone in place (:func:`experiments.models.adapters.inject_lora`)."""
        from experiments.models.adapters import inject_lora

        layers = inject_lora(model, int(self.rank), float(self.alpha), float(self.dropout), self.target_modules)
        log.info("finetune=lora: rank-%d adapters on %d layers of %s", self.rank, layers, model.info.name)

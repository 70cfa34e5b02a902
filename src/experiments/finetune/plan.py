"""The plan of what trains: one row per parameter (its block, its kind), one decision per epoch.

A strategy decides per parameter, as timm's ``param_groups_weight_decay`` and
``group_matcher(reverse=True)`` do, not per block: :func:`parameter_table` says once what every
parameter of a :class:`~experiments.models.core.TransferModel` is,

* ``head``: the classification layer's;
* ``adapter``: injected by the strategy before training (LoRA's ``lora_A``/``lora_B`` through peft);
* ``norm``: the affine parameters of a normalisation layer (BatchNorm, GroupNorm, LayerNorm, ...);
* ``bias``: every bias, a norm layer's shift included (so BitFit trains a BatchNorm network's
  biases, which sit in its norm layers);
* ``weight``: everything else;

A row has one or two kinds (a norm layer's bias is ``norm`` and ``bias``);

and :func:`trainable` asks the strategy, for each row and epoch, whether it trains
(``FinetuneStrategy.trains``). Every consumer reads that one answer: the optimizer groups
(:mod:`experiments.finetune.groups`), the freezing and the norm layers' modes
(:mod:`experiments.finetune.callback`), the record, the feature cache's decision and the
random-init warning.

The rule for normalisation layers: a norm layer's running statistics move only while the whole of
its block trains (or with ``finetune.train_bn=true``); otherwise it is held in eval mode, so tuning
its affine parameters (``finetune=norm``) or biases (``finetune=bitfit``) or an adapter beside it
(``finetune=lora``) leaves the statistics the weights were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.adapters import adapter_parameter_names

#: the normalisation layers (timm's LayerNorm2d, BatchNormAct2d and friends subclass these)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Row:
    """One parameter of the model: its name, block (None: the head), depth below the head (0: the
    head, 1: the last block) and kinds (the first is the one the record counts it under)."""

    name: str
    block: int | None
    depth: int
    kinds: tuple[str, ...]
    param: nn.Parameter = field(compare=False, repr=False)

    @property
    def kind(self) -> str:
        return self.kinds[0]

    @property
    def is_1d(self) -> bool:
        """Biases, norm weights and other vectors (no weight decay on them by default)."""
        return self.param.ndim <= 1


def _norm_names(module: nn.Module) -> set[str]:
    return {f"{path}.{n}" if path else n for path, sub in module.named_modules() if isinstance(sub, NORMS)
            for n, _ in sub.named_parameters(recurse=False)}


def parameter_table(model: Any) -> list[Row]:
    """Every parameter of ``model`` (a TransferModel): the head's first, then the blocks' in order."""
    rows = [Row(f"head.{n}", None, 0, ("head",), p) for n, p in model.head.named_parameters()]
    named = dict(model.backbone.named_parameters())
    adapters, norms = adapter_parameter_names(model.backbone), _norm_names(model.backbone)
    n_blocks = len(model.blocks)
    for index, block in enumerate(model.blocks):
        for name in block.param_names:
            is_bias = name.rsplit(".", 1)[-1] == "bias"
            kinds = (("adapter",) if name in adapters else ("norm", "bias") if name in norms and is_bias else
                     ("norm",) if name in norms else ("bias",) if is_bias else ("weight",))
            rows.append(Row(f"backbone.{name}", index, n_blocks - index, kinds, named[name]))
    return rows


def trainable(rows: list[Row], strategy: FinetuneStrategy, n_blocks: int, epoch: int) -> list[bool]:
    """For each row, whether it trains in ``epoch`` (the head always does)."""
    return [row.block is None or strategy.trains(row.kinds, row.block, n_blocks, epoch) for row in rows]


def ever_trainable(rows: list[Row], strategy: FinetuneStrategy, n_blocks: int, max_epochs: int) -> list[bool]:
    """For each row, whether it trains in some epoch of the run (what the optimizer must hold)."""
    out = [False] * len(rows)
    for epoch in range(max_epochs):
        out = [a or b for a, b in zip(out, trainable(rows, strategy, n_blocks, epoch))]
    return out


def held_norm_layers(model: Any, rows: list[Row], mask: list[bool]) -> list[nn.Module]:
    """The norm layers to hold in eval mode this epoch (unless ``finetune.train_bn``, which the
    callback applies): those with parameters whose block does not train whole. A block trains
    whole when every one of its parameters trains."""
    whole = {}
    for row, on in zip(rows, mask):
        if row.block is not None:
            whole[row.block] = whole.get(row.block, True) and on
    block_of = {row.name.removeprefix("backbone."): row.block for row in rows if row.block is not None}
    held = []
    for path, sub in model.backbone.named_modules():
        if isinstance(sub, NORMS):
            names = [f"{path}.{n}" if path else n for n, _ in sub.named_parameters(recurse=False)]
            blocks = {block_of[n] for n in names if n in block_of}
            if blocks and not all(whole.get(b, False) for b in blocks):
                held.append(sub)
    return held


def summary(model: Any, rows: list[Row], mask: list[bool]) -> dict[str, Any]:
    """The plan's part of ``finetune_detail``: per block, its parameters and how many train; per
    kind, how many parameters train (at the epoch of ``mask``)."""
    blocks = []
    for index, block in enumerate(model.blocks):
        own = [(r, on) for r, on in zip(rows, mask) if r.block == index]
        total = sum(r.param.numel() for r, _ in own)
        trained = sum(r.param.numel() for r, on in own if on)
        blocks.append({"name": block.name, "params": total, "trainable_at_end": bool(own) and trained == total,
                       "trainable_params_at_end": trained})
    kinds: dict[str, int] = {}
    for row, on in zip(rows, mask):
        if on:
            kinds[row.kind] = kinds.get(row.kind, 0) + row.param.numel()
    return {"blocks": blocks, "trainable_by_kind": kinds}

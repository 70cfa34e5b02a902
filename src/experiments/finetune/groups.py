"""Optimizer parameter groups of a fine-tuning strategy, read from the plan of what trains.

One named group per block that ever trains (``block3``), the head (``head``), adapters beside a
block (``block3/adapter``: the head's learning rate), and with ``no_decay_1d`` each split into the
parameters that decay and the 1-D ones that do not (``block3/no_decay``: biases, norm weights,
as timm's ``param_groups_weight_decay``, fastai and the Hugging Face Trainer exclude them).
Used by the LightningModules (``configure_optimizers``) and by the callback that moves their
learning rates (:func:`group_key`); neither imports the other.
"""

from __future__ import annotations

from typing import Any

import torch

from experiments.finetune.plan import ever_trainable, parameter_table
from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel

#: suffixes of a group's name: an adapter group, and the group without weight decay
ADAPTER, NO_DECAY = "adapter", "no_decay"


def block_depths(model: TransferModel) -> list[int]:
    """Depth of each block below the head: the last block is 1, the first is ``len(blocks)``."""
    n = len(model.blocks)
    return [n - i for i in range(n)]


def group_key(name: str, n_blocks: int) -> tuple[int, bool] | None:
    """``(depth below the head, is an adapter group)`` of a group named by :func:`build_param_groups`
    (``head``, ``block3``, ``block3/adapter/no_decay``); None for a group outside the model (a
    domain discriminator's)."""
    base, *suffixes = name.split("/")
    if base == "head":
        return 0, ADAPTER in suffixes
    if base.startswith("block") and base[5:].isdigit():
        return n_blocks - int(base[5:]), ADAPTER in suffixes
    return None


def build_param_groups(model: TransferModel, strategy: FinetuneStrategy, base_lr: float, max_epochs: int,
                       no_decay_1d: bool = False) -> list[dict[str, Any]]:
    """Named optimizer groups holding every parameter that trains in some epoch of the run.

    Parameters that never train (classifier_only's backbone, BitFit's weights) are left out, so
    the optimizer holds only parameters that can change; every group exists from the first step
    (schedulers never see one appear). With ``no_decay_1d`` the 1-D parameters of each group go to
    a twin group with ``weight_decay=0``. Group names show up in LearningRateMonitor's tags.
    """
    rows = parameter_table(model)
    n_blocks = len(model.blocks)
    groups: dict[str, dict[str, Any]] = {}
    for row, ever in zip(rows, ever_trainable(rows, strategy, n_blocks, max_epochs)):
        if not ever:
            continue
        adapter = row.kind == "adapter"
        name = "head" if row.block is None else f"block{row.block}"
        name += f"/{ADAPTER}" if adapter else ""
        decays = not (no_decay_1d and row.is_1d)
        name += "" if decays else f"/{NO_DECAY}"
        if name not in groups:
            groups[name] = {"name": name, "params": [], "lr": strategy.group_lr(base_lr, row.depth, 0, adapter)}
            if not decays:
                groups[name]["weight_decay"] = 0.0
        groups[name]["params"].append(row.param)
    return list(groups.values())


def count_parameters(model: torch.nn.Module, groups: list[dict[str, Any]]) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for g in groups for p in g["params"])
    return {"total": total, "trainable": trainable}

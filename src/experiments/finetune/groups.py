"""Optimizer parameter groups of a fine-tuning strategy: one named group per block that ever trains.

Used by the LightningModule (``configure_optimizers``) and by the callback that moves their
learning rates; neither imports the other.
"""

from __future__ import annotations

from typing import Any

import torch

from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel


def block_depths(model: TransferModel) -> list[int]:
    """Depth of each block below the head: the last block is 1, the first is ``len(blocks)``."""
    n = len(model.blocks)
    return [n - i for i in range(n)]


def build_param_groups(
    model: TransferModel, strategy: FinetuneStrategy, base_lr: float, max_epochs: int
) -> list[dict[str, Any]]:
    """Named optimizer groups for every parameter that trains in some epoch of the run.

    Blocks that never train (classifier_only's backbone) are left out, so the optimizer holds only
    parameters that can change. Group names show up in LearningRateMonitor's tags.
    """
    deepest = strategy.max_depth(max_epochs)
    groups = [{"name": "head", "params": model.head_parameters(), "lr": strategy.head_lr(base_lr, 0)}]
    for index, depth in enumerate(block_depths(model)):
        if depth <= deepest:
            params = model.block_parameters(index)
            if params:
                groups.append(
                    {"name": f"block{index}", "params": params, "lr": strategy.block_lr(base_lr, depth, 0)}
                )
    return groups


def count_parameters(model: torch.nn.Module, groups: list[dict[str, Any]]) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for g in groups for p in g["params"])
    return {"total": total, "trainable": trainable}

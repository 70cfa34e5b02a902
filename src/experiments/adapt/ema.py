"""An exponential-moving-average copy of a network (the mean teacher)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_teacher(student: nn.Module) -> nn.Module:
    """A detached copy of ``student`` that only :func:`ema_update` changes (no gradients)."""
    teacher = copy.deepcopy(student)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher = decay * teacher + (1 - decay) * student`` for every parameter (frozen ones
    included, so the teacher follows a strategy's frozen blocks too); buffers (BatchNorm running
    statistics, counters) are copied. Both networks must have the same architecture."""
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    torch._foreach_mul_(t_params, decay)
    torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1.0 - decay)
    for t_buffer, s_buffer in zip(teacher.buffers(), student.buffers()):
        t_buffer.copy_(s_buffer)

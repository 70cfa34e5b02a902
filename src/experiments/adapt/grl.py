"""Gradient reversal (Ganin & Lempitsky 2015) and the DANN schedule of its strength.

The layer is the identity going forward and multiplies the incoming gradient by ``-lambda`` going
back, so one backward pass trains a domain discriminator to tell the domains apart while the
features before it learn to make that impossible.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GradientReversalFunction(torch.autograd.Function):
    """``forward(x, lambda) = x``; ``backward(g) = -lambda * g`` (no gradient for ``lambda``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output.neg() * ctx.lambda_, None


def reverse_gradient(x: torch.Tensor, lambda_: float) -> torch.Tensor:
    return GradientReversalFunction.apply(x, lambda_)


class GradientReversal(nn.Module):
    """The identity with a reversed, ``lambda_``-scaled gradient; set ``lambda_`` between steps."""

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_:.4g}"


def dann_lambda(progress: float, gamma: float = 10.0, lambda_max: float = 1.0) -> float:
    """DANN's schedule ``lambda_max * (2 / (1 + exp(-gamma * p)) - 1)`` for training progress
    ``p`` in [0, 1] (clamped): 0 at the start, rising to about ``lambda_max`` at the end, so the
    discriminator's noisy early gradients do not disturb the features."""
    p = min(max(float(progress), 0.0), 1.0)
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)

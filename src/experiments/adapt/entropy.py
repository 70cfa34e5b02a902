"""Prediction entropy and the certainty weights built on it (CDAN's entropy conditioning, MCC's
sample weights, the label-free validators)."""

from __future__ import annotations

import torch


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-row entropy (nats) of probabilities ``(B, K)``."""
    return -(probs * probs.clamp_min(1e-8).log()).sum(dim=-1)


def certainty_weights(probs: torch.Tensor) -> torch.Tensor:
    """``1 + exp(-H(p))`` per row of ``probs`` ``(B, K)``, normalised to mean 1 (no gradient:
    the weights say how much a sample counts, they are not trained)."""
    weights = 1.0 + torch.exp(-entropy(probs.detach()))
    return weights / weights.mean()

"""The domain discriminator: an MLP from backbone features ``(B, F)`` to one domain logit."""

from __future__ import annotations

import torch
from torch import nn

from experiments.errors import ConfigError


class DomainDiscriminator(nn.Sequential):
    """``Linear(F, h) - ReLU - [Dropout]`` repeated ``layers - 1`` times, then ``Linear(h, 1)``.

    Args:
        in_features: the backbone's feature size ``F``.
        hidden: width ``h`` of the hidden layers.
        layers: number of Linear layers (>= 1; 1 is a logistic regression on the features).
        dropout: dropout after each hidden ReLU (0 leaves it out).

    ``forward`` maps ``(B, F)`` to ``(B,)`` logits of "this sample is from the source domain".
    """

    def __init__(self, in_features: int, hidden: int = 256, layers: int = 2, dropout: float = 0.0) -> None:
        if layers < 1 or hidden < 1:
            raise ConfigError(f"adapt.layers={layers} / adapt.hidden={hidden}: both must be >= 1")
        if not 0 <= dropout < 1:
            raise ConfigError(f"adapt.dropout={dropout} must be in [0, 1)")
        modules: list[nn.Module] = []
        width = in_features
        for _ in range(layers - 1):
            modules += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            if dropout:
                modules.append(nn.Dropout(dropout))
            width = hidden
        modules.append(nn.Linear(width, 1))
        super().__init__(*modules)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).squeeze(-1)

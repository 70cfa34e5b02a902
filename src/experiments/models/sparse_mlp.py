"""An MLP for sparse inputs (``model=sparse_mlp``): the first layer multiplies the sparse batch.

``torch.sparse.mm(x, W)`` with ``x`` a sparse ``(B, in_features)`` batch (COO, CSR or CSC) costs
O(nnz * hidden) and never builds the dense ``(B, in_features)`` matrix; the gradient of ``W`` is
taken through the same sparse product. Dense inputs (the baseline, or images) are flattened and go
through an ordinary matrix product, so the model also runs on dense data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class SparseLinear(nn.Module):
    """``y = x @ weight + bias`` for a sparse or dense ``x`` of shape ``(B, in_features)``.

    ``weight`` is stored ``(in_features, out_features)`` (the transpose of nn.Linear's), so the
    sparse product needs no transposed copy of it. Initialised like nn.Linear.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.strided:
            out = x.flatten(1) @ self.weight
        else:
            out = torch.sparse.mm(x, self.weight)
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SparseMLP(nn.Module):
    """``SparseLinear -> ReLU -> Dropout`` then ``(Linear -> ReLU -> Dropout)`` per further hidden
    width, then the classifier ``fc``.

    Args:
        num_classes: output classes.
        in_chans: the input width (for sparse data, ``n_features``; the data gives it).
        input_hw: for image-shaped dense data, the spatial size flattened into the input width.
        hidden: hidden widths, first (the sparse layer's output) to last.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        input_hw: Sequence[int] | None = None,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("SparseMLP needs at least one hidden width")
        widths = [int(w) for w in hidden]
        self.input = SparseLinear(in_chans * math.prod(input_hw or ()), widths[0])
        layers: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(dropout)]
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.input(x)))

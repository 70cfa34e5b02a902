"""The linear head fitted to convergence on cached features before the first epoch (``head_fit=lbfgs``).

With a frozen backbone the head is a multinomial logistic regression on fixed features: a convex
problem that a full-batch quasi-Newton solver (``torch.optim.LBFGS``) solves in a fraction of a
second, where a few dozen small SGD steps on 10 labels per class barely leave the random init.
The fit

* standardises the features (mean and standard deviation of the training features), so one
  regularisation scale suits every backbone, and folds the scaling back into the head's weights
  (``W' = W / std``, ``b' = b - W' mean``): the head keeps taking raw features;
* tries each L2 strength of ``L2_GRID`` and keeps the one with the best accuracy (then the lowest
  loss) on the validation features, the run's own (few-shot: limited) validation split; the test
  split is never read.

scikit-learn's ``LogisticRegression`` solves the same problem, but it would move every feature to
NumPy and back and knows nothing of the head; the torch solver fits the head in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

#: L2 penalties tried (on the mean cross-entropy of standardised features)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class HeadFit:
    """What the fit chose and measured (for results.json)."""

    l2: float
    train_acc: float
    val_acc: float | None
    seconds: float
    val_acc_by_l2: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, object]:
        return {"method": "lbfgs", "l2": self.l2, "train_acc": round(self.train_acc, 4),
                "val_acc": None if self.val_acc is None else round(self.val_acc, 4),
                "val_acc_by_l2": self.val_acc_by_l2, "seconds": round(self.seconds, 3)}


def _solve(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    solver = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                               tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        solver.step(closure)
    return weight.detach(), bias.detach()


def _accuracy_and_loss(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[float, float]:
    logits = x @ weight.T + bias
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def fit_linear_head(head: nn.Linear, train: tuple[torch.Tensor, torch.Tensor],
                    val: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 200,
                    l2_grid: tuple[float, ...] = L2_GRID) -> HeadFit:
    """Fit ``head`` (in place) to ``train = (features (N, F), labels (N,))``: minimises the mean
    cross-entropy of the standardised features plus ``l2 * ||W||^2``; ``l2`` is chosen from
    ``l2_grid`` on ``val`` (the training accuracy decides when there is no validation data).

    Raises ValueError when ``head`` is not an ``nn.Linear`` of the features' width.
    """
    if not isinstance(head, nn.Linear) or head.bias is None or head.in_features != train[0].shape[1]:
        raise ValueError(f"head_fit needs an nn.Linear head with a bias taking {train[0].shape[1]} features, got {head}")
    start = time.perf_counter()
    x, y = train[0].double(), train[1].long()
    mean, std = x.mean(0), x.std(0, correction=0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    z = (x - mean) / std
    zv, yv = ((val[0].double() - mean) / std, val[1].long()) if val is not None and len(val[1]) else (None, None)
    best, best_key, by_l2 = None, None, {}
    for l2 in l2_grid:
        weight, bias = _solve(z, y, head.out_features, l2, max_iter)
        train_acc, train_loss = _accuracy_and_loss(z, y, weight, bias)
        if zv is not None:
            val_acc, val_loss = _accuracy_and_loss(zv, yv, weight, bias)
            by_l2[str(l2)] = round(val_acc, 4)
            key = (val_acc, -val_loss)
        else:
            val_acc, key = None, (train_acc, -train_loss)
        if best_key is None or key > best_key:
            best, best_key = (l2, weight, bias, train_acc, val_acc), key
    l2, weight, bias, train_acc, val_acc = best
    folded = weight / std
    with torch.no_grad():
        head.weight.copy_(folded.to(head.weight))
        head.bias.copy_((bias - folded @ mean).to(head.bias))
    return HeadFit(l2, train_acc, val_acc, time.perf_counter() - start, by_l2)

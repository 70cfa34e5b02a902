"""``finetune=auto``'s measurements, taken before fitting on the target's training split alone.

No source data is needed: what the pretrained model knows of its source is in its weights.

* **Samples per class**: the training split's labels, read from the data (not through transforms).
* **BatchNorm shift**, per block and overall: forward hooks on every BatchNorm layer of the
  backbone collect the per-channel mean and variance of the layer's input over the target's
  training images, with the network in eval mode (each layer normalised by the statistics stored
  in the weights, as the pretrained network sees the target). Per channel, the symmetric KL
  divergence between N(running_mean, running_var), what the source looked like, and the target's
  N(mean, var), ``J = ((v_r + d**2) / v_t + (v_t + d**2) / v_r) / 4 - 1/2`` (``d`` the difference
  of the means, both variances plus the layer's ``eps``), is mapped to ``1 - exp(-J)`` in [0, 1),
  so a dead channel cannot outweigh the others. A layer's shift is the mean over its channels, a
  block's the mean over its layers, the overall shift the mean over all layers; 0 means the target
  has exactly the statistics the weights were trained on. Early blocks show input-level shift
  (colour, texture), late blocks shift in what the features encode.
* **Linear probe**: the backbone's features of the same training images, from the feature cache's
  extraction (``extract_features``: ``Trainer.predict``, eval and inference mode; the pass that
  feeds the hooks), a multinomial logistic regression on them (standardised
  features, L2 chosen on validation: :mod:`experiments.finetune.head_fit`, the fit that
  ``head_fit=lbfgs`` gives the head), its accuracy on the validation split's features. The test
  split is never read.

At most ``finetune.max_samples`` training and validation images are measured (a seeded choice).
:func:`experiments.finetune.decide.decide` turns the numbers into the prior (:mod:`experiments.finetune.auto`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.transforms import TensorImageDataset
from experiments.config.domains import is_domain_pair
from experiments.errors import ConfigError
from experiments.finetune.decide import Measurements
from experiments.finetune.cache import extract_features
from experiments.finetune.auto import Auto
from experiments.models.core import TransferModel, batchnorm_layers

log = logging.getLogger(__name__)


def measure(auto: Auto, datamodule: ClassificationDataModule, model: TransferModel,
            trainer_cfg: Mapping[str, Any]) -> Measurements:
    """Samples per class always; BatchNorm shift and the probe for pretrained weights only."""
    if is_domain_pair(datamodule):
        raise ConfigError(
            f"finetune=auto measures one labelled target, but data={datamodule.name} is a domain pair for "
            "adapt=: choose the strategy yourself (finetune=full, partial, ...)"
        )
    datamodule.setup("fit")
    labels = dataset_labels(datamodule.train_set)
    num_classes = datamodule.num_classes
    measured = Measurements(
        num_classes=num_classes,
        samples_per_class=round(len(labels) / max(num_classes, 1), 1),
        pretrained=model.info.weights != "random",
        blocks=tuple(block.name for block in model.blocks),
        block_shift=(None,) * len(model.blocks),
    )
    if not measured.pretrained:
        return measured
    device = {k: trainer_cfg[k] for k in ("accelerator", "precision") if k in trainer_cfg}
    device["devices"] = 1
    seed = int(getattr(datamodule, "seed", 0))
    with BatchNormStatistics(model) as statistics:
        train = extract_features(device, model, _sample_loader(datamodule, datamodule.train_set, auto.max_samples, seed))
    val = extract_features(device, model, _sample_loader(datamodule, datamodule.val_set, auto.max_samples, seed))
    per_block, overall = statistics.shift(len(model.blocks))
    return replace(measured, block_shift=tuple(per_block), overall_shift=overall,
                   probe_acc=linear_probe_accuracy(train, val))


def _sample_loader(datamodule: ClassificationDataModule, dataset: Dataset, limit: int, seed: int) -> DataLoader:
    """An evaluation-order loader over ``dataset``, or a seeded choice of ``limit`` of its items."""
    if len(dataset) > limit:
        chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
        dataset = Subset(dataset, torch.sort(chosen).values.tolist())
    return datamodule.make_loader(dataset, train=False)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The labels of every item of ``dataset``, as a 1-D tensor.

    Read from a ``labels`` tensor below the wrappers (transforms, subsets) when there is one, so no
    sample is loaded or transformed; otherwise item by item.
    """
    index: torch.Tensor | None = None
    inner: Any = dataset
    while inner is not None:
        if isinstance(inner, Subset):
            own = torch.as_tensor(list(inner.indices), dtype=torch.long)
            index = own if index is None else own[index]
        labels = getattr(inner, "labels", None)
        if isinstance(labels, torch.Tensor) and labels.dim() == 1:
            return labels if index is None else labels[index]
        inner = getattr(inner, "dataset", None)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def gaussian_shift(mean_a: torch.Tensor, var_a: torch.Tensor, mean_b: torch.Tensor, var_b: torch.Tensor,
                   eps: float = 1e-5) -> torch.Tensor:
    """Per channel ``1 - exp(-J)``, ``J`` the symmetric KL divergence of N(mean_a, var_a) and
    N(mean_b, var_b) (variances plus ``eps``): 0 for equal statistics, towards 1 when far apart."""
    va, vb = var_a.double() + eps, var_b.double() + eps
    d2 = (mean_a.double() - mean_b.double()) ** 2
    divergence = ((va + d2) / vb + (vb + d2) / va) / 4 - 0.5
    return 1 - torch.exp(-divergence.clamp_min(0))


class BatchNormStatistics:
    """Per-channel mean and variance of every BatchNorm layer's input while active (a context).

    Batches combine exactly (Chan et al.'s pairwise update, in float64 on the CPU), so the result
    is the statistics of all the images that passed, whatever the batch size.
    """

    def __init__(self, model: TransferModel) -> None:
        self.layers = _batchnorm_layers(model)
        self._stats: dict[str, tuple[float, torch.Tensor, torch.Tensor]] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> BatchNormStatistics:
        for name, module, _ in self.layers:
            self._handles.append(module.register_forward_hook(self._collector(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _collector(self, name: str):
        def collect(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0].detach().float()
            dims = [0, *range(2, x.dim())]
            n = x.numel() / x.shape[1]
            var, mean = torch.var_mean(x, dim=dims, correction=0)
            mean, var = mean.to("cpu", torch.float64), var.to("cpu", torch.float64)
            if name in self._stats:
                n0, mean0, var0 = self._stats[name]
                total = n0 + n
                delta = mean - mean0
                mean = mean0 + delta * n / total
                var = (var0 * n0 + var * n + delta**2 * n0 * n / total) / total
                n = total
            self._stats[name] = (n, mean, var)

        return collect

    def layer_shift(self) -> dict[str, float]:
        """The shift of each layer that saw data: mean over its channels of :func:`gaussian_shift`."""
        out = {}
        for name, module, _ in self.layers:
            if name in self._stats:
                _, mean, var = self._stats[name]
                shift = gaussian_shift(module.running_mean.cpu(), module.running_var.cpu(), mean, var, module.eps)
                out[name] = float(shift.mean())
        return out

    def shift(self, n_blocks: int) -> tuple[list[float | None], float | None]:
        """Per block (mean over its layers; None without one) and overall (mean over all layers)."""
        per_layer = self.layer_shift()
        grouped: list[list[float]] = [[] for _ in range(n_blocks)]
        for name, _, block in self.layers:
            if name in per_layer and block is not None:
                grouped[block].append(per_layer[name])
        per_block = [sum(values) / len(values) if values else None for values in grouped]
        overall = sum(per_layer.values()) / len(per_layer) if per_layer else None
        return per_block, overall


def _batchnorm_layers(model: TransferModel) -> list[tuple[str, nn.Module, int | None]]:
    """``(name, module, block index)`` of the backbone's BatchNorm layers with stored statistics.

    A layer belongs to the block of its own parameters, or (affine-free) of the last parameters
    registered before it.
    """
    block_of = {name: i for i, block in enumerate(model.blocks) for name in block.param_names}
    with_stats = batchnorm_layers(model.backbone)
    layers, current = [], None
    for name, module in model.backbone.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if own and own[0] in block_of:
            current = block_of[own[0]]
        if name in with_stats:
            layers.append((name, module, current))
    return layers


def linear_probe_accuracy(train: TensorImageDataset, val: TensorImageDataset) -> float | None:
    """Validation accuracy of the linear head :func:`~experiments.finetune.head_fit.fit_linear_head`
    fits on ``(features, label)`` pairs: the same probe ``head_fit=lbfgs`` trains (None when the
    training features hold fewer than two classes or there is no validation data)."""
    from experiments.finetune.head_fit import fit_linear_head

    x, y = train.tensors
    if len(torch.unique(y)) < 2 or len(val) == 0:
        return None
    num_classes = int(max(int(y.max()), int(val.tensors[1].max()))) + 1
    return fit_linear_head(nn.Linear(x.shape[1], num_classes), train.tensors, val.tensors).val_acc

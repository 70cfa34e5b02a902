"""timm models by name (including ``hf-hub:`` names), with timm's own pretrained loading."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from experiments.errors import ModelError, WeightsError
from experiments.models import packaged_weights
from experiments.models.core import ModelInfo, ModelSpec, Preprocessing, find_head
from experiments.models.naming import closest_names
from experiments.models.weights import is_offline, offline_message

log = logging.getLogger(__name__)
HUB_HOST = "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check that the model hub answers, so an offline machine fails in seconds.

    huggingface_hub otherwise retries each file for ~47 s before giving up. Behind a proxy the
    direct check says nothing, so a configured proxy counts as reachable.
    """
    if is_offline():
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_if_unreachable() -> Iterator[bool]:
    """Put huggingface_hub in offline mode (cache only) while the hub cannot be reached."""
    from huggingface_hub import constants

    offline = not hub_reachable()
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or offline
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = previous


def check_name(name: str) -> None:
    import timm

    if name.startswith("hf-hub:") or timm.is_model(name):
        return
    raise ModelError(
        f"model.name={name!r} is not a timm model; closest: {closest_names(name, timm.list_models())} "
        "(list them: python -m experiments.models.listing timm '*pattern*')"
    )


def build(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    head: str | None = None,
    **kwargs: Any,
) -> ModelSpec:
    """Any timm model as a :class:`ModelSpec`, its classifier created for ``num_classes``.

    Grey-scale data goes in as is: ``in_chans`` is passed to timm, which adapts the pretrained
    first convolution (summing its RGB filters) instead of repeating channels in the data.
    ``kwargs`` go to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``).
    """
    import timm
    from huggingface_hub import constants

    check_name(name)
    packaged = packaged_weights.find(name) if pretrained else None  # an installed package holds them
    try:
        with hub_offline_if_unreachable() as offline:
            net = timm.create_model(name, pretrained=bool(pretrained) and packaged is None, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        if not pretrained and not name.startswith("hf-hub:"):
            raise
        reason = "offline and not in the cache" if offline else f"download failed ({type(err).__name__}: {err})"
        looked_in = f"the Hugging Face cache {constants.HF_HUB_CACHE} and {_torch_hub_dir()}{packaged_weights.install_hint(name)}"
        raise WeightsError(offline_message(f"timm {name}", looked_in, reason)) from err
    if packaged is not None:
        packaged.load_into(net, in_chans)
    data_cfg = timm.data.resolve_data_config({}, model=net)
    fixed = bool(net.pretrained_cfg.get("fixed_input_size", False))
    preprocessing = Preprocessing(
        in_chans=in_chans,
        input_size=(in_chans, *data_cfg["input_size"][1:]),
        mean=tuple(data_cfg["mean"]) if pretrained else None,
        std=tuple(data_cfg["std"]) if pretrained else None,
        interpolation=data_cfg.get("interpolation", "bilinear"),
        min_size=tuple(data_cfg["input_size"][1:]) if fixed else None,
    )
    head_path = head or net.pretrained_cfg.get("classifier") or find_head(net)
    if isinstance(head_path, (list, tuple)):  # distilled models list two heads; the first is the classifier
        head_path = head_path[0]
    source = packaged.label if packaged else f"timm:{net.pretrained_cfg.get('hf_hub_id') or name}"
    info = ModelInfo("timm", name, weights=source if pretrained else "random")
    return ModelSpec(net, head_path, net.group_matcher(coarse=True), preprocessing, info)


def _torch_hub_dir() -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")

"""Weights from anywhere: library caches, local state dicts, safetensors, our own checkpoints.

Every load is ``torch.load(..., weights_only=True)`` or safetensors: no file can run code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from experiments.errors import WeightsError

log = logging.getLogger(__name__)

OFFLINE_ENV = ("EXPERIMENTS_OFFLINE", "HF_HUB_OFFLINE")


def is_offline() -> bool:
    """True when the user or the environment declared there is no network."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes"} for v in OFFLINE_ENV)


def offline_message(model: str, looked_in: str, reason: str, packaged: str = "model=efficientnet_lite0") -> str:
    """The one paragraph for weights that cannot be had: the cache, a local file, random init, or
    ``packaged`` (a model whose weights install as a package)."""
    return (
        f"pretrained weights for {model} are not available: {reason}. Looked in {looked_in}. "
        "Put the file there (copied from a machine with internet, where the weights download once "
        "into that cache), give a local file with model.weights=PATH (.pth, .safetensors or a .ckpt "
        "of an earlier run), train from random init with model.pretrained=false, or use a pretrained "
        f"model that installs as a package and needs no download: {packaged}"
    )


def download_or_explain(url: str, model: str) -> dict[str, torch.Tensor]:
    """A state dict from ``url`` through torch.hub's cache (``$TORCH_HOME/hub/checkpoints``).

    A cached file loads without network. Otherwise it is downloaded; with no network (or
    EXPERIMENTS_OFFLINE=1 / HF_HUB_OFFLINE=1) a WeightsError names the model, the cache path and
    the two ways out, in a few seconds rather than after long retries.
    """
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / os.path.basename(url.split("?")[0])
    if not cached.exists() and is_offline():
        raise WeightsError(offline_message(model, str(cached), "offline mode is set and the file is not cached"))
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir=str(cache_dir), map_location="cpu", progress=False, weights_only=True
        )
    except OSError as err:  # URLError, socket errors, DNS failures are all OSErrors
        raise WeightsError(offline_message(model, str(cached), f"download of {url} failed ({err})")) from err


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth``/``.pt``/``.bin`` state dict or a Lightning ``.ckpt``.

    Nested ``state_dict`` / ``model`` entries are unwrapped; a Lightning checkpoint of this
    framework has its ``model.`` prefix stripped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights={str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as err:
            raise WeightsError(
                f"model.weights={str(path)!r} is not a readable safetensors file ({err}); it is truncated, "
                "corrupt or another format: download or export it again"
            ) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses pickled code: say so instead of a pickle trace
        raise WeightsError(
            f"model.weights={str(path)!r} could not be read as a tensors-only file ({err}); "
            "save it with torch.save(model.state_dict(), path) or safetensors"
        ) from err
    from experiments.checkpoints.frozen import restore_frozen

    obj = restore_frozen(obj, path.parent, f"model.weights={str(path)!r}")  # a checkpoint's frozen tensors
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"model.weights={str(path)!r} holds a {type(obj).__name__}, not a state dict")
    if path.suffix == ".ckpt":
        obj = evaluated_network(obj, path)
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


#: where a checkpoint of this framework holds the network its run evaluated, first match wins: a
#: mean teacher's EMA copy (what its validation and test scored), else the module's TransferModel
EVALUATED_PREFIXES = ("adapt.teacher.", "model.")


def evaluated_network(state: dict, path: Path) -> dict:
    """The backbone and head of a Lightning checkpoint of this framework, without the ``model.``
    prefix; a domain-adaptation checkpoint's method parts (a domain discriminator, a student) are
    left out and logged. A state dict of another layout is returned unchanged."""
    for prefix in EVALUATED_PREFIXES:
        network = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if network and all(k.startswith(("backbone.", "head.")) for k in network):
            left = sorted({".".join(k.split(".")[:2]) for k in state if not k.startswith(prefix)})
            if left:
                log.info("weights %s: the network %s is loaded; %s left out (the adaptation method's)",
                         path, prefix.rstrip(".") or "model", left)
            return network
    return state


def to_transfer_layout(state: dict[str, torch.Tensor], native_head: str) -> dict[str, torch.Tensor]:
    """Map a native state dict (``fc.weight``) to TransferModel keys (``head.weight``).

    Keys already in the ``backbone.`` / ``head.`` layout pass through unchanged.
    """
    if all(k.startswith(("backbone.", "head.")) for k in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        if key.startswith(native_head + "."):
            out["head." + key[len(native_head) + 1 :]] = value
        else:
            out["backbone." + key] = value
    return out


def load_weights_file(model: torch.nn.Module, path: str | os.PathLike, native_head: str) -> dict[str, list[str]]:
    """Load a weights file into a TransferModel; the head is kept only if its shape fits.

    Missing and unexpected keys are reported in one log line each; any mismatch outside the head
    is a WeightsError (a file of another architecture must not half-load silently).
    Returns ``{"missing": [...], "unexpected": [...], "dropped_head": [...]}``.
    """
    state = to_transfer_layout(read_state_dict(path), native_head)
    if any(".lora_A." in k for k in state):  # a finetune=lora run's checkpoint: its adapters folded in
        state = merged_lora_state(model, state, Path(path))
    own = model.state_dict()
    dropped = [k for k in state if k.startswith("head.") and (k not in own or own[k].shape != state[k].shape)]
    for key in dropped:
        del state[key]
    if dropped:
        log.info("weights %s: head not loaded (shape differs from the new head): %s", path, dropped)
    shape_clash = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if shape_clash:
        raise WeightsError(f"model.weights={str(path)!r} does not fit this model: {'; '.join(shape_clash[:5])}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    unexpected = list(result.unexpected_keys)
    log.info("weights %s: missing keys: %s", path, result.missing_keys or "none")
    log.info("weights %s: unexpected keys: %s", path, unexpected or "none")
    if missing or unexpected:
        raise WeightsError(
            f"model.weights={str(path)!r} does not match the backbone: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Is it "
            "the same architecture as model.name?"
        )
    model.info.weights = f"file:{path}"
    return {"missing": list(result.missing_keys), "unexpected": unexpected, "dropped_head": dropped}


def merged_lora_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The network of a ``finetune=lora`` checkpoint with its adapters merged into the base layers,
    in the plain layout ``model`` has: a copy of ``model`` gets the adapters its run's saved config
    names (``.hydra/config.yaml`` beside the run's ``checkpoints/``: rank, alpha, targets), the
    file's backbone is loaded into it and peft merges the adapters. The file's head passes as it is."""
    import copy

    from omegaconf import OmegaConf

    from experiments.models.adapters import inject_lora, merge_adapters_of

    saved = path.resolve().parent.parent / ".hydra" / "config.yaml"
    finetune = OmegaConf.select(OmegaConf.load(saved), "finetune") if saved.is_file() else None
    if finetune is None or OmegaConf.select(finetune, "rank") is None:
        raise WeightsError(
            f"model.weights={str(path)!r} holds LoRA adapters, but no {saved} says their rank and targets: "
            "export the run merged (python run.py mode=export export.format=safetensors ckpt_path=...) and give "
            "that file, or keep the checkpoint in its run dir"
        )
    twin = copy.deepcopy(model)
    targets = OmegaConf.select(finetune, "target_modules")
    inject_lora(twin, int(finetune.rank), float(finetune.alpha), 0.0,
                targets if targets is None or isinstance(targets, str) else list(targets))
    result = twin.load_state_dict({k: v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
    missing = [k for k in result.missing_keys if k.startswith("backbone.")]
    if missing or result.unexpected_keys:
        raise WeightsError(f"model.weights={str(path)!r}: its LoRA adapters do not fit this model ({len(missing)} "
                           f"missing, e.g. {missing[:3]}; {len(result.unexpected_keys)} unexpected): is it the same "
                           "architecture as model.name?")
    merged = merge_adapters_of(twin)
    log.info("weights %s: %d LoRA adapters merged into their layers", path, merged)
    plain = {k: v for k, v in twin.state_dict().items() if k.startswith("backbone.")}
    return {**plain, **{k: v for k, v in state.items() if k.startswith("head.")}}

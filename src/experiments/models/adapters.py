"""Adapters inside a TransferModel's backbone, through ``peft``: injected, found, merged.

``finetune=lora`` injects them before training (:func:`inject_lora`); ``mode=export`` and a LoRA
checkpoint given as ``model.weights=`` fold them into the base layers (:func:`merge_adapters`), so
what leaves the framework is a plain model. ``peft`` is imported only here, when adapters are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from experiments.errors import FinetuneError
from experiments.models.modules import replace_module


def default_targets(model: Any) -> list[str]:
    """The backbone's module names LoRA adapts by default, by family: a text encoder's
    ``query``/``key``/``value``; a network with depthwise convolutions (EfficientNet, MobileNet,
    ConvNeXt) its Linear layers and pointwise (1x1) convolutions (a ViT: ``qkv``, ``proj``, ``fc1``,
    ``fc2``); any other its Linear layers and convolutions. Grouped convolutions are never targets
    (peft cannot merge their adapters)."""
    named = list(model.backbone.named_modules())
    if getattr(model.info, "family", "") == "hf_text":
        return [n for n, m in named if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in ("query", "key", "value")]
    linear = [n for n, m in named if isinstance(m, nn.Linear)]
    convs = [(n, m) for n, m in named if isinstance(m, nn.Conv2d) and m.groups == 1]
    depthwise = any(isinstance(m, nn.Conv2d) and m.groups > 1 for _, m in named)
    return linear + [n for n, m in convs if not depthwise or tuple(m.kernel_size) == (1, 1)]


def inject_lora(model: Any, rank: int, alpha: float, dropout: float, targets: Sequence[str] | str | None = None) -> int:
    """LoRA adapters beside ``targets`` (module names of ``model.backbone``; None: :func:`default_targets`),
    in place (peft's ``inject_adapter_in_model``); the model's blocks are re-indexed over the new
    parameters. Returns how many layers were adapted."""
    from peft import LoraConfig, inject_adapter_in_model

    names = targets if isinstance(targets, str) else list(targets) if targets is not None else default_targets(model)
    if not names:
        raise FinetuneError(
            f"finetune=lora found no layer of {model.info.name} to adapt (no Linear or ungrouped convolution in "
            "its backbone): name them with finetune.target_modules=[...], or use finetune=full or partial"
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none")
    try:
        inject_adapter_in_model(config, model.backbone)
    except ValueError as err:  # peft: a target that matches nothing, or a layer type it cannot adapt
        raise FinetuneError(f"finetune.target_modules={names}: {err}; the backbone's modules are named as in "
                            "model.backbone.named_modules()") from err
    model.reindex_blocks()
    return len(adapted_layers(model.backbone))


def tuner_layers(module: Any) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every layer of ``module`` that carries an adapter (a peft tuner
    layer); none when peft is not installed (then no adapter can have been injected)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return []
    return [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


def adapted_layers(module: Any) -> list[str]:
    """The names of ``module``'s layers that carry an adapter."""
    return [name for name, _ in tuner_layers(module)]


def adapter_parameter_names(module: Any) -> set[str]:
    """Names (relative to ``module``) of the parameters the adapters added, not their base layers'."""
    names: set[str] = set()
    for path, layer in tuner_layers(module):
        own = {id(p) for p in layer.get_base_layer().parameters()}
        names |= {f"{path}.{n}" if path else n for n, p in layer.named_parameters() if id(p) not in own}
    return names


def merge_adapters(module: Any) -> int:
    """Fold every adapter of ``module`` into its base layer and put the plain layer back, in place
    (what peft's ``merge_and_unload`` does on its ``PeftModel`` wrapper, which a TransferModel
    does not keep); returns how many layers were merged. The result is a plain model: it exports
    to ONNX and TorchScript like one."""
    layers = tuner_layers(module)
    for name, layer in layers:
        layer.merge(safe_merge=True)
        replace_module(module, name, layer.get_base_layer())
    return len(layers)


def merge_adapters_of(model: Any) -> int:
    """:func:`merge_adapters` on a TransferModel's backbone, its blocks re-indexed after."""
    merged = merge_adapters(model.backbone)
    if merged:
        model.reindex_blocks()
    return merged

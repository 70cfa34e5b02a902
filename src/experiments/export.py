"""``mode=export``: a checkpoint's model as a file someone runs without this framework's run dir.

Formats (``export.format``), written into the export's run dir (``<run>/export/<time>/``):

* ``onnx``: ``model.onnx``, input ``input`` ``(batch, C, H, W)`` with a dynamic batch axis, output
  ``logits``; ``metadata_props`` hold what a user needs to prepare image files (``preprocessing``:
  every step with its sizes and interpolation, as ``mode=predict`` takes them) and read the output
  (class names), with the source run's and checkpoint's names (no machine paths).
  ``deploy/onnx_predict.py`` is a client that needs only onnxruntime, numpy and Pillow.
* ``torchscript``: ``model.pt`` (``torch.jit.trace``), the same metadata as ``metadata.json``
  inside the archive (``torch.jit.load(path, _extra_files={"metadata.json": ""})``).
* ``safetensors``: ``model.safetensors`` (weights) and ``model.json`` (the model's config, sizes,
  preprocessing, class names): :func:`load_exported_model` rebuilds the model from the two files.

Every export is checked before it is called good: the exported model runs on ``export.check_batches``
real test batches and its logits are compared with the PyTorch model's; a largest difference above
``export.tolerance`` is a ModelError. Token-input (text) models export only as safetensors: tracing
the transformers encoder through ONNX or TorchScript is not supported here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.transforms import v2

from experiments.atomic import fsync_file, output_error
from experiments.checkpoints import read_checkpoint
from experiments.errors import ModelError

log = logging.getLogger(__name__)

FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": "model.safetensors"}


def export_model(cfg: DictConfig, parts: Any, ckpt: Path) -> dict[str, Any]:
    """Write ``cfg.export.format``'s files for ``parts.model`` with ``ckpt``'s weights, check them on
    test batches, and return the record's ``export`` part (path, format, parity numbers)."""
    fmt = str(cfg.export.format)
    if fmt == "onnx":
        check_opset(int(cfg.export.opset))
    parts.module.load_state_dict(read_checkpoint(ckpt)["state_dict"])
    # the network the run evaluated: a domain-adaptation run's classifier (mean teacher: the teacher)
    model = (parts.module.evaluated_model() if hasattr(parts.module, "evaluated_model") else parts.model).eval().cpu()
    batches = test_batches(parts.datamodule, int(cfg.export.check_batches))
    adapted, merged = _merged(model)  # adapters (finetune=lora) folded in: the file is a plain model
    if fmt != "safetensors" and batches[0].layout != torch.strided:
        raise ModelError(
            f"export.format={fmt}: {parts.model.info.name} takes sparse inputs ({batches[0].layout}), which ONNX "
            "and TorchScript tracing do not carry. Use export.format=safetensors (weights and config, rebuilt "
            "with experiments.export.load_exported_model)"
        )
    if fmt != "safetensors" and not torch.is_floating_point(batches[0]):
        raise ModelError(
            f"export.format={fmt}: {parts.model.info.name} takes token ids (a text model); its encoder does not "
            "export to ONNX or TorchScript here. Use export.format=safetensors (weights and config, "
            "rebuilt with experiments.export.load_exported_model)"
        )
    metadata = export_metadata(parts, ckpt, batches[0])
    final = Path(cfg.paths.run_dir) / FILES[fmt]
    staging = final.parent / f".partial-{os.getpid()}"  # files appear under their names only once checked
    try:
        staging.mkdir(parents=True, exist_ok=True)
        out = staging / FILES[fmt]
        if fmt == "onnx":
            run = export_onnx(model, batches[0], out, metadata, int(cfg.export.opset))
        elif fmt == "torchscript":
            run = _export_torchscript(model, batches[0], out, metadata)
        else:
            run = _export_safetensors(cfg.model, model, tuple(parts.datamodule.input_shape), out, metadata)
        difference = parity(adapted, run, batches)  # against the model as trained, adapters and all
        tolerance = float(cfg.export.tolerance)
        checked = sum(len(b) for b in batches)
        print(f"export {fmt}: {final}; largest logit difference to PyTorch {difference:.3g} over {checked} test "
              f"inputs (tolerance {tolerance:g})", flush=True)
        if not difference <= tolerance:
            raise ModelError(
                f"export.format={fmt}: the exported model's logits differ from PyTorch's by up to {difference:.3g} "
                f"on {checked} test inputs, above export.tolerance={tolerance:g}, so no file was written to "
                f"{final.parent}. Try another export.opset, or raise export.tolerance if the difference is acceptable"
            )
        for written in sorted(staging.iterdir()):  # the checked files, each renamed whole into place
            fsync_file(written)
            os.replace(written, final.parent / written.name)
    except OSError as err:
        raise output_error(err, final, "the export", "no partial export was left under that name") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"path": str(final), "format": fmt, "max_logit_difference": difference, "tolerance": tolerance,
            "checked_inputs": checked, **({"merged_adapters": merged} if merged else {})}


def _merged(model: nn.Module) -> tuple[nn.Module, int]:
    """The model as trained (a copy, when it carries adapters) and how many adapters were merged
    into ``model`` in place (0: none, nothing copied)."""
    from experiments.models.adapters import adapted_layers, merge_adapters_of

    if not adapted_layers(model.backbone):
        return model, 0
    import copy

    adapted = copy.deepcopy(model)
    return adapted, merge_adapters_of(model)


def check_opset(opset: int) -> None:
    """ModelError before any work when ``export.opset`` is outside what the exporter writes."""
    from torch.onnx._constants import ONNX_MIN_OPSET, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

    if not ONNX_MIN_OPSET <= opset <= ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET:
        raise ModelError(
            f"export.opset={opset} is outside what torch {torch.__version__}'s ONNX exporter writes "
            f"({ONNX_MIN_OPSET}..{ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET}): choose one in that range (17 is read by every "
            "current runtime)"
        )


def test_batches(datamodule: Any, count: int) -> list[torch.Tensor]:
    """The inputs of the first ``count`` test batches, on the CPU: of the target domain for a
    domain pair (what its run was evaluated on)."""
    from experiments.config.domains import is_domain_pair

    loader = datamodule.predict_dataloader() if is_domain_pair(datamodule) else datamodule.test_dataloader()
    found = []
    for batch in loader:
        found.append((batch[0] if isinstance(batch, (list, tuple)) else batch).cpu())
        if len(found) == count:
            break
    return found


def export_metadata(parts: Any, ckpt: Path, example: torch.Tensor) -> dict[str, str]:
    """What a user of the file needs, as strings: how to prepare an input and read the output.

    ``preprocessing`` (JSON) is the whole contract for image files, step by step, as
    ``mode=predict`` prepares them (:func:`experiments.datamodules.inputs.image_contract`):
    ``deploy/onnx_predict.py`` follows it with onnxruntime, numpy and Pillow alone. No machine path
    is written: the run is named by its folder's name, the checkpoint by its file name.
    """
    from experiments.config.domains import is_domain_pair
    from experiments.datamodules.inputs import image_contract

    data = parts.datamodule.target if is_domain_pair(parts.datamodule) else parts.datamodule  # what it evaluated on
    mean, std = _normalisation(data.build_transform(train=False))
    images = example.dim() == 4 and getattr(data, "input_kind", "image") == "image"
    return {
        "model_name": parts.model.info.name,
        "class_names": json.dumps(data.class_names()),
        "input_name": "input",
        "input_layout": "NCHW float32" if example.dim() == 4 else f"N x {list(example.shape[1:])} float32",
        "input_size": json.dumps(list(example.shape[1:])),
        "channels": str(example.shape[1]) if example.dim() == 4 else "",
        "mean": json.dumps(mean),
        "std": json.dumps(std),
        "input_range": "images as floats in [0, 1], prepared by the preprocessing steps, then (x - mean) / std",
        "preprocessing": json.dumps(image_contract(data) if images else []),
        "output": "logits (N, classes): softmax for probabilities; class_names[argmax] is the class",
        "source_run": ckpt.resolve().parent.parent.name,
        "checkpoint": f"{ckpt.parent.name}/{ckpt.name}",
    }


def _normalisation(transform: nn.Module | None) -> tuple[list[float] | None, list[float] | None]:
    from experiments.datamodules.transforms import steps_of

    steps = [m for m in steps_of(transform) if isinstance(m, v2.Normalize)] if transform is not None else []
    return (list(steps[-1].mean), list(steps[-1].std)) if steps else (None, None)


def export_onnx(model: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str], opset: int):
    """``model.onnx`` with a dynamic batch axis and ``metadata_props``; returns its onnxruntime runner."""
    import warnings

    import onnx
    import onnxruntime

    with warnings.catch_warnings():  # the TorchScript-based exporter: every family traces through it
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(out), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    proto = onnx.load(str(out))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _export_torchscript(model: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str]):
    """``model.pt`` (traced) with ``metadata.json`` inside; returns the reloaded module."""
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    torch.jit.save(traced, str(out), _extra_files={"metadata.json": json.dumps(metadata)})
    loaded = torch.jit.load(str(out), map_location="cpu")
    return lambda x: loaded(x)


def _export_safetensors(model_cfg: DictConfig, model: nn.Module, data_shape: tuple[int, ...], out: Path,
                        metadata: dict[str, str]):
    """``model.safetensors`` and ``model.json`` (``data_shape``: what the model was sized for, the
    data's items before the model's resize); returns the model rebuilt from them."""
    from safetensors.torch import save_file

    config = {
        "model": OmegaConf.to_container(model_cfg, resolve=True),
        "num_classes": model.num_classes,
        "data_input_shape": list(data_shape),
        **{key: json.loads(value) if key in ("class_names", "input_size", "mean", "std", "preprocessing") else value
           for key, value in metadata.items()},
    }
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out), metadata={"format": "pt"})
    out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    rebuilt = load_exported_model(out)
    return lambda x: rebuilt(x)


def load_exported_model(path: str | Path) -> nn.Module:
    """The model of a ``export.format=safetensors`` export (``model.safetensors`` and ``model.json``
    beside it), in eval mode, without the run dir: built from the saved model config with random
    init (no download), then loaded with the saved weights. ``model.json`` also gives
    ``class_names``, ``input_size``, ``mean`` and ``std``. Raises ModelError when a file is missing
    or the weights do not fit."""
    from safetensors.torch import load_file

    from experiments.pipeline.build import model_from_config

    weights = Path(path)
    config_file = weights.with_suffix(".json")
    if not weights.is_file() or not config_file.is_file():
        raise ModelError(f"{weights} and {config_file} are both needed: export them with "
                         "python run.py mode=export export.format=safetensors ckpt_path=...")
    config = json.loads(config_file.read_text())
    model = model_from_config(OmegaConf.create(config["model"]), int(config["num_classes"]),
                              tuple(config["data_input_shape"]), use_weights=False)
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as err:
        raise ModelError(f"{weights} does not fit the model its {config_file.name} describes: {str(err).splitlines()[0]}") from err
    return model.eval()


@torch.no_grad()
def parity(model: nn.Module, run: Any, batches: list[torch.Tensor]) -> float:
    """The largest absolute logit difference between ``model`` and the exported ``run`` on ``batches``."""
    return max(float((model(x) - run(x)).abs().max()) for x in batches)

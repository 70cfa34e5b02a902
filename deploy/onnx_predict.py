"""Classify image files with a model exported by ``python run.py mode=export``, without the framework.

    python deploy/onnx_predict.py MODEL.onnx IMAGE [IMAGE ...]

prints one line per image: its path, the class name, the probability. Needs only onnxruntime, numpy
and Pillow; it imports nothing from the framework, so a deployment can start from a copy of this
file. It follows the ``preprocessing`` steps the export wrote into the model's metadata (the way
``mode=predict`` prepares a file: decode, resize to the data's own size, repeat channels, resize to
the model's input with its interpolation, normalise), and refuses a model whose steps it does not
know instead of guessing.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime
from PIL import Image

#: Pillow's resampling filters by the interpolation names the metadata uses (torchvision's)
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}
#: Pillow's modes of more than 8 bits per sample, and their full scale
WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def decode(path: str, step: dict) -> np.ndarray:
    """``(C, H, W)`` float32 in [0, 1] with ``step["channels"]`` channels."""
    with Image.open(path) as image:
        image.seek(0)  # an animation's first frame
        if image.mode in WIDE_MODES:
            array = np.clip(np.asarray(image, dtype=np.float32) / WIDE_MODES[image.mode], 0.0, 1.0)[None]
        else:
            grey = image.mode in ("1", "L", "LA", "La")
            array = np.asarray(image.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
            array = array[None] if grey else array.transpose(2, 0, 1)
    channels = int(step["channels"])
    if array.shape[0] == channels:
        return np.ascontiguousarray(array)
    if channels == 3:
        return np.repeat(array, 3, axis=0)
    weights = np.asarray(step["rgb_to_grey"], dtype=np.float32)[:, None, None]
    return (array * weights).sum(axis=0, keepdims=True)


def resize(array: np.ndarray, step: dict) -> np.ndarray:
    """Each channel resized to ``step["size"]`` (height, width) in float precision."""
    height, width = (int(v) for v in step["size"])
    if array.shape[1:] == (height, width):
        return array
    if step["interpolation"] not in RESAMPLE:
        raise SystemExit(f"error: the model asks for {step['interpolation']} interpolation, which this client does not know")
    planes = [np.asarray(Image.fromarray(plane, mode="F").resize((width, height), RESAMPLE[step["interpolation"]]))
              for plane in array.astype(np.float32)]
    return np.stack(planes)


def prepare(path: str, steps: list[dict]) -> np.ndarray:
    """The model's input ``(C, H, W)`` for the image at ``path``."""
    array = None
    for step in steps:
        if step["op"] == "decode":
            array = decode(path, step)
        elif step["op"] == "resize":
            array = resize(array, step)
        elif step["op"] == "repeat_channels":
            array = np.repeat(array, int(step["channels"]), axis=0) if array.shape[0] == 1 else array
        elif step["op"] == "normalize":
            mean, std = (np.asarray(step[k], dtype=np.float32)[:, None, None] for k in ("mean", "std"))
            array = (array - mean) / std
        else:
            raise SystemExit(f"error: the model's preprocessing has a step this client does not know: {step}")
    return array.astype(np.float32)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    session = onnxruntime.InferenceSession(argv[0], providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    steps = json.loads(meta.get("preprocessing", "[]"))
    if not steps:
        raise SystemExit(f"error: {argv[0]} carries no image preprocessing (not an image model, or an older export)")
    class_names = json.loads(meta["class_names"])
    input_name = meta.get("input_name", session.get_inputs()[0].name)
    for path in argv[1:]:
        logits = session.run(None, {input_name: prepare(path, steps)[None]})[0][0].astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        print(f"{path} {class_names[best]} {probabilities[best]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One reader for image files, used by training (``data=image_folder``) and prediction alike.

Every format the data options accept comes back as a float ``(channels, H, W)`` tensor in [0, 1],
scaled by the file's real bit depth: PNG (8- and 16-bit, with or without alpha) and JPEG (CMYK
included) through torchvision's decoders, the rest (GIF's first frame, WebP, BMP, TIFF 8- or
16-bit, PPM/PGM) through Pillow. Alpha is dropped; grey becomes RGB and RGB grey (ITU-R 601
luma) as the model's channels ask. A file that cannot be read is a DataError naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from experiments.errors import DataError

#: what the data options accept
EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")
#: decoded by torchvision.io (fast, 16-bit PNG as uint16); torchvision's GIF and WebP decoders
#: ignore the grey mode, so those go through Pillow
_TORCHVISION_DECODES = {".png", ".jpg", ".jpeg"}
#: Pillow's modes of more than 8 bits per sample, and their full scale
_WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """Float ``(channels, H, W)`` in [0, 1] of the image at ``path`` (``channels`` 1 or 3)."""
    try:
        if Path(path).suffix.lower() in _TORCHVISION_DECODES:
            return _to_channels(_decode_torchvision(str(path)), channels)
        return _to_channels(_decode_pillow(str(path)), channels)
    except DataError:
        raise
    except Exception as err:  # the decoders raise RuntimeError, ValueError, OSError, PIL's own errors
        raise DataError(f"cannot read the image {path}: {type(err).__name__}: {err}; replace or remove the file") from err


def _decode_torchvision(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    # PNG unchanged (its channels and bit depth), JPEG as RGB (CMYK converted); grey is computed
    # here, by the same luma for every format (libpng's and Pillow's differ in the last bit)
    mode = ImageReadMode.UNCHANGED if path.lower().endswith(".png") else ImageReadMode.RGB
    image = decode_image(read_file(path), mode=mode)
    scale = 65535.0 if image.dtype == torch.uint16 else 255.0
    return image.to(torch.float32).div_(scale)


def _decode_pillow(path: str) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image.seek(0)  # an animation's first frame
        if image.mode in _WIDE_MODES:
            array = np.asarray(image, dtype=np.float32) / _WIDE_MODES[image.mode]
            return torch.from_numpy(np.clip(array, 0.0, 1.0).copy())[None]
        converted = image.convert("L" if image.mode in ("1", "L", "LA", "La") else "RGB")  # P, CMYK, RGBA ...
        array = np.asarray(converted, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).to(torch.float32).div_(255.0)
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def _to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """``image`` (C, H, W) with alpha dropped and grey/RGB converted to ``channels``."""
    if image.shape[0] in (2, 4):
        image = image[:-1]
    if image.shape[0] == channels:
        return image.contiguous()
    if channels == 3:
        return image.expand(3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype)[:, None, None]
    return (image * weights).sum(dim=0, keepdim=True)

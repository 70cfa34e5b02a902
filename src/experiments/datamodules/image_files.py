"""One reader for image files, used by training (``data=image_folder``) and prediction alike.

Every format the data options accept comes back as a float ``(channels, H, W)`` tensor in [0, 1],
scaled by the file's real bit depth: PNG (8- and 16-bit, with or without alpha) and JPEG (CMYK
included) through torchvision's decoders, the rest (GIF's first frame, WebP, BMP, TIFF 8- or
16-bit, PPM/PGM) through Pillow. Alpha is dropped; grey becomes RGB and RGB grey (ITU-R 601
luma) as the model's channels ask. A file that cannot be read is a DataError naming it.

``keep_8_bit=True`` returns an 8-bit file as ``uint8`` (0..255 standing for [0, 1], torchvision's
convention) instead: the training loader of ``data=image_folder`` crops and resizes it with
torchvision's uint8 kernels before converting to float (docs/data.md "Image folders").
"""

from __future__ import annotations

import io
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


def read_image(path: str | Path, channels: int, keep_8_bit: bool = False, data: bytes | None = None) -> torch.Tensor:
    """Float ``(channels, H, W)`` in [0, 1] of the image at ``path`` (``channels`` 1 or 3); with
    ``keep_8_bit`` a ``uint8`` one for an 8-bit PNG or JPEG that needs no luma (float otherwise).

    ``data``: the file's bytes when they come from elsewhere (a shard's record); ``path`` then
    only names it (its suffix picks the decoder, errors name it).
    """
    try:
        if Path(path).suffix.lower() in _TORCHVISION_DECODES:
            decoded = _decode_torchvision(str(path), data)
            if keep_8_bit and decoded.dtype == torch.uint8 and not _needs_luma(decoded, channels):
                # left in the decoder's channels-last memory: torchvision's uint8 resize runs
                # fastest on it, and a copy into (C, H, W) order would cost as much as a crop
                return _to_channels(decoded, channels, contiguous=False)
            return _to_channels(_scaled(decoded), channels)
        return _to_channels(_decode_pillow(io.BytesIO(data) if data is not None else str(path)), channels)
    except DataError:
        raise
    except Exception as err:  # the decoders raise RuntimeError, ValueError, OSError, PIL's own errors
        raise DataError(f"cannot read the image {path}: {type(err).__name__}: {err}; replace or remove the file") from err


def _decode_torchvision(path: str, data: bytes | None) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    # PNG unchanged (its channels and bit depth), JPEG as RGB (CMYK converted); grey is computed
    # here, by the same luma for every format (libpng's and Pillow's differ in the last bit)
    mode = ImageReadMode.UNCHANGED if path.lower().endswith(".png") else ImageReadMode.RGB
    encoded = read_file(path) if data is None else torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_image(encoded, mode=mode)


def _scaled(image: torch.Tensor) -> torch.Tensor:
    """A decoded ``uint8``/``uint16`` image as float in [0, 1], by its bit depth."""
    scale = 65535.0 if image.dtype == torch.uint16 else 255.0
    return image.to(torch.float32).div_(scale)


def _needs_luma(image: torch.Tensor, channels: int) -> bool:
    """True when ``image`` has colour and grey is asked: the luma is computed in float."""
    return channels == 1 and image.shape[0] in (3, 4)


def _decode_pillow(path: str | io.BytesIO) -> torch.Tensor:
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


def _to_channels(image: torch.Tensor, channels: int, contiguous: bool = True) -> torch.Tensor:
    """``image`` (C, H, W) with alpha dropped and grey/RGB converted to ``channels``."""
    if image.shape[0] in (2, 4):
        image = image[:-1]
    if image.shape[0] == channels:
        return image.contiguous() if contiguous else image
    if channels == 3:
        return image.expand(3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype)[:, None, None]
    return (image * weights).sum(dim=0, keepdim=True)

"""Light, batched, per-sample augmentations of image tensors (the mean teacher's noise).

Every sample of a batch ``(B, C, H, W)`` gets its own random translation, brightness, contrast and
gaussian noise, drawn from ``generator`` (the global generator when None, so a resumed run that
restores the generators draws the same) and applied on the batch's device in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experiments.errors import ConfigError


@dataclass(frozen=True)
class LightAugment:
    """Per-sample random shift, brightness/contrast jitter and gaussian noise.

    Args:
        translate: largest shift in pixels along each axis (uniform in ``[-translate, translate]``,
            bilinear, borders padded with the nearest pixel).
        brightness: largest additive offset (in the input's units: normalised images move by
            that many standard deviations).
        contrast: largest relative contrast change (factor uniform in ``[1 - c, 1 + c]`` around
            each image's own mean).
        noise: standard deviation of the additive gaussian noise.
    """

    translate: float = 2.0
    brightness: float = 0.1
    contrast: float = 0.1
    noise: float = 0.05

    def __post_init__(self) -> None:
        for key in ("translate", "brightness", "contrast", "noise"):
            if getattr(self, key) < 0:
                raise ConfigError(f"adapt.augment.{key}={getattr(self, key)} must be >= 0")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """An augmented copy of the image batch ``x`` ``(B, C, H, W)``."""
        if x.dim() != 4:
            raise ValueError(f"light augmentation takes image batches (B, C, H, W), got shape {tuple(x.shape)}")
        b, _, h, w = x.shape

        def uniform(scale: float, *shape: int) -> torch.Tensor:
            u = torch.rand((b, *shape), generator=generator, device=_device(generator, x))
            return ((u * 2 - 1) * scale).to(device=x.device, dtype=x.dtype)

        out = x
        if self.translate:
            # affine_grid works in [-1, 1] coordinates: a shift of d pixels is 2 * d / size
            shift = uniform(self.translate, 2) * torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)
            theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
            theta[:, 0, 0] = theta[:, 1, 1] = 1
            theta[:, :, 2] = shift
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.contrast:
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * (1 + uniform(self.contrast, 1, 1, 1)) + mean
        if self.brightness:
            out = out + uniform(self.brightness, 1, 1, 1)
        if self.noise:
            noise = torch.randn(x.shape, generator=generator, device=_device(generator, x))
            out = out + self.noise * noise.to(device=x.device, dtype=x.dtype)
        return out


def _device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    """Where to draw: the generator's device (a generator draws only on its own), else the batch's."""
    return generator.device if generator is not None else x.device

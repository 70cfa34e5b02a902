"""Random augmentations of a whole batch on its device, each sample with its own random draw.

torchvision's v2 transforms draw one set of parameters per call, so a batch would share one flip,
one angle, one brightness; per-item transforms in the loader avoid that but cost a Python call per
sample on the CPU. :class:`DeviceAugment` draws a parameter per sample, as v2 does per item, and
applies them in a few batched tensor operations on the batch's device (the GPU where there is one),
in ``on_after_batch_transfer``. Each step follows its v2 counterpart's distribution (a test compares
the statistics): ``RandomHorizontalFlip``/``RandomVerticalFlip``, ``RandomAffine`` (nearest
interpolation, zero fill, like v2's defaults), ``ColorJitter``'s brightness, contrast and
saturation (in this fixed order; v2 shuffles it), a per-channel tint, ``RandomGrayscale``,
``RandomInvert``, ``GaussianNoise`` and ``RandomErasing`` (up to 10 placement tries per sample, as v2).

Images are float ``(B, C, H, W)`` in [0, 1]; :meth:`DeviceAugment.normalized` wraps a batch that the
loader already normalised (undo, augment, redo).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from experiments.datamodules.transforms import steps_of
from experiments.config.declared import Interval, Number, checked_init
from experiments.errors import ConfigError

_GREY = (0.2989, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


class DeviceAugment(nn.Module):
    """Per-sample random augmentations of an image batch (all off by default).

    Args:
        hflip, vflip: probability of a horizontal / vertical flip.
        degrees: rotation angle ~ U(-degrees, degrees).
        translate: ``[fx, fy]``: shifts ~ U(-fx * W, fx * W) and U(-fy * H, fy * H), whole pixels.
        scale: ``[low, high]``: zoom factor ~ U(low, high).
        shear: x-shear angle ~ U(-shear, shear) degrees.
        brightness, contrast, saturation: factor ~ U(max(0, 1 - v), 1 + v), as ColorJitter.
        tint: ``[low, high]``: each channel times its own factor ~ U(low, high).
        grayscale: probability of converting to grey (kept at C channels).
        invert: probability of ``1 - x``.
        noise: standard deviation of added gaussian noise (then clipped to [0, 1]).
        erasing: probability of erasing a rectangle (area share ~ U(erasing_scale), log aspect
            ratio ~ U(log erasing_ratio)) with zeros.
    """

    #: the rules of the keys (``data.device_augment.<key>``), declared once: checked before torch is
    #: imported (read from this source by :mod:`experiments.config.declared`) and at construction
    KEYS = {
        "hflip": Number(low=0, high=1, kind="a probability"), "vflip": Number(low=0, high=1, kind="a probability"),
        "grayscale": Number(low=0, high=1, kind="a probability"), "invert": Number(low=0, high=1, kind="a probability"),
        "erasing": Number(low=0, high=1, kind="a probability"),
        "degrees": Number(low=0), "shear": Number(low=0), "brightness": Number(low=0), "contrast": Number(low=0),
        "saturation": Number(low=0), "noise": Number(low=0),
        "translate": Interval(0, 1, "0.1,0.1"), "scale": Interval(0.001, 1000, "0.9,1.1"), "tint": Interval(0, 1000, "0.9,1.1"),
        "erasing_scale": Interval(0, 1, "0.02,0.33"), "erasing_ratio": Interval(0.001, 1000, "0.3,3.3"),
    }

    def __init__(
        self,
        hflip: float = 0.0,
        vflip: float = 0.0,
        degrees: float = 0.0,
        translate: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        shear: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        tint: Sequence[float] | None = None,
        grayscale: float = 0.0,
        invert: float = 0.0,
        noise: float = 0.0,
        erasing: float = 0.0,
        erasing_scale: Sequence[float] = (0.02, 0.33),
        erasing_ratio: Sequence[float] = (0.3, 3.3),
    ) -> None:
        super().__init__()
        self.hflip, self.vflip = hflip, vflip
        self.degrees, self.shear = degrees, shear
        self.translate = _pair(translate)
        self.scale = _pair(scale)
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.tint = _pair(tint)
        self.grayscale, self.invert, self.noise = grayscale, invert, noise
        self.erasing = erasing
        self.erasing_scale = _pair(erasing_scale)
        self.erasing_ratio = _pair(erasing_ratio)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """An augmented copy of ``x`` ``(B, C, H, W)`` in [0, 1]; random draws from ``generator``
        (on the batch's device; the global generator when None)."""
        if x.dim() != 4:
            raise ValueError(f"DeviceAugment takes image batches (B, C, H, W), got shape {tuple(x.shape)}")
        draw = _Draw(len(x), x.device, generator)
        out = x
        if self.hflip:
            out = torch.where(draw.coin(self.hflip).view(-1, 1, 1, 1), out.flip(-1), out)
        if self.vflip:
            out = torch.where(draw.coin(self.vflip).view(-1, 1, 1, 1), out.flip(-2), out)
        if self.degrees or self.translate or self.scale or self.shear:
            out = self._affine(out, draw)
        if self.brightness:
            out = (out * draw.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness).view(-1, 1, 1, 1)).clamp(0, 1)
        if self.contrast:
            mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
            factor = draw.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast).view(-1, 1, 1, 1)
            out = (factor * out + (1 - factor) * mean).clamp(0, 1)
        if self.saturation and out.shape[1] == 3:
            factor = draw.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation).view(-1, 1, 1, 1)
            out = (factor * out + (1 - factor) * _grey(out)).clamp(0, 1)
        if self.tint:
            out = (out * draw.uniform(*self.tint, out.shape[1]).view(len(out), -1, 1, 1)).clamp(0, 1)
        if self.grayscale and out.shape[1] == 3:
            out = torch.where(draw.coin(self.grayscale).view(-1, 1, 1, 1), _grey(out).expand_as(out), out)
        if self.invert:
            out = torch.where(draw.coin(self.invert).view(-1, 1, 1, 1), 1 - out, out)
        if self.noise:
            out = (out + self.noise * draw.normal(out.shape)).clamp(0, 1)
        if self.erasing:
            out = self._erase(out, draw)
        return out

    def normalized(self, x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """:meth:`forward` of a batch normalised with ``mean``/``std``: undone, augmented, redone."""
        m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (self(x * s + m, generator) - m) / s

    def _affine(self, x: torch.Tensor, draw: _Draw) -> torch.Tensor:
        """torchvision's affine (rotation, translation, scale, x-shear about the centre) with the
        inverse matrix of ``_get_inverse_affine_matrix``, one per sample, applied by grid_sample."""
        b, _, h, w = x.shape
        angle = torch.deg2rad(draw.uniform(-self.degrees, self.degrees))
        shear = torch.deg2rad(draw.uniform(-self.shear, self.shear))
        scale = draw.uniform(*self.scale) if self.scale else torch.ones(b, device=x.device)
        fx, fy = self.translate or (0.0, 0.0)
        tx = torch.round(draw.uniform(-fx * w, fx * w))
        ty = torch.round(draw.uniform(-fy * h, fy * h))
        # rotation-shear matrix [[a, b], [c, d]] (no y-shear); its inverse is [[d, -b], [-c, a]]
        a, c = torch.cos(angle), torch.sin(angle)
        bb = -torch.cos(angle) * torch.tan(shear) - torch.sin(angle)
        d = -torch.sin(angle) * torch.tan(shear) + torch.cos(angle)
        inv = torch.stack([torch.stack([d, -bb], -1), torch.stack([-c, a], -1)], -2) / scale.view(-1, 1, 1)
        offset = -(inv @ torch.stack([tx, ty], -1).unsqueeze(-1)).squeeze(-1)
        theta = torch.cat([inv, offset.unsqueeze(-1)], -1).to(x.dtype)  # (B, 2, 3), pixel units about the centre
        ys = torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2
        xs = torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).view(1, h * w, 3)
        source = base @ theta.transpose(1, 2)  # (B, H*W, 2) in pixels about the centre
        source = source / torch.tensor([w / 2, h / 2], device=x.device, dtype=x.dtype)
        return F.grid_sample(x, source.view(b, h, w, 2), mode="nearest", padding_mode="zeros", align_corners=False)

    def _erase(self, x: torch.Tensor, draw: _Draw) -> torch.Tensor:
        """v2.RandomErasing per sample: up to 10 tries of (area, aspect ratio), the first rectangle
        that fits is erased; a sample whose 10 tries all miss is left as it is."""
        b, _, h, w = x.shape
        tries = 10
        area = h * w * draw.uniform(*self.erasing_scale, tries)
        ratio = torch.exp(draw.uniform(math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1]), tries))
        eh, ew = torch.round(torch.sqrt(area * ratio)), torch.round(torch.sqrt(area / ratio))
        fits = (eh < h) & (ew < w)
        first = fits.int().argmax(dim=1, keepdim=True)
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        top = torch.floor(draw.uniform(0, 1) * (h - eh + 1))
        left = torch.floor(draw.uniform(0, 1) * (w - ew + 1))
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
                  & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
        erase = inside & (draw.coin(self.erasing) & fits.any(dim=1)).view(-1, 1, 1)
        return x.masked_fill(erase.unsqueeze(1), 0.0)


class _Draw:
    """Per-sample random numbers for a batch of ``n``, drawn on ``device`` from ``generator``."""

    def __init__(self, n: int, device: torch.device, generator: torch.Generator | None) -> None:
        self.n, self.generator = n, generator
        self.device = generator.device if generator is not None else device
        self.target = device

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        u = torch.rand((self.n, *shape), generator=self.generator, device=self.device)
        return (low + (high - low) * u).to(self.target)

    def coin(self, p: float) -> torch.Tensor:
        return self.uniform(0, 1) < p

    def normal(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.device).to(self.target)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    weights = torch.tensor(_GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


class AugmentsOnDevice:
    """What a data module needs to augment its training batches on their device
    (:class:`DeviceAugment`), reproducibly: a generator per (seed, epoch, rank, stream) and the
    loader's normalisation undone and redone. Mixed into ``ClassificationDataModule``, which
    provides ``seed``, ``train_set`` and the two caches."""

    seed: int
    _augment_generators: dict[tuple[int, int], torch.Generator]
    _train_normalisation: tuple[list[float] | None, list[float] | None] | None

    def augment_on_device(self, augment: DeviceAugment, x: torch.Tensor, epoch: int, rank: int = 0,
                          stream: int = 0) -> torch.Tensor:
        """``augment`` applied to this data's training batch ``x`` on its device (the loader's
        normalisation undone and redone), drawn from the (seed, epoch, rank, stream) generator:
        ``stream`` keeps two users of one data option apart (a domain pair's target views)."""
        if self._train_normalisation is None:  # found once: the training transform is fixed by now
            self._train_normalisation = self._normalisation()
        mean, std = self._train_normalisation
        generator = self._epoch_generator(x.device, epoch, rank, stream)
        return augment.normalized(x, mean, std, generator) if mean is not None else augment(x, generator)

    def _epoch_generator(self, device: torch.device, epoch: int, rank: int, stream: int = 0) -> torch.Generator:
        """A generator on ``device`` seeded from (seed, epoch, rank, stream): a resumed run draws the same."""
        key = (epoch, stream)
        if key not in self._augment_generators:
            seed = self.seed * 100_003 + epoch * 7_919 + rank + stream * 1_000_003
            self._augment_generators = {k: g for k, g in self._augment_generators.items() if k[0] == epoch}
            self._augment_generators[key] = torch.Generator(device=device).manual_seed(seed)
        return self._augment_generators[key]

    def _normalisation(self) -> tuple[list[float] | None, list[float] | None]:
        """The mean/std the loader normalised training images with (None: not normalised)."""
        transform = getattr(self.train_set, "transform", None)
        steps = [m for m in steps_of(transform) if isinstance(m, v2.Normalize)] if transform is not None else []
        return (list(steps[-1].mean), list(steps[-1].std)) if steps else (None, None)


def _pair(value: Sequence[float] | None) -> tuple[float, float] | None:
    """A ``[low, high]`` range (checked by its declared rule) as a tuple of floats."""
    return None if value is None else (float(value[0]), float(value[1]))


DeviceAugment.__init__ = checked_init(DeviceAugment.__init__, DeviceAugment, "data.device_augment", ConfigError)

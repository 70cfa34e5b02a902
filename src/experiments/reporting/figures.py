"""Matplotlib figures: test predictions (a confusion matrix, a grid of samples) and domain samples.

Pure drawing: arrays in, a ``matplotlib.figure.Figure`` out (off-screen, the Agg canvas), so the
callbacks stay about *when* to draw and tests can render without a logger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    import torch

#: above this many classes the cells carry no numbers (they would not be readable)
ANNOTATE_UP_TO = 20


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """``matrix[i, j]`` = samples of true class i predicted as j (counts).

    Colours are row-normalised (recall per class), so rare classes read as clearly as common ones;
    the numbers are the counts.
    """
    n = len(class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    recall = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = min(3 + 0.45 * n, 16)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=class_names if n <= 50 else [""] * n, rotation=90 if n > 10 else 0)
    ax.set_yticks(ticks, labels=class_names if n <= 50 else [""] * n)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix ({int(matrix.sum())} samples)")
    if n <= ANNOTATE_UP_TO:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if recall[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    return fig


def sample_grid_figure(
    images: np.ndarray, predicted: Sequence[int], labels: Sequence[int] | None, class_names: Sequence[str]
) -> Figure:
    """``images``: ``(N, C, H, W)`` with C = 1 or 3, any value range (each image is min-max scaled,
    which undoes any normalisation for display). Titles are green when right, red when wrong."""
    count = len(images)
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    fig = Figure(figsize=(1.8 * columns, 2.0 * rows))
    for index in range(count):
        ax = fig.add_subplot(rows, columns, index + 1)
        image = images[index].astype(float)
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.transpose(image[:3], (1, 2, 0)))
        name = class_names[predicted[index]]
        if labels is None:
            ax.set_title(f"pred {name}", fontsize=8)
        else:
            right = predicted[index] == labels[index]
            ax.set_title(f"pred {name} / true {class_names[labels[index]]}", fontsize=8, color="green" if right else "red")
        ax.axis("off")
    fig.tight_layout()
    return fig


def input_grid_figure(images: Sequence[np.ndarray | None], titles: Sequence[str]) -> Figure:
    """Image files as they are: ``images[i]`` ``(C, H, W)`` in [0, 1] with C = 1 or 3, drawn on that
    scale (a white image is white; nothing is min-max rescaled) at its own resolution, pixels as
    squares; None draws an empty, framed panel (a file that could not be decoded). ``titles[i]``
    goes above each panel."""
    count = len(images)
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    fig = Figure(figsize=(2.0 * columns, 2.3 * rows))
    for index, (image, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, columns, index + 1)
        if image is not None:
            image = np.clip(image.astype(float), 0.0, 1.0)
            if image.shape[0] == 1:
                ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(np.transpose(image[:3], (1, 2, 0)), interpolation="nearest")
            ax.axis("off")
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig


def domain_samples_figure(domains: Mapping[str, tuple[torch.Tensor, Sequence[str]]], title: str = "") -> Figure:
    """One row per domain: its images laid out by torchvision's ``make_grid``, each labelled below.

    ``domains``: row name -> (images ``(N, C, H, W)`` with values in [0, 1] and C = 1 or 3, the
    label of each image). Grey rows are repeated to RGB and every row is resized (bilinear) to
    the largest image size, so domains of different shapes line up. Log it with
    ``SummaryWriter.add_figure(tag, figure)`` or save it with ``figure.savefig(path)``.
    """
    import torch.nn.functional as F
    from torchvision.utils import make_grid

    height = max(images.shape[-2] for images, _ in domains.values())
    width = max(images.shape[-1] for images, _ in domains.values())
    columns = max(len(images) for images, _ in domains.values())
    pad = 2
    fig = Figure(figsize=(0.45 * columns + 1.2, 0.75 * len(domains) + (0.3 if title else 0)))
    for row, (name, (images, labels)) in enumerate(domains.items()):
        images = F.interpolate(images.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        images = images.expand(-1, 3, -1, -1).clamp(0, 1)
        grid = make_grid(images, nrow=columns, padding=pad, pad_value=1.0)
        grid = F.pad(grid, (0, pad + columns * (width + pad) - grid.shape[-1]), value=1.0)  # short rows
        ax = fig.add_subplot(len(domains), 1, row + 1)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        centres = [pad + i * (width + pad) + width / 2 for i in range(len(images))]
        ax.set_xticks(centres, labels=[str(label) for label in labels], fontsize=7)
        ax.set_yticks([])
        ax.tick_params(length=0, pad=1)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        for side in ax.spines.values():
            side.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig

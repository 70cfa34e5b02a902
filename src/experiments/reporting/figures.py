"""Matplotlib figures of test predictions: a confusion matrix and a grid of samples.

Pure drawing: arrays in, a ``matplotlib.figure.Figure`` out (off-screen, the Agg canvas), so the
callbacks stay about *when* to draw and tests can render without a logger.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

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

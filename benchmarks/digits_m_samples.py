"""The two domains side by side: writes docs/digits_m_samples.png and times the digits_m build.

    python benchmarks/digits_m_samples.py [--n 16] [--out docs/digits_m_samples.png]

Top row: the source domain (``data=digits data.partition=source``); bottom row: the target domain
(``data=digits_m``), test images of both, with their labels. Prints the build time of digits_m
(the first of three builds in the process, and the others) and its split sizes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from experiments.datamodules import DigitsDataModule, DigitsMDataModule
from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.digits_m import build_digits_m
from experiments.reporting.figures import domain_samples_figure

ROOT = Path(__file__).resolve().parents[1]


def test_samples(datamodule: ClassificationDataModule, n: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``n`` seeded test images of ``datamodule`` as the source gives them (before any transform)."""
    datamodule.setup()
    raw = datamodule.test_set.dataset
    picks = torch.randperm(len(raw), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    images, labels = zip(*(raw[i] for i in picks))
    names = datamodule.class_names()
    return torch.stack(images), [names[label] for label in labels]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="images per domain")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "digits_m_samples.png")
    args = parser.parse_args(argv)

    seconds = []
    for _ in range(3):  # the first build also pays the first reads of the digits and photos
        start = time.perf_counter()
        splits = build_digits_m()
        seconds.append(time.perf_counter() - start)
    sizes = ", ".join(f"{name} {len(split)} ({len(split.digit.unique())} digits)" for name, split in splits.items())
    print(f"digits_m built in {seconds[0]:.2f} s (first), {statistics.median(seconds[1:]):.2f} s (then): {sizes}")

    rows = {
        "source\n(digits)": test_samples(DigitsDataModule(partition="source"), args.n),
        "target\n(digits_m)": test_samples(DigitsMDataModule(), args.n),
    }
    figure = domain_samples_figure(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return args.out


if __name__ == "__main__":
    main()

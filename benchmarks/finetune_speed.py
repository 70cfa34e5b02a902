"""classifier_only on resnet18 + digits: cached backbone features vs the uncached path.

    python benchmarks/finetune_speed.py [--image-size 32] [--epochs 6] [--accelerator cpu]

Both paths run in this one process, one after the other, with the same seed, data and config;
the table gives the median epoch time (first epoch left out), epochs/s, the ratio, the one-off
feature extraction and the final test accuracy of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import QUIET, EpochTimer, compose_cfg, median_after_first
from experiments.pipeline.tasks import train


def run(path: str, args: argparse.Namespace, root: Path) -> dict:
    timer = EpochTimer()
    cfg = compose_cfg(
        root / path, "model=resnet18", "model.pretrained=false", "finetune=classifier_only", f"finetune.cache_features={path == 'cached'}",
        f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={args.accelerator}", "trainer.devices=1",
        f"data.image_size={args.image_size}", "logger=none", *QUIET, *args.overrides,
    )
    start = time.perf_counter()
    record = train(cfg, callbacks=[timer]).record
    wall = time.perf_counter() - start
    epoch = median_after_first(timer.epochs)
    return {"epoch_s": epoch, "epochs_per_s": 1 / epoch, "wall_s": wall, "test_acc": record["metrics"]["test/acc"],
            "first_epoch_s": timer.epochs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32, help="digits are resized to this (native: 8)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("overrides", nargs="*", help="config overrides for both paths, e.g. callbacks.last_checkpoint=null")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {path: run(path, args, Path(tmp)) for path in ("uncached", "cached")}
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nclassifier_only, resnet18, digits at {args.image_size}x{args.image_size}, {args.epochs} epochs, {device} {' '.join(args.overrides)}")
    print("| path | epoch (s, median) | epochs/s | first epoch (s) | whole run (s) | test acc |")
    print("|---|---|---|---|---|---|")
    for path, r in results.items():
        print(f"| {path} | {r['epoch_s']:.4f} | {r['epochs_per_s']:.1f} | {r['first_epoch_s']:.3f} | {r['wall_s']:.2f} | {r['test_acc']:.4f} |")
    ratio = results["uncached"]["epoch_s"] / results["cached"]["epoch_s"]
    delta = abs(results["uncached"]["test_acc"] - results["cached"]["test_acc"]) * 100
    print(f"per-epoch speed-up: {ratio:.1f}x; test accuracy difference: {delta:.2f} pt")


if __name__ == "__main__":
    main()

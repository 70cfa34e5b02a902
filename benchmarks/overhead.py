"""Framework overhead: a plain PyTorch loop vs `python run.py`'s training path, same work.

    python benchmarks/overhead.py [--epochs 8] [--accelerator cpu]

Same model (the default SmallCNN), data (digits, same split and transforms), batch size, optimizer
and epochs; each epoch trains then validates. The plain loop is the hand-written baseline; the
framework path is `experiments.train.train` with the default config (checkpointing, LR monitor,
TensorBoard, metrics) minus the progress bar and summary. Both run in this one process, back to
back, twice each in alternating order; the table gives per-epoch medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from _common import QUIET, EpochTimer, compose_cfg, median_after_first
from experiments.pipeline.build import model_from_config
from experiments.pipeline.tasks import train


def plain_loop(cfg, device: torch.device) -> list[float]:
    """The hand-written loop: zero_grad, forward, loss, backward, step; then eval + no_grad."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    model = model_from_config(cfg.model, datamodule.num_classes, datamodule.input_shape).to(device)
    datamodule.set_preprocessing(model.preprocessing)
    datamodule.setup("fit")
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    times = []
    for epoch in range(cfg.trainer.max_epochs):
        start = time.perf_counter()
        train_loader.sampler.set_epoch(epoch)
        model.train()
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        times.append(time.perf_counter() - start)
    return times


def framework(cfg) -> list[float]:
    timer = EpochTimer()
    train(cfg, callbacks=[timer])
    return timer.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("overrides", nargs="*", help="config overrides for both paths, e.g. model.net.width=64")
    args = parser.parse_args()
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    medians: dict[str, list[float]] = {"plain PyTorch loop": [], "experiments (run.py path)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(2):
            cfg = compose_cfg(
                Path(tmp) / str(repeat), f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={args.accelerator}",
                "trainer.devices=1", f"data.batch_size={args.batch_size}", "scheduler=none", *QUIET, *args.overrides,
            )
            order = [("plain PyTorch loop", lambda: plain_loop(cfg, device)), ("experiments (run.py path)", lambda: framework(cfg))]
            for name, fn in order if repeat == 0 else order[::-1]:
                medians[name].append(median_after_first(fn()))
    plain, ours = (statistics.median(v) for v in medians.values())
    where = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nSmallCNN on digits, batch {args.batch_size}, {args.epochs} epochs x 2 repeats, {where} {' '.join(args.overrides)}")
    print("| path | epoch (s, median) |")
    print("|---|---|")
    print(f"| plain PyTorch loop | {plain:.4f} |")
    print(f"| experiments (run.py path) | {ours:.4f} |")
    print(f"ratio framework / plain: {ours / plain:.3f}x")


if __name__ == "__main__":
    main()

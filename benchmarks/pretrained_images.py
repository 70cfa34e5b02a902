"""ImageNet EfficientNet-Lite0 -> small image targets: every strategy against two from-scratch baselines.

    python benchmarks/pretrained_images.py [--data digits digits_m] [--labels 10 all] [--seeds 0 1 2]
        [--epochs 15] [--image-size 64] [--methods classifier_only partial ...] [--out FILE] [overrides ...]

For each data option, labels per class (``data.samples_per_class``; ``all`` keeps every training
image) and seed: the ImageNet weights (``model=efficientnet_lite0``, from the installed package)
fine-tuned four ways (classifier_only on cached features, partial, full, lp_ft), the same
architecture from random init, and the small CNN from random init. Every run resizes the images to
``--image-size`` (the small CNN too, so all see the same pixels). Prints one JSON line per run and a
Markdown table: test accuracy mean +- std over the seeds and the mean wall time of a run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _grid import machine, run_grid, table


def methods(epochs: int) -> dict[str, list[str]]:
    """Method name -> overrides. The head alone gets more (cheap, cached) epochs and a larger lr."""
    lite0 = ["model=efficientnet_lite0", f"trainer.max_epochs={epochs}"]
    return {
        "classifier_only": ["model=efficientnet_lite0", "finetune=classifier_only", f"trainer.max_epochs={2 * epochs}", "optimizer.lr=0.01"],
        "partial": [*lite0, "finetune=partial", "finetune.n_blocks=3"],
        "full": [*lite0, "finetune=full"],
        "lp_ft": [*lite0, "finetune=lp_ft", f"finetune.probe_epochs={max(1, epochs // 3)}"],
        "scratch_same_arch": [*lite0, "finetune=scratch"],
        "small_cnn_scratch": ["model=small_cnn", "finetune=scratch", f"trainer.max_epochs={epochs}"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "digits_m"], help="data options (conf/data)")
    parser.add_argument("--labels", nargs="+", default=["10", "all"], help="training images per class, or all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=None, help=f"subset of: {', '.join(methods(1))}")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) and the JSON lines here")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. trainer=gpu")
    args = parser.parse_args()
    chosen = methods(args.epochs)
    if args.methods:
        unknown = sorted(set(args.methods) - set(chosen))
        if unknown:
            parser.error(f"unknown methods {unknown}; choose from {sorted(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.methods}
    common = [f"data.image_size={args.image_size}", "data.batch_size=32", "data.eval_batch_size=256", *args.overrides]
    log_path = args.out.with_suffix(".jsonl") if args.out else None
    cells = run_grid(args.data, args.labels, chosen, args.seeds, common, log_path)
    title = (f"\nImageNet EfficientNet-Lite0 transfer, images at {args.image_size}x{args.image_size}, "
             f"{args.epochs} epochs (classifier_only {2 * args.epochs}), seeds {args.seeds}, {machine()} "
             f"{' '.join(args.overrides)}")
    print(title)
    print(table(cells))
    if args.out:
        args.out.write_text(title.strip() + "\n\n" + table(cells) + "\n")


if __name__ == "__main__":
    main()

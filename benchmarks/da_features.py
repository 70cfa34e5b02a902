"""Pictures of an adaptation: both domains' test features (PCA) before and after, for the docs.

Trains `experiment=da_digits_m` with each given method (default: source_only, the baseline with the
same source augmentation, and mean_teacher, the preset), then draws the evaluated network's test
features of both domains with the same function the `domain_features` callback logs to
TensorBoard (`test/features`), and writes one PNG per method plus their proxy A-distances.

    python benchmarks/da_features.py                      # docs/da_features_<method>.png
    python benchmarks/da_features.py --methods dann --seed 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _common import QUIET, compose_cfg
from experiments.pipeline.build import build_components
from experiments.reporting.domain_features import domain_features, embedding_figure
from experiments.pipeline.tasks import train

DOCS = Path(__file__).resolve().parents[1] / "docs"


def draw(method: str, seed: int, out: Path, extra: list[str]) -> tuple[float, float]:
    """Train one run, reload its selected checkpoint, save its picture; returns (PAD, target acc)."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["experiment=da_digits_m", f"adapt={method}", f"seed={seed}", "logger=none",
                     "callbacks.test_figures=null", *QUIET, *extra]
        record = train(compose_cfg(Path(tmp), *overrides)).record
        parts = build_components(compose_cfg(Path(tmp) / "reload", *overrides))
        state = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
        parts.module.load_state_dict(state)
        parts.module.eval()
        parts.datamodule.setup("test")
        found = domain_features(parts.module, parts.datamodule)
        accuracy = record["metrics"]["test/target_acc"]
        title = f"{method}: target test acc {100 * accuracy:.1f} %, proxy A-distance {found['pad']:.2f}"
        figure = embedding_figure(found["points"], found["domains"], found["labels"], found["names"],
                                  parts.datamodule.class_names(), title)
        figure.savefig(out, dpi=90)
        return found["pad"], accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["source_only", "mean_teacher"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for method in args.methods:
        out = args.out_dir / f"da_features_{method}.png"
        pad, accuracy = draw(method, args.seed, out, args.overrides)
        print(f"{method}: target test acc {accuracy:.4f}, proxy A-distance {pad:.3f} -> {out}", flush=True)


if __name__ == "__main__":
    main()

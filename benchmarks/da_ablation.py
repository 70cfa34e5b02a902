"""Domain adaptation ablation: digits -> digits_m, target test accuracy over seeds (the README table).

Every row is `python run.py experiment=da_digits_m adapt=<method>` (optionally without the source
augmentation), run in this process; its best checkpoint (chosen on SOURCE validation accuracy: no
target label is read for training or selection) is then tested twice, as trained and with AdaBN
(`mode=test adapt.adabn=true`). Reported: target test accuracy mean +- std over seeds, source test
accuracy, wall time of one training run.

    python benchmarks/da_ablation.py                     # 3 seeds, every row (~30-60 min on 2 cores)
    python benchmarks/da_ablation.py --seeds 0 --rows mean_teacher+aug
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import QUIET, compose_cfg
from experiments.tasks import test_checkpoint, train

NO_AUGMENTATION = "data.source.train_transforms=[]"
ROWS = {
    "source_only": ["adapt=source_only", NO_AUGMENTATION],
    "source_only+aug": ["adapt=source_only"],
    "dann": ["adapt=dann", NO_AUGMENTATION],
    "dann+aug": ["adapt=dann"],
    "mean_teacher+aug": ["adapt=mean_teacher"],
    "oracle (target labels: upper bound)": ["adapt=oracle"],
}


def run_row(name: str, overrides: list[str], seed: int, root: Path, extra: list[str]) -> dict:
    run_dir = root / f"{name.split()[0]}-{seed}"
    common = ["experiment=da_digits_m", f"seed={seed}", "logger=none", "callbacks.test_figures=null", *QUIET]
    start = time.perf_counter()
    record = train(compose_cfg(run_dir, *common, *overrides, *extra))
    wall = time.perf_counter() - start
    ckpt = record["best_checkpoint"]
    adabn = test_checkpoint(compose_cfg(run_dir / "adabn", *common, *overrides, *extra, "mode=test",
                                        f"ckpt_path={ckpt}", "adapt.adabn=true"))
    metrics = record["metrics"]
    return {"row": name, "seed": seed, "overrides": extra, "wall_s": wall, "epochs": record["epochs"],
            "target_acc": metrics["test/target_acc"], "target_acc_adabn": adabn["metrics"]["test/target_acc"],
            "source_acc": metrics["test/source_acc"], "val_source_acc": metrics["val/source_acc"],
            "val_target_acc": metrics["val/target_acc"]}


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * std:.1f}"


def table(results: list[dict]) -> str:
    lines = [
        "| method | target test acc (%) | with AdaBN (%) | source test acc (%) | seeds | wall time / run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in results):
        rows = [r for r in results if r["row"] == name]
        lines.append(
            f"| {name} | {mean_std([r['target_acc'] for r in rows])} | {mean_std([r['target_acc_adabn'] for r in rows])} "
            f"| {mean_std([r['source_acc'] for r in rows])} | {len(rows)} | {statistics.mean(r['wall_s'] for r in rows):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help=f"rows to run (default all): {list(ROWS)}")
    parser.add_argument("--log", type=Path, default=None, help="append one JSON line per run here")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here too")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run, e.g. trainer.accelerator=gpu")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name in args.rows:
                result = run_row(name, ROWS[name], seed, Path(tmp), args.overrides)
                results.append(result)
                print(json.dumps(result), flush=True)
                if args.log:
                    with args.log.open("a") as handle:
                        handle.write(json.dumps(result) + "\n")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and "gpu" in " ".join(args.overrides) else \
        f"CPU, {torch.get_num_threads()} threads ({platform.processor() or platform.machine()})"
    text = f"digits -> digits_m, {device}\n\n" + table(results)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

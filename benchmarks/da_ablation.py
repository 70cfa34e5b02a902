"""Domain adaptation ablation and label-free selection: digits -> digits_m (docs/benchmarks.md).

Every row is `python run.py experiment=da_digits_m adapt=<method>` (the first without the source
augmentation), run in this process. Its checkpoint is chosen by the preset's objective,
`val/target_im` (information maximisation on the target's validation PREDICTIONS): no target
label is read for training, early stopping, checkpoint or hyper-parameter selection (pass
`objective=val/acc` to select on the source validation accuracy instead). The checkpoint is then
tested as trained and with AdaBN
(`mode=test adapt.adabn=true`). Reported per row: target test accuracy mean +- std over seeds and a
95 % interval (normal approximation over the held-out target DIGITS, the independent unit: the five
patches of one digit are not independent), source test accuracy, optimizer steps, wall time.

The selection table: after every epoch a benchmark-only callback also measures the target TEST
accuracy (never seen by the run), so for each label-free validator (val/source_acc and the
validators of experiments.adapt.validators) we know what its pick among the epochs would have
scored, against the best possible pick (oracle selection) and the last epoch.

    python benchmarks/da_ablation.py                                # 3 seeds, every row
    python benchmarks/da_ablation.py --seeds 0 --rows mean_teacher
    python benchmarks/da_ablation.py --pair reverse                 # digits_m -> digits
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from _common import QUIET, compose_cfg
from experiments.adapt.validators import VALIDATORS
from experiments.pipeline.tasks import evaluate_checkpoint, train

NO_AUGMENTATION = "data.source.device_augment=null"
ROWS = {
    "source_only": ["adapt=source_only", NO_AUGMENTATION],
    "source_only+aug": ["adapt=source_only"],
    "dann": ["adapt=dann"],
    "cdan": ["adapt=cdan"],
    "mcc": ["adapt=mcc"],
    "adamatch": ["adapt=adamatch"],
    "mean_teacher": ["adapt=mean_teacher"],
    "oracle": ["adapt=oracle"],
}
PAIRS = {"forward": "experiment=da_digits_m", "reverse": "experiment=da_digits_m_reverse"}
#: what each selection rule reads, and whether higher is better
SELECTORS = {"val/source_acc": True, **{f"val/target_{name}": higher for name, higher in VALIDATORS.items()}}


class TargetTestPerEpoch(L.Callback):
    """Benchmark only: the target test accuracy of the evaluated network after every validation,
    beside the epoch's logged validators (what a selection rule would have read)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module logged the epoch (a callback's epoch-end hook runs before the module's);
        # only while fitting (not the final re-validation of the chosen checkpoint)
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        loader = trainer.datamodule.target.test_dataloader()
        network = pl_module.evaluated_model()
        correct = total = 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(pl_module.device), y.to(pl_module.device)
                correct += int((network(x).argmax(dim=-1) == y).sum())
                total += len(y)
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k in SELECTORS}
        self.epochs.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                            "test_target_acc": correct / total, **logged})


def run_row(name: str, overrides: list[str], seed: int, root: Path, pair: str, extra: list[str]) -> dict:
    run_dir = root / f"{name}-{seed}"
    common = [PAIRS[pair], f"seed={seed}", "logger=none", "callbacks.test_figures=null", *QUIET]
    per_epoch = TargetTestPerEpoch()
    start = time.perf_counter()
    record = train(compose_cfg(run_dir, *common, *overrides, *extra), callbacks=[per_epoch]).record
    wall = time.perf_counter() - start
    ckpt = record["best_checkpoint"]
    adabn = evaluate_checkpoint(compose_cfg(run_dir / "adabn", *common, *overrides, *extra, "mode=test",
                                        f"ckpt_path={ckpt}", "adapt.adabn=true")).record
    metrics = record["metrics"]
    return {"row": name, "seed": seed, "pair": pair, "overrides": overrides + extra, "wall_s": wall,
            "epochs": record["epochs"], "steps": per_epoch.epochs[-1]["step"],
            "target_acc": metrics["test/target_acc"], "target_acc_adabn": adabn["metrics"]["test/target_acc"],
            "source_acc": metrics["test/source_acc"], "threads": torch.get_num_threads(), "per_epoch": per_epoch.epochs}


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * std:.1f}"


def interval(values: list[float], n_units: int) -> str:
    """95 % interval of the mean accuracy over ``n_units`` independent test units per seed."""
    p = statistics.mean(values)
    half = 1.96 * math.sqrt(p * (1 - p) / (n_units * len(values)))
    return f"[{100 * (p - half):.1f}, {100 * (p + half):.1f}]"


def table(results: list[dict], n_units: int) -> str:
    lines = [
        "| method | target test acc (%) | 95 % interval | with AdaBN (%) | source test acc (%) | seeds | steps | wall time / run (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in results):
        rows = [r for r in results if r["row"] == name]
        target = [r["target_acc"] for r in rows]
        lines.append(
            f"| {name} | {mean_std(target)} | {interval(target, n_units)} | {mean_std([r['target_acc_adabn'] for r in rows])} "
            f"| {mean_std([r['source_acc'] for r in rows])} | {len(rows)} | {rows[0]['steps']} "
            f"| {statistics.mean(r['wall_s'] for r in rows):.0f} |"
        )
    return "\n".join(lines)


def pick(epochs: list[dict], key: str, higher: bool) -> dict:
    scored = [e for e in epochs if key in e]
    return (max if higher else min)(scored, key=lambda e: e[key]) if scored else epochs[-1]


def selection_table(results: list[dict]) -> str:
    """Per method: the target test accuracy of the epoch each rule picks; last row: the same
    rules picking among every (method, epoch) of a seed (which method to trust)."""
    rules = {**{k: k for k in SELECTORS}, "last epoch": None, "oracle pick (test labels)": "test_target_acc"}
    header = "| method | " + " | ".join(rules) + " |"
    lines = [header, "|---" * (len(rules) + 1) + "|"]

    def score(runs: list[list[dict]], rule: str) -> str:
        key = rules[rule]
        picks = [r[-1] if key is None else pick(r, key, SELECTORS.get(key, True)) for r in runs]
        return mean_std([p["test_target_acc"] for p in picks])

    names = [n for n in dict.fromkeys(r["row"] for r in results) if n != "oracle"]
    for name in names:
        runs = [r["per_epoch"] for r in results if r["row"] == name and r["per_epoch"]]
        lines.append(f"| {name} | " + " | ".join(score(runs, rule) for rule in rules) + " |")
    seeds = sorted({r["seed"] for r in results})
    pooled = [[dict(e, method=r["row"]) for r in results if r["seed"] == s and r["row"] in names for e in r["per_epoch"]]
              for s in seeds]
    lines.append("| any method (pooled per seed) | " + " | ".join(score(pooled, rule) for rule in rules) + " |")
    return "\n".join(lines)


def test_units(pair: str) -> int:
    """The number of independent target test units (digits) of the pair's preset."""
    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory() as tmp:
        data = instantiate(compose_cfg(Path(tmp), PAIRS[pair], "adapt=source_only").data)
        data.setup("test")
        test = data.target.test_set
        test = getattr(test, "dataset", test)
        digits = getattr(test, "digit", None)
        return len(torch.unique(digits)) if digits is not None else len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help=f"rows to run (default all): {list(ROWS)}")
    parser.add_argument("--pair", choices=list(PAIRS), default="forward")
    parser.add_argument("--log", type=Path, default=None, help="append one JSON line per run here")
    parser.add_argument("--resume-log", action="store_true", help="skip runs already in --log")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown tables here too")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run, e.g. trainer.accelerator=gpu")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")
    results = []
    if args.resume_log and args.log and args.log.exists():
        results = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
        results = [r for r in results if r["pair"] == args.pair and r["row"] in args.rows and r["seed"] in args.seeds]
    done = {(r["row"], r["seed"]) for r in results}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name in args.rows:
                if (name, seed) in done:
                    continue
                result = run_row(name, ROWS[name], seed, Path(tmp), args.pair, args.overrides)
                results.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "per_epoch"}), flush=True)
                if args.log:
                    with args.log.open("a") as handle:
                        handle.write(json.dumps(result) + "\n")
    threads = sorted({r.get("threads", torch.get_num_threads()) for r in results}) or [torch.get_num_threads()]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and "gpu" in " ".join(args.overrides) else \
        f"CPU, {'/'.join(map(str, threads))} thread(s) per run ({platform.processor() or platform.machine()})"
    results.sort(key=lambda r: (list(ROWS).index(r["row"]), r["seed"]))
    units = test_units(args.pair)
    text = (f"{PAIRS[args.pair]} ({args.pair}), {device}; {units} independent target test units\n\n"
            + table(results, units) + "\n\nSelection (target test accuracy of the epoch each rule picks):\n\n"
            + selection_table(results))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

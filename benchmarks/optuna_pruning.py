"""Pruning pays: one Optuna study of the default run's learning rate, with and without the pruner.

    python benchmarks/optuna_pruning.py [--trials 12] [--epochs 8] [--repeats 1]

Each study is the same command (``hparams_search=optuna``, TPE seeded alike, the learning rate over
1e-5 .. 1 on a log scale, weight decay and batch size fixed), once with the yaml's MedianPruner and
once with ``hydra.sweeper.pruner=null``, alternating which goes first between repeats, each in its
own process. Per study: the trials pruned, the best validation accuracy, the sweep's wall time; then
the time ratio (pruned / unpruned). The issue's goal: at least a third pruned, a best value no worse,
in less time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study(sweep_dir: Path, trials: int, epochs: int, pruned: bool) -> dict:
    command = [sys.executable, str(ROOT / "run.py"), "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}",
               "optimizer.lr=tag(log, interval(1e-5, 1.0))", "optimizer.weight_decay=0.01", "data.batch_size=64",
               f"trainer.max_epochs={epochs}", "logger=none", "trainer.enable_progress_bar=false",
               "callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.test_figures=null",
               f"hydra.sweep.dir={sweep_dir}", *([] if pruned else ["hydra.sweeper.pruner=null"])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a trial failed (a learning rate of 1 may diverge); the study still ends
        raise SystemExit(done.stderr[-3000:])
    report = json.loads((sweep_dir / "optuna_study.json").read_text())
    states = report["states"]
    return {"seconds": seconds, "pruned": states.get("pruned", 0), "complete": states.get("complete", 0),
            "failed": states.get("fail", 0), "trials": report["trials"], "best": report["best_trial"]["value"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"median pruner": [], "no pruner": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
            for name in order:
                result = study(Path(tmp) / f"{name.replace(' ', '_')}-{repeat}", args.trials, args.epochs, name == "median pruner")
                runs[name].append(result)
                print(f"  {name} repeat {repeat}: {result}", flush=True)
    print(f"\n{args.trials} trials of {args.epochs} epochs, the default run's optimizer.lr over 1e-5..1 (log), "
          f"median of {args.repeats} repeats")
    print("| study | trials pruned | completed | failed | best val/acc | wall s |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for name, results in runs.items():
        medians[name] = {k: statistics.median(r[k] for r in results) for k in ("seconds", "pruned", "complete", "failed", "best")}
        m = medians[name]
        print(f"| {name} | {m['pruned']:g} of {args.trials} | {m['complete']:g} | {m['failed']:g} | {m['best']:.4f} | {m['seconds']:.1f} |")
    ratio = medians["median pruner"]["seconds"] / medians["no pruner"]["seconds"]
    print(f"\npruned/unpruned wall time {ratio:.2f}x; best {medians['median pruner']['best']:.4f} vs "
          f"{medians['no pruner']['best']:.4f}")


if __name__ == "__main__":
    main()

"""The strategy table, measured: a pretrained digits model fine-tuned on two targets x two sizes.

Pretrains once (``experiment=pretrain_digits``: the digits' source half, 3x32x32), or takes
``--weights``; then, for every cell of the guidance table, trains every strategy from those weights
over seeds and reports the **target test accuracy** (mean +- std) and the wall time of one run:

* domain: ``similar`` = ``data=digits data.partition=target`` (held-out digits, same domain);
  ``different`` = ``data=digits_m`` (the target half over photo patches);
* size: ``small`` = 10 labels per class; ``large`` = all (digits, ~63 per class) / 1000 per class
  (digits_m);
* strategies: scratch, classifier_only, partial (1 and 2 blocks), full, gradual, lp_ft and auto
  (which strategy auto chose, and where it placed the cell, is reported too).

Writes ``table.md`` (Markdown: accuracy and time tables, the winner per cell, whether the guidance's
strategy is within 1 point of it, auto's choice), ``heatmap.png`` (cells x strategies) and
``runs.jsonl`` (one line per run) into ``--out``. Every run is a real ``train()`` of the framework.

    python benchmarks/transfer_table.py                          # 4 cells x 8 strategies x 3 seeds
    python benchmarks/transfer_table.py --weights outputs/pretrained/digits_small_resnet/checkpoints/last.ckpt
    python benchmarks/transfer_table.py --model resnet18 --with-da
    python benchmarks/transfer_table.py --cells similar-small --seeds 0 --pretrain-epochs 1 --epochs-small 2  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import QUIET, compose_cfg
from _grid import machine, mean_std
from experiments.tasks import train

SIMILAR = ["data=digits", "data.partition=target", "data.channels=3", "data.image_size=32"]
CELLS = {
    "similar-small": [*SIMILAR, "data.samples_per_class=10"],
    "similar-large": [*SIMILAR, "data.samples_per_class=null"],
    "different-small": ["data=digits_m", "data.samples_per_class=10"],
    "different-large": ["data=digits_m", "data.samples_per_class=1000"],
}
#: what the README's guidance table prescribes per cell (checked against the winner)
GUIDANCE = {"similar-small": "classifier_only", "similar-large": "partial-2", "different-small": "scratch",
            "different-large": "full"}
STRATEGIES = ["scratch", "classifier_only", "partial-1", "partial-2", "full", "gradual", "lp_ft", "auto"]
RUN = ["logger=none", "callbacks.test_figures=null", *QUIET]


def strategy_overrides(name: str, epochs: int) -> list[str]:
    """``finetune=`` overrides of a column; gradual and lp_ft get schedules that span the run."""
    if name.startswith("partial-"):
        return ["finetune=partial", f"finetune.n_blocks={name.split('-')[1]}"]
    if name == "gradual":  # five blocks thaw over the first ~5/6 of the run
        return ["finetune=gradual", f"finetune.unfreeze_every={max(1, epochs // 6)}"]
    if name == "lp_ft":
        return ["finetune=lp_ft", f"finetune.probe_epochs={max(1, epochs // 4)}"]
    return [f"finetune={name}"]


def pretrain(model: str, epochs: int, root: Path, extra: list[str]) -> Path:
    """``experiment=pretrain_digits``; returns its last.ckpt."""
    run_dir = root / f"pretrain_{model}"
    start = time.perf_counter()
    record = train(compose_cfg(run_dir, "experiment=pretrain_digits", f"model={model}", f"trainer.max_epochs={epochs}",
                               "seed=0", *RUN, *extra))
    print(f"pretrained {model} on the digits' source half: test/acc {record['metrics']['test/acc']:.4f}, "
          f"{record['epochs']} epochs in {time.perf_counter() - start:.0f}s", flush=True)
    return run_dir / "checkpoints" / "last.ckpt"


def run_one(cell: str, strategy: str, seed: int, epochs: int, weights: Path, model: str, root: Path,
            extra: list[str]) -> dict:
    run_dir = root / f"{cell}-{strategy}-{seed}"
    cfg = compose_cfg(run_dir, *CELLS[cell], f"model={model}", f"model.weights={weights}", f"seed={seed}",
                      f"trainer.max_epochs={epochs}", *strategy_overrides(strategy, epochs), *RUN, *extra)
    start = time.perf_counter()
    record = train(cfg)
    result = {"cell": cell, "strategy": strategy, "seed": seed, "epochs": epochs,
              "test_acc": record["metrics"]["test/acc"], "wall_s": time.perf_counter() - start,
              "trained": record["finetune"]}
    auto = record["finetune_detail"].get("auto")
    if auto:
        result["auto"] = {k: auto[k] for k in ("strategy", "keys", "cell", "probe_acc", "samples_per_class")}
        result["auto"]["shift"] = auto["shift"]["overall"]
    return result


def run_da(seed: int, root: Path, extra: list[str]) -> dict:
    """``experiment=da_digits_m`` (mean teacher, no target label): the alternative for different-small."""
    start = time.perf_counter()
    record = train(compose_cfg(root / f"da-{seed}", "experiment=da_digits_m", f"seed={seed}", *RUN, *extra))
    return {"cell": "different-small", "strategy": "da_digits_m", "seed": seed,
            "test_acc": record["metrics"]["test/target_acc"], "wall_s": time.perf_counter() - start}


def _values(results: list[dict], cell: str, strategy: str, key: str) -> list[float]:
    return [r[key] for r in results if r["cell"] == cell and r["strategy"] == strategy]


def _within(means: dict[str, float], best: str | None, name: str) -> str:
    """Whether ``name``'s mean accuracy is within 1 point of the best one's."""
    if best is None or name not in means:
        return "-"
    gap = 100 * (means[best] - means[name])
    return f"yes ({name})" if gap <= 1 else f"no ({name}: -{gap:.1f})"


def markdown(results: list[dict], cells: list[str], strategies: list[str], header: str) -> str:
    """Accuracy table (winner in bold; guidance and auto checked against it) and time table."""
    lines = [header, "", "Target test accuracy (%), mean +- std over seeds:", "",
             "| cell | " + " | ".join(strategies) + " | best | guidance within 1 pt | auto chose | auto within 1 pt |",
             "|---|" + "---|" * (len(strategies) + 4)]
    for cell in cells:
        means = {s: statistics.fmean(v) for s in strategies if (v := _values(results, cell, s, "test_acc"))}
        best = max(means, key=means.get) if means else None
        row = []
        for s in strategies:
            text = mean_std(_values(results, cell, s, "test_acc"), scale=100, digits=1)
            row.append(f"**{text}**" if s == best else text)
        chose = sorted({f"{r['auto']['strategy']} ({r['auto']['cell']['domain']}/{r['auto']['cell']['size']})"
                        for r in results if r["cell"] == cell and "auto" in r})
        lines.append(f"| {cell} | " + " | ".join(row) + f" | {best or '-'} | {_within(means, best, GUIDANCE[cell])} "
                     f"| {', '.join(chose) or '-'} | {_within(means, best, 'auto')} |")
    da = [r["test_acc"] for r in results if r["strategy"] == "da_digits_m"]
    if da:
        lines += ["", f"Domain adaptation instead (different-small: no target label, `python run.py "
                      f"experiment=da_digits_m`): target test accuracy {mean_std(da, scale=100, digits=1)} % "
                      f"over {len(da)} seeds."]
    lines += ["", "Wall time of one run (s, fit + validate + test, mean over seeds):", "",
              "| cell | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for cell in cells:
        walls = [_values(results, cell, s, "wall_s") for s in strategies]
        lines.append(f"| {cell} | " + " | ".join(f"{statistics.fmean(w):.1f}" if w else "-" for w in walls) + " |")
    return "\n".join(lines)


def heatmap(path: Path, results: list[dict], cells: list[str], strategies: list[str]) -> None:
    """Cells x strategies, colour = mean target test accuracy, each square annotated mean +- std."""
    import numpy as np
    from matplotlib.figure import Figure

    grid = np.full((len(cells), len(strategies)), np.nan)
    fig = Figure(figsize=(1.3 * len(strategies) + 2, 0.8 * len(cells) + 1.6))
    ax = fig.add_subplot()
    for i, cell in enumerate(cells):
        for j, strategy in enumerate(strategies):
            values = _values(results, cell, strategy, "test_acc")
            if values:
                grid[i, j] = statistics.fmean(values)
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                ax.text(j, i, f"{grid[i, j]:.2f}\n+-{spread:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] < 0.5 else "black")
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, label="target test accuracy")
    ax.set_xticks(range(len(strategies)), labels=strategies, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(cells)), labels=cells, fontsize=8)
    ax.set_title("fine-tuning from the pretrained digits model")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_resnet", help="model= option to pretrain and transfer (small_resnet, resnet18)")
    parser.add_argument("--weights", type=Path, default=None, help="a pretrained last.ckpt (skips pretraining)")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs-small", type=int, default=60, help="fine-tuning epochs of the small cells")
    parser.add_argument("--epochs-large", type=int, default=15, help="fine-tuning epochs of the large cells")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--with-da", action="store_true", help="also run experiment=da_digits_m per seed")
    parser.add_argument("--out", type=Path, default=Path("outputs/transfer_table"))
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run, e.g. trainer.accelerator=gpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or pretrain(args.model, args.pretrain_epochs, args.out, args.overrides)
        for cell in args.cells:
            epochs = args.epochs_small if cell.endswith("small") else args.epochs_large
            for strategy in args.strategies:
                for seed in args.seeds:
                    result = run_one(cell, strategy, seed, epochs, weights, args.model, Path(tmp), args.overrides)
                    results.append(result)
                    print(json.dumps(result), flush=True)
                    with log.open("a") as handle:
                        handle.write(json.dumps(result) + "\n")
        if args.with_da and "different-small" in args.cells:
            for seed in args.seeds:
                results.append(run_da(seed, Path(tmp), args.overrides))
                print(json.dumps(results[-1]), flush=True)
    header = (f"model={args.model}, weights {weights}, {machine()}; epochs: small {args.epochs_small}, "
              f"large {args.epochs_large}; seeds {args.seeds}")
    text = markdown(results, args.cells, args.strategies, header)
    (args.out / "table.md").write_text(text + "\n")
    heatmap(args.out / "heatmap.png", results, args.cells, args.strategies)
    print(text)
    print(f"\n-> {args.out / 'table.md'}, {args.out / 'heatmap.png'}, {log}")


if __name__ == "__main__":
    main()

"""The strategy table across (pretrained weights, target data) pairs, every run on a step budget.

A *pair* is a pretrained model and its targets; a *cell* is (pair, target, size):

* ``digits``: ``small_resnet`` pretrained here on the digits' source half (``experiment=pretrain_digits``,
  or ``--weights``) -> held-out digits (similar domain), digits_m (digits over photo patches: different);
* ``imagenet``: ImageNet ``efficientnet_lite0`` (installed package) -> digits, digits_m (both differ
  from photos of objects), images at 64 px;
* ``minilm``: the MiniLM sentence encoder (``model=hf_text``) -> rotten_tomatoes, bbc_news; its
  scratch row is TF-IDF features into ``sparse_mlp``.

Sizes: ``small`` = 10 labelled images per class (validation limited to 10 per class too); ``large`` =
every label (digits_m: 1000 per class). Every run trains ``train_steps`` optimizer steps
(``--steps-small``/``--steps-large``) and tests the checkpoint its validation split chose.
Strategies: classifier_only (head fitted by L-BFGS on cached features, then trained), partial-1,
partial-2, full, gradual, lp_ft, auto (measure, prior, race), and scratch with its own learning
rate: ``--scratch-lrs`` are each run and the one with the better *validation* accuracy counts (per
seed); ``scratch-2x`` reruns that learning rate with twice the steps (the convergence check).

    python benchmarks/transfer_table.py                                    # every pair, 3 seeds
    python benchmarks/transfer_table.py --pairs digits imagenet --out outputs/tt_images trainer=gpu
    python benchmarks/transfer_table.py --report outputs/tt_a outputs/tt_b  # one table from several runs
    python benchmarks/transfer_table.py --pairs digits --targets digits --sizes small --seeds 0 \\
        --steps-small 20 --strategies classifier_only auto                  # a smoke run

Writes ``runs.jsonl`` (one line per run: accuracy, steps, epochs, wall time, what auto chose and its
race), ``table.md`` (per pair: mean +- std, steps, wall time; the best per cell; whether the seed's
guidance and auto are within 1 point of it; auto's cost against the strategy it trained) and
``heatmap.png`` into ``--out``. Every run is a real ``train()`` of the framework.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import QUIET, compose_cfg
from _grid import machine, mean_std
from experiments.pipeline.tasks import train


@dataclass(frozen=True)
class Pair:
    """Pretrained weights (``model``) and their targets; ``domain`` says whether each target is
    similar to the pretraining data or very different (what the seed's guidance is checked on)."""

    model: tuple[str, ...]
    targets: dict[str, tuple[str, ...]]
    domain: dict[str, str]
    scratch: tuple[str, ...] | None = None  # the scratch row's overrides (None: the same model, finetune=scratch)
    large: dict[str, str] = field(default_factory=dict)  # samples_per_class of the large size
    common: tuple[str, ...] = ()


DIGITS_TARGET = ("data=digits", "data.partition=target", "data.channels=3")
PAIRS = {
    "digits": Pair(
        model=("model=small_resnet",),  # + model.weights=<the pretrained checkpoint>
        targets={"digits": (*DIGITS_TARGET, "data.image_size=32"), "digits_m": ("data=digits_m",)},
        domain={"digits": "similar", "digits_m": "different"},
        large={"digits": "null", "digits_m": "1000"},
    ),
    "imagenet": Pair(
        model=("model=efficientnet_lite0", "model.pretrained=true"),
        targets={"digits": (*DIGITS_TARGET, "data.image_size=64"), "digits_m": ("data=digits_m", "data.image_size=64")},
        domain={"digits": "different", "digits_m": "different"},
        large={"digits": "null", "digits_m": "1000"},
        common=("data.eval_batch_size=256",),
    ),
    "minilm": Pair(
        model=("model=hf_text",),
        targets={"rotten_tomatoes": ("data=rotten_tomatoes",), "bbc_news": ("data=bbc_news",)},
        domain={"rotten_tomatoes": "similar", "bbc_news": "similar"},
        scratch=("finetune=scratch", "model=sparse_mlp", "data.features=tfidf"),
        large={"rotten_tomatoes": "null", "bbc_news": "null"},
    ),
}
#: the seed's guidance: (domain, size) -> the strategy it prescribes (scratch: fine-tuning unsuitable)
GUIDANCE = {("similar", "small"): "classifier_only", ("similar", "large"): "partial-2",
            ("different", "small"): "scratch", ("different", "large"): "full"}
STRATEGIES = ["scratch", "classifier_only", "partial-1", "partial-2", "full", "gradual", "lp_ft", "auto"]
#: columns of the table: scratch (its best learning rate) and its 2x-steps check beside the others
COLUMNS = ["scratch", "scratch-2x", *STRATEGIES[1:]]
RUN = ["logger=none", "callbacks.test_figures=null", "callbacks.last_checkpoint=null", *QUIET]


def strategy_overrides(name: str) -> list[str]:
    """``finetune=`` overrides of a column; lp_ft and gradual schedules span whatever epochs the
    step budget gives (null: a quarter of the run; every block thawed by 5/6 of it)."""
    if name.startswith("partial-"):
        return ["finetune=partial", f"finetune.n_blocks={name.split('-')[1]}"]
    if name == "gradual":
        return ["finetune=gradual", "finetune.unfreeze_every=null"]
    if name == "lp_ft":
        return ["finetune=lp_ft", "finetune.probe_epochs=null"]
    return [f"finetune={name}"]


def pretrain(epochs: int, root: Path, extra: list[str]) -> Path:
    """``experiment=pretrain_digits`` (small_resnet on the digits' source half); returns its last.ckpt."""
    run_dir = root / "pretrain_small_resnet"
    start = time.perf_counter()
    record = train(compose_cfg(run_dir, "experiment=pretrain_digits", f"trainer.max_epochs={epochs}", "seed=0",
                               "logger=none", "callbacks.test_figures=null", *QUIET, *extra)).record
    print(f"pretrained small_resnet on the digits' source half: test/acc {record['metrics']['test/acc']:.4f}, "
          f"{record['epochs']} epochs in {time.perf_counter() - start:.0f}s", flush=True)
    return run_dir / "checkpoints" / "last.ckpt"


@dataclass(frozen=True)
class Cell:
    pair: str
    target: str
    size: str

    @property
    def name(self) -> str:
        return f"{self.pair}:{self.target}-{self.size}"

    @property
    def domain(self) -> str:
        return PAIRS[self.pair].domain[self.target]


def run_one(cell: Cell, column: str, seed: int, steps: int, root: Path, extra: list[str],
            weights: Path | None, lr: float | None = None) -> dict:
    """One run of ``column`` in ``cell``; its record reduced to what the table needs."""
    pair = PAIRS[cell.pair]
    per_class = "10" if cell.size == "small" else pair.large[cell.target]
    if column == "scratch":
        model = list(pair.scratch or (*pair.model, "finetune=scratch"))
    else:
        model = [*pair.model, *strategy_overrides(column), *([f"model.weights={weights}"] if cell.pair == "digits" else [])]
    tag = f"{column}@{lr:g}" if lr else column
    run_dir = root / f"{cell.pair}-{cell.target}-{cell.size}-{tag}-{seed}"
    size = [f"data.samples_per_class={per_class}", *(["data.batch_size=32"] if cell.size == "small" else [])]
    cfg = compose_cfg(run_dir, *pair.targets[cell.target], *size, *model, *pair.common, f"seed={seed}",
                      f"train_steps={steps}", *([f"optimizer.lr={lr}"] if lr else []), *RUN, *extra)
    start = time.perf_counter()
    record = train(cfg).record
    result = {"cell": cell.name, "pair": cell.pair, "target": cell.target, "size": cell.size, "strategy": tag,
              "seed": seed, "test_acc": record["metrics"]["test/acc"], "val_acc": record["metrics"]["val/acc"],
              "steps": record["global_step"], "epochs": record["epochs"], "wall_s": time.perf_counter() - start,
              "trained": record["finetune"], "machine": machine()}
    auto = record["finetune_detail"].get("auto")
    if auto:
        result["auto"] = {"prior": auto["prior"], "strategy": auto["strategy"], "keys": auto["keys"],
                          "cell": auto["cell"], "probe_acc": auto["probe_acc"], "shift": auto["shift"]["overall"],
                          "race": auto["race"], "measure_seconds": auto["measure_seconds"]}
    return result


def run_cell(cell: Cell, args: argparse.Namespace, root: Path, weights: Path | None, emit) -> None:
    steps = args.steps_small if cell.size == "small" else args.steps_large
    for seed in args.seeds:
        for column in args.strategies:
            if column != "scratch":
                emit(run_one(cell, column, seed, steps, root, args.overrides, weights))
                continue
            tried = [run_one(cell, "scratch", seed, steps, root, args.overrides, weights, lr) for lr in args.scratch_lrs]
            for result in tried:
                emit(result)
            best = max(tried, key=lambda r: r["val_acc"])  # chosen on validation, never on test
            emit({**best, "strategy": "scratch", "lr": float(best["strategy"].split("@")[1])})
            if args.scratch_check:
                check = run_one(cell, "scratch", seed, 2 * steps, root, args.overrides, weights,
                                float(best["strategy"].split("@")[1]))
                emit({**check, "strategy": "scratch-2x"})


# -- the report ------------------------------------------------------------------------------------
def _rows(results: list[dict], cell: str, column: str) -> list[dict]:
    return [r for r in results if r["cell"] == cell and r["strategy"] == column]


def _within(means: dict[str, float], best: str | None, name: str) -> str:
    if best is None or name not in means:
        return "-"
    gap = 100 * (means[best] - means[name])
    return "yes" if gap <= 1 else f"no (-{gap:.1f})"


def markdown(results: list[dict], header: str) -> str:
    cells = list(dict.fromkeys(r["cell"] for r in results))
    pairs = list(dict.fromkeys(r["pair"] for r in results))
    columns = [c for c in COLUMNS if any(r["strategy"] == c for r in results)]
    lines = [header]
    summary = []
    for pair in pairs:
        lines += ["", f"### {pair}", "", "Target test accuracy (%), mean +- std over seeds (optimizer steps per run):", "",
                  "| cell | " + " | ".join(columns) + " | best | guidance | auto chose (prior -> trained) |",
                  "|---|" + "---|" * (len(columns) + 3)]
        for cell in [c for c in cells if c.startswith(f"{pair}:")]:
            # scratch-2x ranks too: scratch's own budget may be the larger one (fine-tuning's is fixed)
            means = {c: statistics.fmean(r["test_acc"] for r in rows) for c in columns if (rows := _rows(results, cell, c))}
            best = max(means, key=means.get) if means else None
            row = []
            seeds = len({r["seed"] for r in results if r["cell"] == cell})
            for c in columns:
                rows = _rows(results, cell, c)
                text = mean_std([r["test_acc"] for r in rows], scale=100, digits=1)
                steps = "/".join(map(str, sorted({r["steps"] for r in rows})))
                fewer = f"; {len(rows)} of {seeds} seeds" if len(rows) < seeds else ""
                text = f"{text} ({steps}{fewer})" if rows else "-"
                row.append(f"**{text}**" if c == best else text)
            sample = next(r for r in results if r["cell"] == cell)
            guide = GUIDANCE[(PAIRS[sample["pair"]].domain[sample["target"]], sample["size"])]
            if guide == "scratch" and "scratch-2x" in means and means["scratch-2x"] > means.get("scratch", -1):
                guide = "scratch-2x"
            autos = [r["auto"] for r in _rows(results, cell, "auto")]
            chose = ", ".join(sorted({f"{a['prior']} -> {a['strategy']}" for a in autos})) or "-"
            lines.append(f"| {cell} | " + " | ".join(row) + f" | {best or '-'} | {guide}: {_within(means, best, guide)} "
                         f"| {chose}; {_within(means, best, 'auto')} |")
            summary.append((cell, best, _within(means, best, guide), _within(means, best, "auto"),
                            min(means, key=means.get) == "auto" if "auto" in means and len(means) > 1 else False))
        lines += ["", "Wall time of one run (s, fit + validate + test, mean over seeds; auto's ratio against the "
                      "strategy it trained compares runs of one seed on one machine):", "",
                  "| cell | " + " | ".join(columns) + " | auto / the strategy it trained | machines |",
                  "|---|" + "---|" * (len(columns) + 2)]
        for cell in [c for c in cells if c.startswith(f"{pair}:")]:
            walls = [[r["wall_s"] for r in _rows(results, cell, c)] for c in columns]
            ratios = []
            for r in _rows(results, cell, "auto"):
                same = [o["wall_s"] for o in results if o["cell"] == cell and o["seed"] == r["seed"]
                        and o["strategy"] == _trained_column(r) and o.get("machine") == r.get("machine")]
                if same:
                    ratios.append(r["wall_s"] / same[0])
            ratio = f"{statistics.fmean(ratios):.2f}x" if ratios else "-"
            machines = ", ".join(sorted({r.get("machine", "?") for r in results if r["cell"] == cell}))
            lines.append(f"| {cell} | " + " | ".join(f"{statistics.fmean(w):.1f}" if w else "-" for w in walls)
                         + f" | {ratio} | {machines} |")
    auto_ok = sum(1 for s in summary if s[3] == "yes")
    guide_ok = sum(1 for s in summary if s[2].startswith("yes"))
    worst = sum(1 for s in summary if s[4])
    lines += ["", f"auto within 1 point of the best in {auto_ok} of {len(summary)} cells (the worst column in {worst}); "
                  f"the seed's guidance in {guide_ok} of {len(summary)}."]
    return "\n".join(lines)


def _trained_column(auto_result: dict) -> str:
    """The table column of the strategy auto trained (partial with its block count)."""
    name, keys = auto_result["auto"]["strategy"], auto_result["auto"]["keys"]
    if name == "partial":
        return f"partial-{keys.get('n_blocks', 1)}"
    return name


def heatmap(path: Path, results: list[dict]) -> None:
    """Cells x strategies, colour = mean target test accuracy, each square annotated."""
    import numpy as np
    from matplotlib.figure import Figure

    cells = list(dict.fromkeys(r["cell"] for r in results))
    columns = [c for c in COLUMNS if any(r["strategy"] == c for r in results)]
    grid = np.full((len(cells), len(columns)), np.nan)
    fig = Figure(figsize=(1.2 * len(columns) + 3, 0.55 * len(cells) + 1.8))
    ax = fig.add_subplot()
    for i, cell in enumerate(cells):
        for j, column in enumerate(columns):
            values = [r["test_acc"] for r in _rows(results, cell, column)]
            if values:
                grid[i, j] = statistics.fmean(values)
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 0.5 else "black")
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, label="target test accuracy")
    ax.set_xticks(range(len(columns)), labels=columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(cells)), labels=cells, fontsize=8)
    ax.set_title("fine-tuning strategies across pretrained/target pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(out: Path, results: list[dict], header: str) -> None:
    text = markdown(results, header)
    (out / "table.md").write_text(text + "\n")
    heatmap(out / "heatmap.png", results)
    print(text)
    print(f"\n-> {out / 'table.md'}, {out / 'heatmap.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--targets", nargs="+", default=None, help="only these targets of the pairs")
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=["small", "large"])
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps-small", type=int, default=400, help="optimizer steps of a small-cell run")
    parser.add_argument("--steps-large", type=int, default=2000, help="optimizer steps of a large-cell run")
    parser.add_argument("--scratch-lrs", type=float, nargs="+", default=[1e-3, 3e-3],
                        help="scratch's learning rates; the best on validation counts")
    parser.add_argument("--no-scratch-check", dest="scratch_check", action="store_false",
                        help="skip scratch with twice the steps")
    parser.add_argument("--weights", type=Path, default=None, help="the digits pair's pretrained last.ckpt (skips pretraining)")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("outputs/transfer_table"))
    parser.add_argument("--report", type=Path, nargs="+", default=None,
                        help="no runs: one table from these output folders' runs.jsonl")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run, e.g. trainer=gpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        logs = [folder / "runs.jsonl" for folder in args.report if (folder / "runs.jsonl").exists()]
        results = [json.loads(line) for path in logs for line in path.read_text().splitlines() if line.strip()]
        report(args.out, results, f"From {', '.join(map(str, args.report))}")
        return
    log = args.out / "runs.jsonl"
    results: list[dict] = []

    def emit(result: dict) -> None:
        results.append(result)
        print(json.dumps(result), flush=True)
        with log.open("a") as handle:
            handle.write(json.dumps(result) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        weights = None
        if "digits" in args.pairs:
            weights = args.weights or pretrain(args.pretrain_epochs, args.out, args.overrides)
        for pair in args.pairs:
            for target in PAIRS[pair].targets:
                if args.targets and target not in args.targets:
                    continue
                for size in args.sizes:
                    run_cell(Cell(pair, target, size), args, Path(tmp), weights, emit)
    header = (f"{machine()}; steps: small {args.steps_small}, large {args.steps_large}; seeds {args.seeds}; "
              f"scratch lrs {args.scratch_lrs} (chosen on validation)")
    report(args.out, results, header)


if __name__ == "__main__":
    main()

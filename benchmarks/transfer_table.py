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
partial-2, full, gradual, lp_ft, surgical (the first block), bitfit, norm, lora, auto (measure,
prior, race), and scratch with its own learning rate: ``--scratch-lrs`` are each run and the one
with the better *validation* accuracy counts (per seed).

Converged reference columns: after every column ran at the cell's budget, the columns within
``--converge-margin`` of the best (on validation; scratch always) rerun with twice the steps until
doubling moves their mean validation accuracy by less than 1 point (``--doublings`` at most). A
column counts at the largest budget it ran; one whose last doubling still moved it is marked.

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
STRATEGIES = ["scratch", "classifier_only", "partial-1", "partial-2", "full", "gradual", "lp_ft", "surgical",
              "bitfit", "norm", "lora", "auto"]
#: columns of the table, in this order (each at the largest budget its convergence check ran)
COLUMNS = STRATEGIES
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
    """One run of ``column`` in ``cell`` with a budget of ``steps``; its record reduced to what the
    table needs."""
    pair = PAIRS[cell.pair]
    per_class = "10" if cell.size == "small" else pair.large[cell.target]
    if column == "scratch":
        model = list(pair.scratch or (*pair.model, "finetune=scratch"))
    else:
        model = [*pair.model, *strategy_overrides(column), *([f"model.weights={weights}"] if cell.pair == "digits" else [])]
    tag = f"{column}@{lr:g}" if lr else column
    run_dir = root / f"{cell.pair}-{cell.target}-{cell.size}-{tag}-{steps}-{seed}"
    size = [f"data.samples_per_class={per_class}", *(["data.batch_size=32"] if cell.size == "small" else [])]
    cfg = compose_cfg(run_dir, *pair.targets[cell.target], *size, *model, *pair.common, f"seed={seed}",
                      f"train_steps={steps}", *([f"optimizer.lr={lr}"] if lr else []), *RUN, *extra)
    start = time.perf_counter()
    record = train(cfg).record
    result = {"cell": cell.name, "pair": cell.pair, "target": cell.target, "size": cell.size, "strategy": tag,
              "seed": seed, "train_steps": steps, "test_acc": record["metrics"]["test/acc"],
              "val_acc": record["metrics"]["val/acc"], "steps": record["global_step"], "epochs": record["epochs"],
              "wall_s": time.perf_counter() - start, "trained": record["finetune"], "machine": machine()}
    auto = record["finetune_detail"].get("auto")
    if auto:
        result["auto"] = {"prior": auto["prior"], "strategy": auto["strategy"], "keys": auto["keys"],
                          "cell": auto["cell"], "probe_acc": auto["probe_acc"], "shift": auto["shift"]["overall"],
                          "block_shift": list(auto["shift"]["per_block"].values()),
                          "samples_per_class": auto["samples_per_class"], "race": auto["race"],
                          "num_classes": record["data"]["num_classes"],
                          "measure_seconds": auto["measure_seconds"]}
    return result


def run_column(cell: Cell, column: str, steps: int, args: argparse.Namespace, root: Path, weights: Path | None,
               emit, lrs: dict[int, float]) -> list[dict]:
    """``column`` at a budget of ``steps``, every seed; the rows that count. Scratch runs each of
    ``--scratch-lrs`` the first time and the better *validation* accuracy counts (per seed, stored
    in ``lrs``); a larger budget reruns that learning rate."""
    rows = []
    for seed in args.seeds:
        if column != "scratch":
            rows.append(run_one(cell, column, seed, steps, root, args.overrides, weights))
            emit(rows[-1])
            continue
        tried = [run_one(cell, "scratch", seed, steps, root, args.overrides, weights, lr)
                 for lr in ([lrs[seed]] if seed in lrs else args.scratch_lrs)]
        for result in tried:
            emit(result)
        best = max(tried, key=lambda r: r["val_acc"])  # chosen on validation, never on test
        lrs[seed] = float(best["strategy"].split("@")[1])
        rows.append({**best, "strategy": "scratch", "lr": lrs[seed]})
        emit(rows[-1])
    return rows


def _val(rows: list[dict]) -> float:
    return statistics.fmean(r["val_acc"] for r in rows)


def run_cell(cell: Cell, args: argparse.Namespace, root: Path, weights: Path | None, emit) -> None:
    """Every column at the cell's budget, then the convergence check: from the best column (on
    validation) down, a column within ``--converge-margin`` of the best (scratch always) reruns
    with twice the steps until doubling moves its mean validation accuracy by less than 1 point,
    at most ``--doublings`` times. The table reports each column at its largest budget."""
    steps = args.steps_small if cell.size == "small" else args.steps_large
    lrs: dict[int, float] = {}
    latest = {column: (steps, run_column(cell, column, steps, args, root, weights, emit, lrs))
              for column in args.strategies}
    ranked = sorted((c for c in latest if c != "auto"), key=lambda c: -_val(latest[c][1]))
    for column in ranked:
        for _ in range(args.doublings):
            best = max(_val(rows) for c, (_, rows) in latest.items() if c != "auto")
            budget, rows = latest[column]
            if column != "scratch" and best - _val(rows) > args.converge_margin:
                break
            more = run_column(cell, column, 2 * budget, args, root, weights, emit, lrs)
            latest[column] = (2 * budget, more)
            if abs(_val(more) - _val(rows)) < 0.01:
                break


# -- the report ------------------------------------------------------------------------------------
def _rows(results: list[dict], cell: str, column: str, steps: int | None = None) -> list[dict]:
    """The counted rows of ``column`` in ``cell``: at ``steps`` (None: the largest budget it ran)."""
    rows = [r for r in results if r["cell"] == cell and r["strategy"] == column]
    budgets = sorted({_budget(r) for r in rows})
    if not budgets:
        return []
    return [r for r in rows if _budget(r) == (budgets[-1] if steps is None else steps)]


def _budget(row: dict) -> int:
    return int(row.get("train_steps") or row["steps"])


def convergence(results: list[dict], cell: str, column: str) -> tuple[str, bool | None]:
    """``(text, converged)``: the budgets a column ran and what the last doubling moved (validation,
    then test, mean over seeds, points); converged is None when it was never doubled."""
    budgets = sorted({_budget(r) for r in results if r["cell"] == cell and r["strategy"] == column})
    if len(budgets) < 2:
        return (f"{budgets[0]}: not doubled" if budgets else "-"), None
    last, before = _rows(results, cell, column, budgets[-1]), _rows(results, cell, column, budgets[-2])
    moved = 100 * (_val(last) - _val(before))
    test = 100 * (statistics.fmean(r["test_acc"] for r in last) - statistics.fmean(r["test_acc"] for r in before))
    converged = abs(moved) < 1
    return (f"{' -> '.join(map(str, budgets))}: val {moved:+.1f}, test {test:+.1f}"
            f"{'' if converged else ' (not converged)'}"), converged


def cell_means(results: list[dict], cell: str, columns: list[str]) -> dict[str, float]:
    return {c: statistics.fmean(r["test_acc"] for r in rows) for c in columns if (rows := _rows(results, cell, c))}


def _within(means: dict[str, float], best: str | None, name: str) -> str:
    if best is None or name not in means:
        return "-"
    gap = 100 * (means[best] - means[name])
    return "yes" if gap <= 1 else f"no (-{gap:.1f})"


def guidance_column(cell_rows: list[dict]) -> str:
    sample = cell_rows[0]
    return GUIDANCE[(PAIRS[sample["pair"]].domain[sample["target"]], sample["size"])]


def markdown(results: list[dict], header: str) -> str:
    cells = list(dict.fromkeys(r["cell"] for r in results))
    pairs = list(dict.fromkeys(r["pair"] for r in results))
    columns = [c for c in COLUMNS if any(r["strategy"] == c for r in results)]
    lines = [header]
    summary = []
    for pair in pairs:
        pair_cells = [c for c in cells if c.startswith(f"{pair}:")]
        lines += ["", f"### {pair}", "", "Target test accuracy (%), mean +- std over seeds (optimizer steps per run; "
                  "`*`: its last doubling still moved validation accuracy by 1 point or more):", "",
                  "| cell | " + " | ".join(columns) + " | best | guidance | auto chose (prior -> trained) |",
                  "|---|" + "---|" * (len(columns) + 3)]
        for cell in pair_cells:
            means = cell_means(results, cell, columns)
            best = max(means, key=means.get) if means else None
            row = []
            seeds = len({r["seed"] for r in results if r["cell"] == cell})
            for c in columns:
                rows = _rows(results, cell, c)
                text = mean_std([r["test_acc"] for r in rows], scale=100, digits=1)
                steps = "/".join(map(str, sorted({r["steps"] for r in rows})))
                fewer = f"; {len(rows)} of {seeds} seeds" if len(rows) < seeds else ""
                star = "*" if convergence(results, cell, c)[1] is False else ""
                text = f"{text} ({steps}{fewer}){star}" if rows else "-"
                row.append(f"**{text}**" if c == best else text)
            guide = guidance_column([r for r in results if r["cell"] == cell])
            autos = [r["auto"] for r in _rows(results, cell, "auto")]
            chose = ", ".join(sorted({f"{a['prior']} -> {a['strategy']}" for a in autos})) or "-"
            lines.append(f"| {cell} | " + " | ".join(row) + f" | {best or '-'} | {guide}: {_within(means, best, guide)} "
                         f"| {chose}; {_within(means, best, 'auto')} |")
            summary.append((cell, best, _within(means, best, guide), _within(means, best, "auto"),
                            min(means, key=means.get) == "auto" if "auto" in means and len(means) > 1 else False))
        lines += ["", "Convergence of the columns that were doubled (budgets in steps; what the last doubling moved, "
                      "points, mean over seeds; the budget was grown on validation accuracy alone):", ""]
        for cell in pair_cells:
            checked = [f"{c} {text}" for c in columns if c != "auto" and (text := convergence(results, cell, c)[0])
                       and "not doubled" not in text and text != "-"]
            lines.append(f"- {cell}: " + ("; ".join(checked) if checked else "none doubled"))
        lines += ["", "Wall time of one run (s, fit + validate + test, mean over seeds, at the counted budget); auto's "
                      "cost: its run against the run of the strategy it trained (same seed, machine and steps):", "",
                  "| cell | " + " | ".join(columns) + " | auto / the strategy it trained | machines |",
                  "|---|" + "---|" * (len(columns) + 2)]
        for cell in pair_cells:
            walls = [[r["wall_s"] for r in _rows(results, cell, c)] for c in columns]
            ratios = auto_cost_ratios(results, cell)
            ratio = (f"{min(ratios):.2f}x - {max(ratios):.2f}x" if len(ratios) > 1 else f"{ratios[0]:.2f}x") if ratios else "-"
            machines = ", ".join(sorted({_machine(r) for r in results if r["cell"] == cell}))
            lines.append(f"| {cell} | " + " | ".join(f"{statistics.fmean(w):.1f}" if w else "-" for w in walls)
                         + f" | {ratio} | {machines} |")
    auto_ok = sum(1 for s in summary if s[3] == "yes")
    guide_ok = sum(1 for s in summary if s[2].startswith("yes"))
    worst = sum(1 for s in summary if s[4])
    lines += ["", f"auto within 1 point of the best in {auto_ok} of {len(summary)} cells (the worst column in {worst}); "
                  f"the seed's guidance in {guide_ok} of {len(summary)}."]
    lines += leave_one_pair_out(results, columns)
    return "\n".join(lines)


def _machine(row: dict) -> str:
    """The run's machine, spelled one way (older records wrote '1 threads')."""
    return row.get("machine", "?").replace(" 1 threads", " 1 thread")


def auto_cost_ratios(results: list[dict], cell: str) -> list[float]:
    """Per auto run: its wall time over the wall time of the run of the strategy it trained, on the
    same seed, machine and number of steps (scratch chosen by auto trains its own, longer budget)."""
    ratios = []
    for r in [o for o in results if o["cell"] == cell and o["strategy"] == "auto"]:
        trained = _trained_column(r)
        same = [o["wall_s"] for o in results if o["cell"] == cell and o["seed"] == r["seed"]
                and o["strategy"] == trained and _machine(o) == _machine(r) and o["steps"] == r["steps"]]
        if same:
            ratios.append(r["wall_s"] / same[0])
    return ratios


def _trained_column(auto_result: dict) -> str:
    """The table column of the strategy auto trained (partial with its block count)."""
    name, keys = auto_result["auto"]["strategy"], auto_result["auto"]["keys"]
    if name == "partial":
        return f"partial-{keys.get('n_blocks', 1)}"
    return name


# -- the prior's thresholds, set on some pairs and judged on others ----------------------------------
SHIFT_GRID = (0.02, 0.05, 0.1, 0.2, 0.4)
PROBE_GRID = (0.3, 0.45, 0.6, 0.75, 0.9)
LARGE_GRID = (15, 25, 50)


def prior_column(measured: dict, shift_threshold: float, probe_threshold: float, large_from: int) -> str:
    """The column the guidance table's prior would train with these thresholds, from what auto measured
    in a cell (shipped cells: similar_small classifier_only, similar_large partial, different_* full)."""
    from experiments.finetune.auto import Auto
    from experiments.finetune.decide import Measurements, decide

    auto = Auto(shift_threshold=shift_threshold, probe_threshold=probe_threshold, large_from=large_from)
    shifts = tuple(measured["block_shift"])
    m = Measurements(num_classes=measured.get("num_classes", 10), samples_per_class=measured["samples_per_class"],
                     blocks=tuple(map(str, range(len(shifts)))),
                     block_shift=shifts, overall_shift=measured["shift"], probe_acc=measured["probe_acc"])
    advice = decide(m, auto, max_epochs=10)
    return f"partial-{advice.keys['n_blocks']}" if advice.strategy == "partial" else advice.strategy


def leave_one_pair_out(results: list[dict], columns: list[str]) -> list[str]:
    """Thresholds chosen on the other pairs (most cells whose prior is within 1 point of the best),
    scored on the held-out pair, beside the shipped thresholds' in-sample figure."""
    cells = {}
    for r in results:
        if r["strategy"] == "auto" and "block_shift" in r.get("auto", {}):
            cells.setdefault(r["cell"], (r["pair"], r["auto"]))
    pairs = sorted({pair for pair, _ in cells.values()})
    if len(pairs) < 2:
        return ["", "Leave-one-pair-out: needs auto's measurements on at least two pairs "
                    f"({', '.join(pairs) or 'none'} measured)."]

    def hits(grid_point, on_pairs) -> int:
        n = 0
        for cell, (pair, measured) in cells.items():
            if pair in on_pairs:
                means = cell_means(results, cell, [c for c in columns if c != "auto"])
                chosen = prior_column(measured, *grid_point)
                n += chosen in means and 100 * (max(means.values()) - means[chosen]) <= 1
        return n

    grid = [(s, p, n) for s in SHIFT_GRID for p in PROBE_GRID for n in LARGE_GRID]
    shipped = (0.05, 0.6, 25)
    lines = ["", "The prior's thresholds (shift, probe, large_from) set on the other pairs and scored on the held-out "
                 "one (cells whose prior is within 1 point of the best column; ties keep the grid point nearest the "
                 "shipped 0.05 / 0.6 / 25):", "",
             "| held-out pair | thresholds set on the others | prior within 1 point (held out) | shipped thresholds (in sample) |",
             "|---|---|---|---|"]
    for held in pairs:
        others = [p for p in pairs if p != held]
        best = max(grid, key=lambda g: (hits(g, others), -abs(g[0] - shipped[0]) - abs(g[1] - shipped[1])))
        total = sum(1 for pair, _ in cells.values() if pair == held)
        lines.append(f"| {held} | {best[0]} / {best[1]} / {best[2]} | {hits(best, [held])} of {total} | "
                     f"{hits(shipped, [held])} of {total} |")
    return lines


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
    parser.add_argument("--doublings", type=int, default=2,
                        help="the convergence check: at most this many doublings of a column's budget")
    parser.add_argument("--converge-margin", type=float, default=0.03,
                        help="columns this far (validation accuracy) under the cell's best are not doubled (scratch always is)")
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

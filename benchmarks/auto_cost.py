"""What ``finetune=auto`` costs against the strategy it trains, measured side by side.

For each cell of ``benchmarks/transfer_table.py`` (same pairs, data and budgets) and seed: one
``finetune=auto`` run, then, right after it in the same process, a run of the strategy it chose
with the same keys and steps (scratch: its own, doubled budget), then both again in the other
order; the ratio of the two runs' wall times, the median of the repeats. A warm-up run of the
cell comes first (imports, data loading), so both pay the same model build; auto adds its
measuring and its race.

    python benchmarks/auto_cost.py --pairs digits --sizes small --seeds 0 1 2 --weights W --out outputs/auto_cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from transfer_table import PAIRS, Cell, _trained_column, run_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["digits"], choices=list(PAIRS))
    parser.add_argument("--targets", nargs="+", default=None)
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=["small", "large"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps-small", type=int, default=400)
    parser.add_argument("--steps-large", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="auto/strategy pairs per seed, alternating the order")
    parser.add_argument("--weights", type=Path, default=None, help="the digits pair's pretrained checkpoint")
    parser.add_argument("--out", type=Path, default=Path("outputs/auto_cost"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| cell | seed | auto trained | auto (s) | the strategy alone (s) | ratio (median of repeats) |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp, (args.out / "runs.jsonl").open("a") as log:
        for pair in args.pairs:
            for target in PAIRS[pair].targets:
                if args.targets and target not in args.targets:
                    continue
                for size in args.sizes:
                    cell = Cell(pair, target, size)
                    steps = args.steps_small if size == "small" else args.steps_large
                    # warm-up, not measured: the process's first run of a cell pays its imports and data loading
                    run_one(cell, "classifier_only", args.seeds[0], steps, Path(tmp) / "warm", args.overrides, args.weights)
                    for seed in args.seeds:
                        ratios, autos, alones, trained = [], [], [], "?"
                        for repeat in range(args.repeats):
                            def auto_run():
                                return run_one(cell, "auto", seed, steps, Path(tmp) / f"a{repeat}", args.overrides, args.weights)

                            def alone_run(column):
                                budget = 2 * steps if column == "scratch" else steps  # auto's scratch: steps_mult 2
                                return run_one(cell, column, seed, budget, Path(tmp) / f"s{repeat}", args.overrides, args.weights)

                            if repeat % 2 == 0:
                                auto = auto_run()
                                trained = _trained_column(auto)
                                alone = alone_run(trained)
                            else:
                                alone = alone_run(trained)
                                auto = auto_run()
                            for row in (auto, alone):
                                log.write(json.dumps(row) + "\n")
                            autos.append(auto["wall_s"])
                            alones.append(alone["wall_s"])
                            ratios.append(auto["wall_s"] / alone["wall_s"])
                            print(f"{cell.name} seed {seed}: auto -> {trained} {auto['wall_s']:.1f}s, alone "
                                  f"{alone['wall_s']:.1f}s: {ratios[-1]:.2f}x", flush=True)
                        lines.append(f"| {cell.name} | {seed} | {trained} | {statistics.median(autos):.1f} | "
                                     f"{statistics.median(alones):.1f} | {statistics.median(ratios):.2f}x |")
    text = "\n".join(lines)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

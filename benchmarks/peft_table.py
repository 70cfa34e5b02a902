"""Parameter-efficient fine-tuning against the classic strategies, on the pretrained models we ship.

    python benchmarks/peft_table.py [--cells NAME ...] [--strategies NAME ...] [--seeds 0 1]
        [--out DIR] [--decay-seeds 0 1 2]

Every run is ``python run.py ...`` in a subprocess (the command a user types), so its peak memory
is its own: the resident set size of the process, polled every 0.1 s. For each cell (a pretrained
model on a target), strategy and seed the table reports test accuracy, the optimizer steps, the
trainable parameters (% of the model), the checkpoint's size (``last.ckpt``, without the frozen
base written once per run, and that frozen file), seconds per optimizer step (fit only: the run's
wall time less its evaluation is not separable from outside, so the whole command's wall time over
its steps is given as an upper bound) and peak memory. The LoRA rows also export merged to ONNX
(``mode=export``): parity with the adapted model and the file's size against the full run's export.

``--decay-seeds`` runs the README's default command (``python run.py``) with and without weight
decay on 1-D parameters (``module.no_decay_1d``), seeds side by side.

Cells (every image cell at 64 px, EfficientNet-Lite0's ImageNet weights from the installed
package; the text cells MiniLM from its package):

* ``lite0:digits_m-small``: digits over photo patches, 10 labels per class, 400 steps;
* ``lite0:digits_m-large``: 1000 labels per class, 1000 steps;
* ``minilm:bbc_news-small``: BBC News topics, 10 labels per class, 200 steps;
* ``minilm:bbc_news-large``: every training article, 600 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMAGE = ["model=efficientnet_lite0", "model.pretrained=true", "data=digits_m", "data.image_size=64",
         "data.eval_batch_size=256"]
TEXT = ["model=hf_text", "data=bbc_news"]
CELLS: dict[str, list[str]] = {
    "lite0:digits_m-small": [*IMAGE, "data.samples_per_class=10", "train_steps=400"],
    "lite0:digits_m-large": [*IMAGE, "data.samples_per_class=1000", "train_steps=1000"],
    "minilm:bbc_news-small": [*TEXT, "data.samples_per_class=10", "train_steps=200"],
    "minilm:bbc_news-large": [*TEXT, "train_steps=600"],
}
#: each strategy's overrides; LoRA at two ranks
STRATEGIES: dict[str, list[str]] = {
    "classifier_only": ["finetune=classifier_only"],
    "lp_ft": ["finetune=lp_ft", "finetune.probe_epochs=null"],
    "full": ["finetune=full"],
    "lora-r4": ["finetune=lora", "finetune.rank=4", "finetune.alpha=8"],
    "lora-r16": ["finetune=lora", "finetune.rank=16", "finetune.alpha=32"],
    "bitfit": ["finetune=bitfit"],
    "norm": ["finetune=norm"],
}
QUIET = ["logger=none", "callbacks.test_figures=null", "callbacks.progress_bar=null", "callbacks.model_summary=null",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def run_command(overrides: list[str], run_dir: Path) -> dict:
    """``python run.py overrides`` into ``run_dir``; its record, wall time and peak RSS (MB)."""
    import psutil

    command = [sys.executable, str(ROOT / "run.py"), *overrides, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def poll() -> None:
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                peak[0] = max(peak[0], watched.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    output = process.communicate()[0]
    watcher.join(timeout=1)
    wall = time.perf_counter() - start
    record_file = run_dir / "results.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {"status": "failed", "error": output[-2000:]}
    return {"record": record, "wall_s": wall, "peak_rss_mb": peak[0] / 2**20}


def sizes(run_dir: Path) -> dict:
    """``last.ckpt`` (MB) and the frozen base beside it (MB, 0 when none)."""
    folder = run_dir / "checkpoints"
    last = folder / "last.ckpt"
    frozen = sum(p.stat().st_size for p in folder.glob("frozen-*.safetensors"))
    return {"ckpt_mb": last.stat().st_size / 2**20 if last.is_file() else None, "frozen_mb": frozen / 2**20}


def run_cell(cell: str, strategy: str, seed: int, out: Path) -> dict:
    run_dir = out / "runs" / f"{cell.replace(':', '_')}-{strategy}-{seed}"
    done = run_command([*CELLS[cell], *STRATEGIES[strategy], f"seed={seed}", *QUIET, "overwrite=true"], run_dir)
    record = done["record"]
    row = {"cell": cell, "strategy": strategy, "seed": seed, "status": record.get("status"),
           "wall_s": round(done["wall_s"], 1), "peak_rss_mb": round(done["peak_rss_mb"])}
    if record.get("status") != "ok":
        row["error"] = record.get("error", "")[:500]
        return row
    params = record["params"]
    row.update(test_acc=record["metrics"]["test/acc"], steps=record["global_step"],
               trainable=params["trainable"], total=params["total"],
               trainable_pct=100 * params["trainable"] / params["total"],
               s_per_step=done["wall_s"] / max(1, record["global_step"]), **sizes(run_dir))
    if strategy.startswith("lora") or strategy == "full":
        exported = run_command([*CELLS[cell], *STRATEGIES[strategy], *QUIET, "mode=export",
                                f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], run_dir.with_name(run_dir.name + "-export"))
        export = exported["record"].get("export") or {}
        row.update(export_mb=Path(export["path"]).stat().st_size / 2**20 if export.get("path") else None,
                   export_difference=export.get("max_logit_difference"), merged_adapters=export.get("merged_adapters"),
                   export_error=None if export else exported["record"].get("error", "")[:300])
    return row


def decay_rows(seeds: list[int], out: Path) -> list[dict]:
    rows = []
    for seed in seeds:
        for rule in ("true", "false"):
            done = run_command([f"seed={seed}", f"module.no_decay_1d={rule}", *QUIET, "overwrite=true"],
                               out / "runs" / f"decay-{rule}-{seed}")
            rows.append({"no_decay_1d": rule, "seed": seed, "test_acc": done["record"].get("metrics", {}).get("test/acc"),
                         "val_acc": done["record"].get("metrics", {}).get("val/acc")})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def mean_std(values: list[float], scale: float = 100.0) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{statistics.fmean(values) * scale:.1f} +- {std:.1f}"


def table(rows: list[dict]) -> str:
    lines = ["| cell | strategy | test acc % (seeds) | steps | trainable (% of model) | last.ckpt MB (+ frozen base once) "
             "| s / step (whole command) | peak RSS MB | merged ONNX MB (max logit diff) |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["cell"], r["strategy"]) for r in rows))
    for cell, strategy in keys:
        own = [r for r in rows if (r["cell"], r["strategy"]) == (cell, strategy)]
        ok = [r for r in own if r["status"] == "ok"]
        if not ok:
            lines.append(f"| {cell} | {strategy} | failed: {own[0].get('error', '')[:80]} | | | | | | |")
            continue
        first = ok[0]
        ckpt = f"{statistics.fmean(r['ckpt_mb'] for r in ok):.1f} (+ {first['frozen_mb']:.1f})"
        export = (f"{first['export_mb']:.1f} ({first['export_difference']:.1g})" if first.get("export_mb") else
                  ("-" if "export_mb" not in first else f"failed: {first.get('export_error')}"))
        lines.append(f"| {cell} | {strategy} | {mean_std([r['test_acc'] for r in ok])} ({len(ok)}) | {first['steps']} | "
                     f"{first['trainable']:,} ({first['trainable_pct']:.2f} %) | {ckpt} | "
                     f"{statistics.fmean(r['s_per_step'] for r in ok):.3f} | {max(r['peak_rss_mb'] for r in ok):,} | {export} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lite0:digits_m-small"], choices=list(CELLS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--decay-seeds", nargs="*", type=int, default=[])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "peft_table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"
    print(f"machine: {os.cpu_count()} CPUs; torch threads default", flush=True)
    if args.decay_seeds:
        decay = decay_rows(args.decay_seeds, args.out)
        for rule in ("true", "false"):
            print(f"no_decay_1d={rule}: test acc {mean_std([r['test_acc'] for r in decay if r['no_decay_1d'] == rule])} "
                  f"over seeds {args.decay_seeds}", flush=True)
    rows = []
    for cell in args.cells:
        for strategy in args.strategies:
            for seed in args.seeds:
                row = run_cell(cell, strategy, seed, args.out)
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(log, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows), flush=True)


if __name__ == "__main__":
    main()

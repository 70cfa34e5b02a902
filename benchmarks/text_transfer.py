"""Text transfer: TF-IDF + sparse_mlp against MiniLM (frozen probe on cached embeddings, LP-FT).

    python benchmarks/text_transfer.py [--data rotten_tomatoes bbc_news] [--labels 10 100 all]
        [--seeds 0 1 2] [--epochs 20] [--ft-epochs 2] [--methods ...] [--embedding-pass] [--out FILE]
        [overrides ...]

For each data option, labels per class (``data.samples_per_class``; ``all`` keeps every training
text) and seed, three methods by default:

* ``tfidf_sparse_mlp``: ``data.features=tfidf`` rows (fitted on the training texts) into
  ``model=sparse_mlp`` from random init, ``2 * epochs`` epochs at lr 0.01;
* ``minilm_classifier_only``: all-MiniLM-L6-v2 frozen, its mean-pooled embeddings computed once (the
  feature cache), a linear head for ``2 * epochs`` epochs at lr 0.01;
* ``minilm_lp_ft``: the same probe for ``epochs`` epochs (cached), then ``ft_epochs`` epochs of every
  layer at lr 0.01 * 0.003 = 3e-5 (LP-FT);
* ``minilm_full`` (on request): every layer from the first epoch, head at 2e-3, encoder at 4e-5.

``--embedding-pass`` also times one MiniLM pass over every text of each data set (length-sorted
batches of 128, inference mode), the yardstick of the cached classifier_only run's cost. Prints one
JSON line per run and a Markdown table: test accuracy mean +- std over the seeds, mean wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from _common import compose_cfg
from _grid import machine, run_grid, table

from experiments.models.core import create_model


def methods(epochs: int, ft_epochs: int) -> dict[str, list[str]]:
    head = [f"trainer.max_epochs={2 * epochs}", "optimizer.lr=0.01"]
    return {
        "tfidf_sparse_mlp": ["data.features=tfidf", "model=sparse_mlp", "finetune=scratch", *head],
        "minilm_classifier_only": ["model=hf_text", "finetune=classifier_only", *head],
        "minilm_lp_ft": ["model=hf_text", "finetune=lp_ft", f"finetune.probe_epochs={epochs}", f"trainer.max_epochs={epochs + ft_epochs}",
                         "optimizer.lr=0.01", "finetune.backbone_lr_mult=0.003"],
        "minilm_full": ["model=hf_text", "finetune=full", f"trainer.max_epochs={ft_epochs}", "optimizer.lr=0.002",
                        "finetune.backbone_lr_mult=0.02"],
    }


def embedding_pass(data_option: str, batch_size: int = 128) -> dict:
    """Seconds of one MiniLM forward pass over every text of ``data_option`` (sorted by length)."""
    from experiments.datamodules.text import TokenCollate
    from experiments.models import hf_text

    model = create_model(hf_text.build("minilm", num_classes=2), 2).eval()
    data = instantiate(compose_cfg(Path(tempfile.gettempdir()), f"data={data_option}").data)
    data.set_preprocessing(model.preprocessing)
    ids = data._tokenize()
    collate = TokenCollate(data._pad_token_id)
    order = torch.argsort((ids != data._pad_token_id).sum(dim=1), stable=True)
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            batch, _ = collate([(ids[i], 0) for i in order[begin : begin + batch_size].tolist()])
            model.backbone(batch)
    seconds = time.perf_counter() - start
    return {"data": data_option, "texts": len(ids), "seconds": seconds, "texts_per_s": len(ids) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["rotten_tomatoes", "bbc_news"])
    parser.add_argument("--labels", nargs="+", default=["10", "100", "all"], help="training texts per class, or all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20, help="probe / TF-IDF epochs (head-only methods run twice as many)")
    parser.add_argument("--ft-epochs", type=int, default=2, help="epochs that train the whole encoder (lp_ft after its probe; full)")
    parser.add_argument("--methods", nargs="+", default=["tfidf_sparse_mlp", "minilm_classifier_only", "minilm_lp_ft"])
    parser.add_argument("--embedding-pass", action="store_true", help="also time one MiniLM pass over each corpus")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) and the JSON lines here")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. trainer=gpu")
    args = parser.parse_args()
    every = methods(args.epochs, args.ft_epochs)
    unknown = sorted(set(args.methods) - set(every))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(every)}")
    chosen = {k: every[k] for k in args.methods}
    common = ["data.batch_size=32", "data.eval_batch_size=128", *args.overrides]
    log_path = args.out.with_suffix(".jsonl") if args.out else None
    cells = run_grid(args.data, args.labels, chosen, args.seeds, common, log_path)
    lines = [f"Text transfer, {args.epochs} probe epochs ({2 * args.epochs} head-only), {args.ft_epochs} encoder epochs, "
             f"seeds {args.seeds}, {machine()} {' '.join(args.overrides)}", "", table(cells)]
    if args.embedding_pass:
        lines += ["", "| data | texts | one MiniLM embedding pass (s) | texts/s | cached classifier_only, all labels (s) | ratio |",
                  "|---|---|---|---|---|---|"]
        for data in args.data:
            measured = embedding_pass(data)
            runs = [c for c in cells if c.data == data and c.labels == "all" and c.method == "minilm_classifier_only" and c.walls]
            run_s = statistics.fmean(runs[0].walls) if runs else None
            ratio = f"{run_s / measured['seconds']:.2f}x" if run_s else "-"
            lines.append(f"| {data} | {measured['texts']} | {measured['seconds']:.1f} | {measured['texts_per_s']:.0f} | "
                         f"{f'{run_s:.1f}' if run_s else '-'} | {ratio} |")
    print("\n" + "\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

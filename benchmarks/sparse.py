"""Dense vs sparse batches: memory of one batch and time of one training epoch.

The data goes the framework's whole way: an svmlight file -> ``SparseDataModule`` (rows held as
CSR) -> DataLoader with the format's collate -> ``SparseMLP`` (first layer ``torch.sparse.mm``)
-> cross-entropy -> backward -> Adam step. ``dense`` is the baseline that builds every batch as a
full matrix. Prints a Markdown table (the README quotes it).

    python benchmarks/sparse.py                       # 50k features, 1% density, CPU
    python benchmarks/sparse.py --device cuda
    python benchmarks/sparse.py --save data/sparse_demo.svm --samples 2000 --features 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import dump_svmlight_file

from experiments.datamodules.sparse import SparseDataModule, synthetic_sparse_classification
from experiments.models.sparse_mlp import SparseMLP


def batch_bytes(x: torch.Tensor) -> int:
    """Bytes held by a dense, COO, CSR or CSC tensor (values plus index arrays)."""
    if x.layout == torch.strided:
        parts = [x]
    elif x.layout == torch.sparse_coo:
        parts = [x._indices(), x._values()]
    elif x.layout == torch.sparse_csr:
        parts = [x.crow_indices(), x.col_indices(), x.values()]
    else:
        parts = [x.ccol_indices(), x.row_indices(), x.values()]
    return sum(p.numel() * p.element_size() for p in parts)


def run_epoch(datamodule: SparseDataModule, args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SparseMLP(datamodule.num_classes, datamodule.input_shape[0], hidden=[args.hidden], dropout=0.0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = datamodule.train_dataloader()
    first, _ = next(iter(loader))

    start = time.perf_counter()
    for _ in loader:  # the data path alone: read rows, collate
        pass
    load_s = time.perf_counter() - start

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    sync()
    result = {
        "batch_mb": batch_bytes(first) / 2**20,
        "load_s": load_s,
        "epoch_s": time.perf_counter() - start,
        "train_acc": correct / total,
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="rows of the synthetic data set")
    parser.add_argument("--features", type=int, default=50_000, help="input width")
    parser.add_argument("--density", type=float, default=0.01, help="share of non-zero features per row")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128, help="width of the sparse layer's output")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--formats", default="dense,coo,csr,csc")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", type=Path, help="only write the synthetic data as an svmlight file here")
    args = parser.parse_args()

    matrix, labels = synthetic_sparse_classification(args.samples, args.features, args.density, args.classes)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        dump_svmlight_file(matrix, labels, str(args.save))
        print(f"wrote {args.save}: {matrix.shape[0]} rows, {matrix.shape[1]} features, {matrix.nnz} non-zeros")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.svm"
        dump_svmlight_file(matrix, labels, str(path))
        print(
            f"{args.samples} x {args.features} at {100 * args.density:g}% density, batch {args.batch_size}, "
            f"hidden {args.hidden}, {args.workers} workers, {args.device}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads\n"
        )
        header = "| format | one batch (MB) | data only (s/epoch) | train epoch (s) | train acc |"
        print(header + (" peak GPU (MB) |" if args.device.startswith("cuda") else ""))
        print("|---" * (header.count("|") - 1 + args.device.startswith("cuda")) + "|")
        for fmt in args.formats.split(","):
            datamodule = SparseDataModule(
                str(path), n_features=args.features, sparse_format=fmt, batch_size=args.batch_size,
                num_workers=args.workers, val_fraction=0.01, test_fraction=0.01,
                pin_memory=args.device.startswith("cuda"),
            )
            datamodule.setup()
            r = run_epoch(datamodule, args)
            row = f"| {fmt} | {r['batch_mb']:.2f} | {r['load_s']:.2f} | {r['epoch_s']:.2f} | {r['train_acc']:.3f} |"
            print(row + (f" {r['peak_gpu_mb']:.0f} |" if "peak_gpu_mb" in r else ""), flush=True)


if __name__ == "__main__":
    main()

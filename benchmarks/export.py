"""onnxruntime on the CPU against the PyTorch eager model: the default model and resnet18, side by side.

    python benchmarks/export.py [--threads 2] [--repeats 50]

Each model is built as a run builds it (digits data; resnet18 at its ImageNet size, 224, with random init: the weights do not
change the speed), exported with mode=export's ONNX writer, checked for parity, then timed on
the same inputs: latency (one image, median of ``--repeats`` calls) and throughput (a batch of
64, images per second). Both runtimes get the same thread count.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import compose_cfg

from experiments.pipeline.build import build_components
from experiments.export import export_onnx, export_metadata, parity, test_batches

MODELS = {"small_cnn (default)": [], "resnet18": ["model=resnet18", "model.pretrained=false", "data.image_size=224"]}


def median_seconds(call, x: torch.Tensor, repeats: int) -> float:
    for _ in range(3):  # warm-up
        call(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, overrides: list[str], workdir: Path, repeats: int, threads: int) -> dict[str, float]:
    import onnxruntime

    parts = build_components(compose_cfg(workdir / name.split()[0], *overrides))
    model = parts.model.eval()
    batches = test_batches(parts.datamodule, 1)
    example = batches[0][:1]
    path = workdir / f"{name.split()[0]}.onnx"
    export_onnx(model, example, path, export_metadata(parts, path, example), opset=17)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    run_onnx = lambda x: session.run(None, {"input": x.numpy()})[0]  # noqa: E731
    difference = parity(model, lambda x: torch.from_numpy(run_onnx(x)), batches)
    one, many = example, batches[0][:64].repeat(64 // len(batches[0][:64]) + 1, 1, 1, 1)[:64]
    with torch.inference_mode():
        eager = lambda x: model(x)  # noqa: E731
        row = {
            "eager_ms": 1000 * median_seconds(eager, one, repeats),
            "onnx_ms": 1000 * median_seconds(run_onnx, one, repeats),
            "eager_ips": len(many) / median_seconds(eager, many, max(repeats // 5, 5)),
            "onnx_ips": len(many) / median_seconds(run_onnx, many, max(repeats // 5, 5)),
        }
    return {**row, "input": "x".join(str(s) for s in example.shape[1:]), "difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads")
    print("| model | input | eager latency (ms) | onnxruntime latency (ms) | latency ratio | eager (img/s, batch 64) "
          "| onnxruntime (img/s, batch 64) | throughput ratio | max logit diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in MODELS.items():
            r = measure(name, overrides, Path(tmp), args.repeats, args.threads)
            print(f"| {name} | {r['input']} | {r['eager_ms']:.3f} | {r['onnx_ms']:.3f} | {r['eager_ms'] / r['onnx_ms']:.2f}x "
                  f"| {r['eager_ips']:.0f} | {r['onnx_ips']:.0f} | {r['onnx_ips'] / r['eager_ips']:.2f}x | {r['difference']:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()

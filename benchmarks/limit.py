"""How close an epoch comes to its compute: the limit, a plain loop, and the framework, side by side.

    python benchmarks/limit.py [--epochs 6] [--repeats 2] [--workloads default resnet18_32 cached_head da]
        [--accelerator cpu|gpu] [overrides ...]

For each workload, per-epoch medians (the first epoch left out) of
  (a) the compute limit: train + validation passes over batches collated once beforehand and held
      on the device (zero_grad, forward, loss, backward, step; then eval + no_grad);
  (b) a plain PyTorch loop over the framework's own DataLoaders (the same loop, loading included);
  (c) the framework: ``run.py``'s training path with its default callbacks (checkpoints, LR
      monitor, TensorBoard, metrics), minus the progress bar and model summary;
and the ratios c/a and c/b. The ``default`` workload also runs the framework with
``data.batched=false`` (items fetched and preprocessed one at a time, the earlier path); the
``cached_head`` workload (a frozen resnet18 with its features cached) also runs uncached
(``finetune.cache_features=false``). The ``da`` workload is the domain-adaptation preset
(``experiment=da_digits_m``: mean teacher, LeNet-BN, digits -> digits_m, source augmentation on the
device) cut to 20 steps an epoch: its limit puts batches of both domains, collated and augmented
once beforehand, through the method's own step (``AdaptationMethod.training_step``, backward,
optimizer step, the teacher's update) and validates the evaluated network on both domains; its
plain loop does the same over the framework's two training loaders and its device augmentation. Every measurement runs in this one process, alternating the
order between repeats. The last lines read ``<workload>: framework/limit 1.23x, framework/plain 1.05x``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from _common import QUIET, EpochTimer, compose_cfg, median_after_first
from experiments.pipeline.build import build_components, model_from_config
from experiments.datamodules.domain_pair import as_domain_batch
from experiments.pipeline.tasks import train

WORKLOADS: dict[str, list[str]] = {
    "default": [],
    "resnet18_32": ["model=resnet18", "model.pretrained=false", "data.image_size=32", "finetune=scratch"],
    "cached_head": ["model=resnet18", "model.pretrained=false", "data.image_size=32", "finetune=classifier_only"],
    "da": ["experiment=da_digits_m", "trainer.limit_train_batches=20"],
}


def _prepare(cfg, device: torch.device):
    """The framework's data and model, built as a run builds them; the loaders of train and val."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    model = model_from_config(cfg.model, datamodule.num_classes, tuple(datamodule.input_shape)).to(device)
    datamodule.set_preprocessing(model.preprocessing)
    datamodule.setup("fit")
    return model, datamodule.train_dataloader(), datamodule.val_dataloader()


def _epochs(cfg, device: torch.device, net: torch.nn.Module, params, batches: Callable[[int], tuple]) -> list[float]:
    """Seconds of each epoch of the hand-written loop over ``batches(epoch) -> (train, val)``."""
    optimizer = instantiate(cfg.optimizer)(params)
    times = []
    for epoch in range(cfg.trainer.max_epochs):
        start = time.perf_counter()
        train_batches, val_batches = batches(epoch)
        net.train()
        for x, y in train_batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
        net.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad():
            for x, y in val_batches:
                correct += (net(x.to(device)).argmax(1) == y.to(device)).sum()
        correct.item()  # one host sync per epoch, as a logged metric costs
        times.append(time.perf_counter() - start)
    return times


def _head_only(cfg) -> bool:
    return cfg.finetune.name == "classifier_only"


def _features(model, loader, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    model.eval()
    with torch.no_grad():
        return [(model.forward_features(x.to(device)), y.to(device)) for x, y in loader]


def _domain_epochs(cfg, device: torch.device, batches: Callable[[int], tuple]) -> list[float]:
    """Seconds of each epoch of a hand-written domain-adaptation loop over ``batches(epoch, pair) ->
    (train, val)``: train an iterable of DomainBatch, val one of (x, y) batches of both domains."""
    parts = build_components(cfg)
    module, method, model = parts.module.to(device), parts.module.adapt, parts.module.model
    optimizer = instantiate(cfg.optimizer)([p for p in module.parameters() if p.requires_grad])
    total = cfg.trainer.max_epochs * cfg.trainer.limit_train_batches
    times, step = [], 0
    for epoch in range(cfg.trainer.max_epochs):
        start = time.perf_counter()
        train_batches, val_batches = batches(epoch, parts.datamodule)
        module.train()
        method.on_train_epoch_start(model, epoch)
        for batch in train_batches:
            optimizer.zero_grad(set_to_none=True)
            method.training_step(model, batch, step / total, module.classification_loss).loss.backward()
            optimizer.step()
            method.after_optimizer_step(model)
            step += 1
        module.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad():
            for x, y in val_batches:
                correct += (module(x.to(device)).argmax(1) == y.to(device)).sum()
        correct.item()
        times.append(time.perf_counter() - start)
    return times


def _domain_batches(pair, device: torch.device, epoch: int, steps: int):
    """The pair's training batches of ``epoch`` on ``device``, augmented as the framework does."""
    loaders = pair.train_dataloader().iterables
    for loader in loaders.values():
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
    iterators = {name: iter(loader) for name, loader in loaders.items()}
    for _ in range(steps):  # the shorter domain cycles (max_size_cycle), the longer is cut at ``steps``
        batch = {}
        for name, loader in loaders.items():
            try:
                batch[name] = next(iterators[name])
            except StopIteration:
                iterators[name] = iter(loader)
                batch[name] = next(iterators[name])
        moved = {"source": [t.to(device) for t in batch["source"]], "target": batch["target"].to(device)}
        yield as_domain_batch(moved, pair, epoch)


def _domain_val(pair) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for loader in pair.val_dataloader() for batch in loader]


def domain_limit(cfg, device: torch.device) -> list[float]:
    held: dict[str, list] = {}

    def batches(epoch: int, pair):
        if not held:  # collated and augmented once, held on the device
            held["train"] = list(_domain_batches(pair, device, 0, cfg.trainer.limit_train_batches))
            held["val"] = [(x.to(device), y.to(device)) for x, y in _domain_val(pair)]
        return held["train"], held["val"]

    return _domain_epochs(cfg, device, batches)


def domain_plain_loop(cfg, device: torch.device) -> list[float]:
    return _domain_epochs(cfg, device, lambda epoch, pair: (
        _domain_batches(pair, device, epoch, cfg.trainer.limit_train_batches), _domain_val(pair)))


def compute_limit(cfg, device: torch.device) -> list[float]:
    model, train_loader, val_loader = _prepare(cfg, device)
    if _head_only(cfg):  # the head alone over features computed once
        train_set, val_set = _features(model, train_loader, device), _features(model, val_loader, device)
        net = model.head
    else:
        train_set = [(x.to(device), y.to(device)) for x, y in train_loader]
        val_set = [(x.to(device), y.to(device)) for x, y in val_loader]
        net = model
    return _epochs(cfg, device, net, net.parameters(), lambda epoch: (train_set, val_set))


def plain_loop(cfg, device: torch.device) -> list[float]:
    model, train_loader, val_loader = _prepare(cfg, device)

    def loaders(epoch: int):
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        return train_loader, val_loader

    if _head_only(cfg):  # a plain loop has no cache: the frozen backbone runs under no_grad
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        return _epochs(cfg, device, model, model.head.parameters(), loaders)
    return _epochs(cfg, device, model, model.parameters(), loaders)


def framework(cfg) -> list[float]:
    timer = EpochTimer()
    train(cfg, callbacks=[timer])
    return timer.epochs


def measure(name: str, overrides: list[str], args, device: torch.device, tmp: Path) -> dict[str, float]:
    domains = name == "da"
    variants: dict[str, tuple[list[str], Callable]] = {
        "limit": ([], lambda cfg: (domain_limit if domains else compute_limit)(cfg, device)),
        "plain": ([], lambda cfg: (domain_plain_loop if domains else plain_loop)(cfg, device)),
        "framework": ([], framework),
    }
    if name == "default":
        variants["framework, data.batched=false"] = (["data.batched=false"], framework)
    if name == "cached_head":
        variants["framework, uncached"] = (["finetune.cache_features=false"], framework)
    runs: dict[str, list[float]] = {key: [] for key in variants}
    for repeat in range(args.repeats):
        order = list(variants.items()) if repeat % 2 == 0 else list(variants.items())[::-1]
        for key, (extra, fn) in order:
            run_dir = tmp / f"{name}-{len(runs[key])}-{list(variants).index(key)}"
            cfg = compose_cfg(run_dir, f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={args.accelerator}",
                              "trainer.devices=1", "logger=tensorboard", *QUIET, *overrides, *args.overrides, *extra)
            runs[key].append(median_after_first(fn(cfg)))
            print(f"  {name} {key} repeat {repeat}: {runs[key][-1]:.4f} s/epoch", flush=True)
    return {key: statistics.median(values) for key, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("overrides", nargs="*", help="config overrides for every path, e.g. data.batch_size=128")
    args = parser.parse_args()
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    where = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"CPU, {torch.get_num_threads()} threads"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads:
            results[name] = measure(name, WORKLOADS[name], args, device, Path(tmp))
    print(f"\nSeconds per epoch (median of {args.repeats} runs x {args.epochs - 1} epochs), {where} {' '.join(args.overrides)}")
    print("| workload | limit | plain loop | framework | other | framework/limit | framework/plain |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        other = "; ".join(f"{k.removeprefix('framework, ')} {v:.4f} ({v / r['framework']:.2f}x framework)"
                          for k, v in r.items() if k.startswith("framework, "))
        print(f"| {name} | {r['limit']:.4f} | {r['plain']:.4f} | {r['framework']:.4f} | {other or '-'} | "
              f"{r['framework'] / r['limit']:.2f}x | {r['framework'] / r['plain']:.2f}x |")
    print()
    for name, r in results.items():
        print(f"{name}: framework/limit {r['framework'] / r['limit']:.2f}x, framework/plain {r['framework'] / r['plain']:.2f}x")


if __name__ == "__main__":
    main()

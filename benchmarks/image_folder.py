"""Images from disk: the image-folder loader against torchvision's and timm's, and the decoder's rate.

    python benchmarks/image_folder.py [--images 5000] [--workers 2] [--batch-size 64] [--size 224]
        [--repeats 2] [--root DIR] [--streamed] [--only PATH ...] [overrides ...]

Writes ``--images`` photo-sized JPEGs (320x240 to 500x375, quality 90, smooth noise and drawn
shapes, 10 classes) into ``DIR/train/<class>/`` (a temporary folder unless ``--root``; a folder
that already holds them is reused) with a few in ``val/`` and ``test/``, so every loader reads
the same training files. Then, in this one process, alternating the order between repeats, it
times one pass over the training images (workers started, every image decoded, resized to
``--size`` with a random resized crop and a flip, normalised, collated) through

  (a) the framework: ``data=image_folder data.root=DIR`` composed and built as a run builds it,
      with ImageNet weights' preprocessing, and its ``train_dataloader()`` (every epoch decodes
      every file: nothing decoded is kept); ``framework, float first`` is the same loader with
      images made float before the crop, as it was before the uint8 path;
  (b) plain torchvision: ``ImageFolder`` (PIL) + transforms v2 + a DataLoader;
  (c) timm: ``create_dataset`` + ``create_loader`` (its training transform, colour jitter off);
  (d) the decoder alone, the limit: ``torchvision.io.decode_jpeg`` (and PIL, for reference) on the
      file bytes in the same number of workers, nothing else;

and with ``--streamed`` also (e) ``data=shards`` over shards that ``prepare`` writes from the same
folder (a streamed epoch against the image folder). Prints images per wall second and per CPU
second (this process and its joined workers: steadier when other work shares the cores), and
the framework's ratio to each path.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from hydra.utils import instantiate
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset

from _common import compose_cfg
from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.transforms import float_after_geometry
from experiments.models.core import Preprocessing

CLASSES = 10
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_images(root: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs under ``root/train/<class>/`` and 2 per class in ``val/`` and ``test/``; kept when
    ``root/train`` already holds ``n``."""
    if len(list((root / "train").glob("*/*.jpg"))) == n:
        return
    rng = random.Random(seed)
    for split, count in (("train", n), ("val", 2 * CLASSES), ("test", 2 * CLASSES)):
        for i in range(count):
            label = i % CLASSES
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            _photo(rng, label).save(folder / f"{i:05d}.jpg", quality=90)


def _photo(rng: random.Random, label: int) -> Image.Image:
    """A photo-like picture: smooth colour noise (a photo's low frequencies) and shapes (its edges)."""
    w, h = rng.randint(320, 500), rng.randint(240, 375)
    noise = Image.frombytes("RGB", (w // 8, h // 8), rng.randbytes(3 * (w // 8) * (h // 8)))
    image = noise.resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(image)
    for _ in range(6 + label):
        x, y = rng.randint(0, w - 40), rng.randint(0, h - 40)
        box = [x, y, x + rng.randint(20, w // 2), y + rng.randint(20, h // 2)]
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


# -- the loaders ---------------------------------------------------------------------------------
def framework_loader(root: Path, args, run_dir: Path, float_first: bool = False, option: str = "image_folder") -> DataLoader:
    """``data=<option>``'s training loader (``image_folder`` over the images, ``shards`` over shards
    of them); ``float_first``: images converted to float before the crop, as the image-folder
    loader did before it kept the decoder's uint8 through the geometry."""
    crop = "{_target_: torchvision.transforms.v2.RandomResizedCrop, size: %d, antialias: true}" % args.size
    flip = "{_target_: torchvision.transforms.v2.RandomHorizontalFlip}"
    cfg = compose_cfg(run_dir, f"data={option}", f"data.root={root}", f"data.image_size={args.size}",
                      f"data.num_workers={args.workers}", f"data.batch_size={args.batch_size}",
                      f"data.train_transforms=[{crop},{flip}]", *args.overrides)
    datamodule = instantiate(cfg.data)
    # what an ImageNet-pretrained model of the framework asks for (no weights are loaded here)
    datamodule.set_preprocessing(Preprocessing(3, (3, args.size, args.size), MEAN, STD, "bilinear"))
    datamodule.setup("fit")
    if float_first:
        base = ClassificationDataModule.build_transform(datamodule, train=True)
        datamodule.train_set.transform = float_after_geometry(base, geometry_on_integers=False)
    return datamodule.train_dataloader()


def torchvision_loader(root: Path, args) -> DataLoader:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose([
        v2.RandomResizedCrop(args.size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD),
    ])
    return DataLoader(ImageFolder(str(root / "train"), transform=transform), batch_size=args.batch_size,
                      shuffle=True, num_workers=args.workers)


def timm_loader(root: Path, args) -> DataLoader:
    from timm.data import create_dataset, create_loader

    dataset = create_dataset("", root=str(root / "train"), is_training=True)
    return create_loader(dataset, input_size=(3, args.size, args.size), batch_size=args.batch_size,
                         is_training=True, color_jitter=0.0, interpolation="bilinear", mean=MEAN, std=STD,
                         num_workers=args.workers, use_prefetcher=False, persistent_workers=False)


class DecodeOnly(Dataset):
    """Each item decodes one file's bytes and returns nothing of it: the decoder's own rate."""

    def __init__(self, paths: list[Path], decoder: str) -> None:
        self.paths, self.decoder = paths, decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> int:
        if self.decoder == "pil":
            with Image.open(self.paths[index]) as image:
                image.convert("RGB").load()
            return 1
        from torchvision.io import decode_jpeg, read_file

        decode_jpeg(read_file(str(self.paths[index])))
        return 1


def decoder_loader(root: Path, args, decoder: str) -> DataLoader:
    paths = sorted((root / "train").glob("*/*.jpg"))
    return DataLoader(DecodeOnly(paths, decoder), batch_size=args.batch_size, num_workers=args.workers,
                      collate_fn=len)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the loaders' joined workers)."""
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def images_per_second(loader: Iterable) -> tuple[float, float]:
    """Images of one pass over ``loader`` per wall second and per CPU second, workers' start
    included (each epoch pays it). The CPU rate hardly moves when other work shares the cores."""
    start, cpu, count = time.perf_counter(), _cpu_seconds(), 0
    for batch in loader:
        count += batch if isinstance(batch, int) else len(batch[0])
    return count / (time.perf_counter() - start), count / (_cpu_seconds() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="write (or reuse) the images here")
    parser.add_argument("--streamed", action="store_true", help="also data=shards over the same images")
    parser.add_argument("--only", nargs="+", default=None, help="measure only these paths")
    parser.add_argument("overrides", nargs="*", help="config overrides of the framework's path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "images"
        write_images(root, args.images)
        paths: dict[str, Callable[[int], Iterable]] = {
            "framework": lambda r: framework_loader(root, args, Path(tmp) / f"run-{r}"),
            "framework, float first": lambda r: framework_loader(root, args, Path(tmp) / f"run-{r}", True),
            "torchvision": lambda r: torchvision_loader(root, args),
            "timm": lambda r: timm_loader(root, args),
            "decode_jpeg": lambda r: decoder_loader(root, args, "torchvision"),
            "PIL decode": lambda r: decoder_loader(root, args, "pil"),
        }
        if args.streamed:
            from experiments.datamodules.shards import main as shards

            start = time.perf_counter()
            shards(["prepare", "--from", "image_folder", "--root", str(root), "--out", str(Path(tmp) / "shards")])
            print(f"  prepare: {args.images} images into shards in {time.perf_counter() - start:.1f} s", flush=True)
            paths["shards (streamed)"] = lambda r: framework_loader(Path(tmp) / "shards", args, Path(tmp) / f"run-s{r}",
                                                                    option="shards")
        if args.only:
            paths = {k: v for k, v in paths.items() if k in args.only}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for repeat in range(args.repeats):
            order = list(paths) if repeat % 2 == 0 else list(paths)[::-1]
            for name in order:
                runs[name].append(images_per_second(paths[name](repeat)))
                wall, cpu = runs[name][-1]
                print(f"  {name} repeat {repeat}: {wall:.1f} images/s, {cpu:.1f} images per CPU second", flush=True)
    wall = {name: statistics.median(w for w, _ in values) for name, values in runs.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in runs.items()}
    print(f"\nmedian of {args.repeats}: {args.images} JPEGs, {args.workers} workers, batch {args.batch_size}, "
          f"{args.size} px {' '.join(args.overrides)}")
    base = "framework" if "framework" in wall else next(iter(wall))
    print(f"| path | images/s | images per CPU second | {base} / path (wall) | {base} / path (CPU) |")
    print("|---|---|---|---|---|")
    for name in wall:
        print(f"| {name} | {wall[name]:.1f} | {cpu[name]:.1f} | {wall[base] / wall[name]:.2f}x | {cpu[base] / cpu[name]:.2f}x |")
    print("\n" + ", ".join(f"{base}/{name} {wall[base] / wall[name]:.2f}x (CPU {cpu[base] / cpu[name]:.2f}x)"
                            for name in wall if name != base))


if __name__ == "__main__":
    main()

"""One epoch over an image folder: minilearn's `DataLoaders.from_folder` against torch and fastai.

Every variant does the same work per epoch over the same PNG files: open and decode each image
(PIL, greyscale for minilearn and torch-grey), scale it to float32 in [0, 1], batch it (bs 64,
shuffled), with the same number of worker processes; the batch's mean is taken so nothing is left
lazy. Variants:

    torch      torch DataLoader(ImageFolder(train, loader=<PIL greyscale>, transform=v2 to float)),
               shuffle=True, persistent workers  (the reference)
    torch-rgb  the same with ImageFolder's default loader (PIL, converted to RGB: 3 channels)
    minilearn  DataLoaders.from_folder(path).train  (decoded by PIL in torch DataLoader workers,
               fed with minilearn's permutation)
    fastai     ImageDataLoaders.from_folder(path).train  (RGB PILImage, IntToFloatTensor on the batch;
               fastai's training loader drops the last partial batch)

Repetitions run round-robin (each variant once per round, order rotated), after one untimed
warm-up epoch per variant (which also starts persistent workers); the goal is judged on the
paired ratio, the median over rounds of minilearn's time over torch's in the same round.

`--chapter4` also trains fastbook chapter 4's linear model (10 epochs, SGD lr 1.0) and 784-30-1
ReLU net (40 epochs, lr 0.1) from the PNG folders (`from_folder(mnist_sample(), pos_label='3')`,
mnist_loss, batch_accuracy, bs 256), beside the same from `datasets.mnist_3v7()` tensors.

    python benchmarks/image_folder.py                          # mnist_sample's 12396 training PNGs
    python benchmarks/image_folder.py --reps 3 --limit 2000    # a quick look
    python benchmarks/image_folder.py --chapter4               # plus the chapter 4 accuracies
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from minilearn import SGD, DataLoaders, Learner, batch_accuracy, datasets, mnist_loss


def _grey(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("L")


def torch_loader(train: Path, bs: int, workers: int, rgb: bool):
    """torch's DataLoader over torchvision's ImageFolder, as a torch user writes it."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    tfm = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    ds = ImageFolder(str(train), transform=tfm, **({} if rgb else {"loader": _grey}))
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))


def minilearn_loader(path: Path, bs: int, workers: int):
    return DataLoaders.from_folder(path, bs=bs, seed=0, num_workers=workers).train


def fastai_loader(path: Path, bs: int, workers: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastai.vision.data import ImageDataLoaders as FastaiImageDataLoaders

    return FastaiImageDataLoaders.from_folder(path, bs=bs, num_workers=workers, device="cpu").train


def epoch(dl) -> tuple[float, int]:
    """Seconds for one pass over `dl`, and the number of items seen."""
    start, n, total = time.perf_counter(), 0, 0.0
    for b in dl:
        total += float(b[0].mean())
        n += len(b[0])
    return time.perf_counter() - start, n


def sample_subset(src: Path, limit: int, dst: Path) -> Path:
    """A folder of links to the first `limit` training images per class of `src` (a quick run)."""
    for split in ("train", "valid"):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            out = dst / split / cls.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(cls.iterdir())[: limit // 2 if split == "train" else max(1, limit // 10)]:
                if not (out / f.name).exists():
                    os.symlink(f, out / f.name)
    return dst


def time_loaders(path: Path, bs: int, workers: int, reps: int, with_fastai: bool) -> dict[str, list[float]]:
    loaders = {
        "torch": torch_loader(path / "train", bs, workers, rgb=False),
        "torch-rgb": torch_loader(path / "train", bs, workers, rgb=True),
        "minilearn": minilearn_loader(path, bs, workers),
    }
    if with_fastai:
        loaders["fastai"] = fastai_loader(path, bs, workers)
    names = list(loaders)
    for name in names:  # warm-up: imports, page cache, persistent workers
        _, n = epoch(loaders[name])
        print(f"  warm-up {name:10s} {n} items", flush=True)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(epoch(loaders[name])[0])
        print(f"  round {r + 1}: " + "  ".join(f"{k} {times[k][-1]:.3f}s" for k in names), flush=True)
    for dl in loaders.values():
        if hasattr(dl, "close"):
            dl.close()
    return times


def chapter4(bs: int, workers: int) -> list[tuple[str, str, float, float]]:
    """fastbook chapter 4's two models from the PNG folders and from tensors: (model, data, accuracy, seconds)."""
    rows = []
    tx, ty, vx, vy = datasets.mnist_3v7()
    runs = [("linear 784->1, 10 epochs, lr 1.0", lambda: nn.Linear(784, 1), 10, 1.0),
            ("ReLU net 784-30-1, 40 epochs, lr 0.1", lambda: nn.Sequential(nn.Linear(784, 30), nn.ReLU(), nn.Linear(30, 1)), 40, 0.1)]
    for title, make, n_epoch, lr in runs:
        for data in ("PNG folders (from_folder)", "tensors (mnist_3v7)"):
            if data.startswith("PNG"):
                dls = DataLoaders.from_folder(datasets.mnist_sample(), pos_label="3", bs=bs, seed=42, num_workers=workers,
                                              batch_tfms=nn.Flatten())
            else:
                dls = DataLoaders.from_tensors(tx, ty, vx, vy, bs=bs, seed=42)
            torch.manual_seed(42)
            learn = Learner(dls, make(), loss_func=mnist_loss, opt_func=SGD, lr=lr, metrics=batch_accuracy)
            learn.remove_cb(learn.progress)
            learn.logger = lambda *a: None
            start = time.perf_counter()
            learn.fit(n_epoch)
            seconds = time.perf_counter() - start
            acc = learn.recorder.column("batch_accuracy")[-1]
            print(f"  {title} from {data}: accuracy {acc:.6f} ({seconds:.1f} s)", flush=True)
            rows.append((title, data, acc, seconds))
            if hasattr(dls, "close"):
                dls.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=None, help="an image folder with train/ and valid/ (default: mnist_sample())")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images (symlinks in /tmp)")
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to time (0 2)")
    parser.add_argument("--reps", type=int, default=7, help="timed rounds per worker count (7)")
    parser.add_argument("--no-fastai", action="store_true", help="leave fastai out")
    parser.add_argument("--chapter4", action="store_true", help="also train chapter 4's models from the PNG folders")
    parser.add_argument("--out", default=str(Path(__file__).with_name("image_folder_results.md")))
    args = parser.parse_args(argv)

    path = Path(args.path) if args.path else datasets.mnist_sample()
    if args.limit:
        import tempfile

        path = sample_subset(path, args.limit, Path(tempfile.gettempdir()) / f"minilearn-bench-{args.limit}")
    load_before = os.getloadavg()
    lines = [
        "# One epoch over an image folder: minilearn vs torch vs fastai",
        "",
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}; "
        f"folder {path} ({sum(1 for _ in (path / 'train').rglob('*.png'))} training PNGs), bs {args.bs}, "
        f"{args.reps} rounds; load average before {load_before[0]:.2f}",
        "",
        "Seconds per epoch (median, min-max) and the paired ratio to `torch` (median over rounds of the "
        "variant's time over torch's in the same round).",
        "",
        "| workers | variant | median s | min-max s | paired ratio to torch |",
        "|---|---|---|---|---|",
    ]
    goals = []
    for workers in args.workers:
        print(f"workers={workers}", flush=True)
        times = time_loaders(path, args.bs, workers, args.reps, not args.no_fastai)
        for name, ts in times.items():
            ratio = statistics.median(t / r for t, r in zip(ts, times["torch"]))
            lines.append(f"| {workers} | {name} | {statistics.median(ts):.3f} | {min(ts):.3f}-{max(ts):.3f} | {ratio:.3f} |")
            if name == "minilearn":
                goals.append((workers, ratio))
    lines += ["", "Goal: minilearn <= 1.05x torch (paired ratio)."]
    for workers, ratio in goals:
        lines.append(f"- workers {workers}: {ratio:.3f}x — {'PASS' if ratio <= 1.05 else 'MISS'}")
    if args.chapter4:
        rows = chapter4(256, 2)
        lines += ["", "## fastbook chapter 4 from the PNG folders", "",
                  "`from_folder(mnist_sample(), pos_label='3', batch_tfms=nn.Flatten(), bs=256, seed=42, num_workers=2)`, "
                  "mnist_loss, batch_accuracy, minilearn SGD, `torch.manual_seed(42)` before the model; the book's figures "
                  "are ~0.96 (linear) and ~0.98 (ReLU net). The tensors rows are the same recipe on `mnist_3v7()` "
                  "(the same images; another item order, so other batches).", "",
                  "| model | data | valid accuracy | fit seconds |", "|---|---|---|---|"]
        lines += [f"| {t} | {d} | {a:.6f} | {s:.1f} |" for t, d, a, s in rows]
    lines += ["", f"Load average after: {os.getloadavg()[0]:.2f}", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Data from folders and files: image folders, CSV labels and lists of files, as fastai's
`ImageDataLoaders.from_folder` / `from_csv` / `from_lists`, built on torch and torchvision.

The pieces, in the order data flows through them:
- finding and labelling: `get_image_files` (fastai's image extensions, hidden folders skipped,
  sorted so every machine sees the same order), `parent_label`, the splitters
  (`RandomSplitter`, `GrandparentSplitter`, `IndexSplitter`: called on the list of items, they
  return `(train_idx, valid_idx)` as in fastai);
- checking, before any batch: every file is opened with PIL (the header, plus `verify`, which
  for a PNG checks every chunk and so finds a truncated file) — a bad file is an error naming
  it, or skipped and listed in `dls.skipped` with `skip_bad=True`; images of different sizes
  that the item transforms do not bring to one size are an error naming two of them;
- an item (`ImageFileDataset`): decoded by PIL (torchvision 0.29 deprecates `torchvision.io`'s
  decoders) as uint8 (C, H, W), one channel when every file is greyscale and three otherwise, then
  the item transforms (`Resize`, torchvision v2 transforms, any tensor -> tensor callable), then
  scaled to float32 in [0, 1] exactly as `datasets.mnist` scales (`x.float() / 255`);
- batching (`FileDataLoader`): minilearn's `DataLoader` over the dataset, so the order, `bs`,
  `n`, `generator`, `epoch_order()` / `fetch()` and `new()` are the tensors loader's; items are
  decoded in torch `DataLoader` worker processes (persistent, `pin_memory` on CUDA only) fed
  with runs of minilearn's own permutation, so the batches are those of a minilearn loader with
  the same seed, every item once per epoch;
- batch transforms (`Normalize`, `Flip`, `Affine`, `aug_transforms`, any callable) run on the
  images after the batch is on its device. A transform with `split_idx = 0` runs on the
  training set only, `1` on the validation set only (fastai's rule): the augmentations here are
  training-only; set `t.split_idx = 0` on a torchvision random transform to make it so.
- looking: `show_batch(dls)` and `show_results(learn)` draw a grid with the vocab's names.

Targets are int64 class indices into `dls.vocab` (sorted as fastai's `CategoryMap` sorts), or,
with `pos_label=`, fastbook chapter 4's binary float targets of shape (N, 1) (1.0 for
`pos_label`), which `mnist_loss` and `BCEWithLogitsLossFlat` take as they are.
"""

from __future__ import annotations

import math
import mimetypes
import multiprocessing
import os
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset, default_collate

from minilearn.checks import as_list, check_bool, check_callable, check_device, check_int, check_number
from minilearn.data import DataLoader, DataLoaders, _as_tuple
from minilearn.torch_basics import _move, to_device

__all__ = [
    "IMAGE_EXTENSIONS", "get_image_files", "parent_label", "RandomSplitter", "GrandparentSplitter", "IndexSplitter",
    "Resize", "Normalize", "Flip", "Affine", "aug_transforms", "imagenet_stats", "mnist_stats", "ImageFileError",
    "ImageFileDataset", "FileDataLoader", "ImageDataLoaders", "from_folder", "from_csv", "from_lists", "test_dl",
    "show_batch", "show_results", "default_num_workers", "load_image",
]

# fastai's set: every extension the system's mimetypes call an image, bar SVG (a drawing, not pixels)
IMAGE_EXTENSIONS = frozenset(k for k, v in mimetypes.types_map.items() if v.startswith("image/") and k != ".svg")
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

imagenet_stats = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# fastai's MNIST statistics, for one channel (fastai repeats them for the three channels of its RGB images)
mnist_stats = ([0.131], [0.308])


class ImageFileError(ValueError):
    """An image file that cannot be read; the message names the file."""


# ---------------------------------------------------------------- finding and labelling files

def _check_path(name: str, path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a str or a path, got {type(path).__name__}")
    return Path(path).expanduser()


def get_image_files(path: str | os.PathLike, recurse: bool = True, folders: Sequence[str] | None = None) -> list[Path]:
    """The image files under `path` (in `folders` of it only, when given), sorted: fastai's
    `get_image_files`, skipping hidden files and folders; sorted so the order is the same everywhere."""
    path = _check_path("path", path)
    check_bool("recurse", recurse)
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} is not a folder")
    roots = [path / f for f in folders] if folders is not None else [path]
    out: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # fastai follows links too
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if not recurse:
                dirnames[:] = []
            out += [Path(dirpath) / f for f in sorted(filenames)
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return out


def parent_label(o: str | os.PathLike) -> str:
    """The name of the folder holding `o`: fastai's label for an image folder layout."""
    return Path(o).parent.name


# ---------------------------------------------------------------- splitters

class RandomSplitter:
    """Split items at random, `valid_pct` of them (rounded down) to validation, as fastai's.

    A seed draws from its own generator, so the split is fastai's for the same seed (fastai
    seeds torch's global RNG with it) without touching the global RNG; without one, the split
    draws from the global RNG."""

    def __init__(self, valid_pct: float = 0.2, seed: int | None = None) -> None:
        self.valid_pct = check_number("valid_pct", valid_pct, 0, 1)
        self.seed = None if seed is None else check_int("seed", seed)

    def __call__(self, items: Sequence) -> tuple[list[int], list[int]]:
        """`(train_idx, valid_idx)` for `items`."""
        g = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        idx = torch.randperm(len(items), generator=g).tolist()
        cut = int(self.valid_pct * len(items))
        return idx[cut:], idx[:cut]


class GrandparentSplitter:
    """Split file paths by their grandparent folder's name (`train/<label>/x.png`), as fastai's:
    items under neither name are in neither set."""

    def __init__(self, train_name: str | Sequence[str] = "train", valid_name: str | Sequence[str] = "valid") -> None:
        self.train_name, self.valid_name = train_name, valid_name

    def __call__(self, items: Sequence) -> tuple[list[int], list[int]]:
        """`(train_idx, valid_idx)` for the paths `items`."""
        def names(n) -> set:
            return {n} if isinstance(n, str) else set(n)

        train, valid = names(self.train_name), names(self.valid_name)
        grand = [Path(o).parent.parent.name for o in items]
        return [i for i, g in enumerate(grand) if g in train], [i for i, g in enumerate(grand) if g in valid]


class IndexSplitter:
    """Split items by index: those at `valid_idx` to validation, the rest to training (fastai's)."""

    def __init__(self, valid_idx: Sequence[int]) -> None:
        self.valid_idx = [check_int("valid_idx", int(i) if isinstance(i, Tensor) else i, 0) for i in valid_idx]

    def __call__(self, items: Sequence) -> tuple[list[int], list[int]]:
        """`(train_idx, valid_idx)` for `items`."""
        bad = [i for i in self.valid_idx if i >= len(items)]
        if bad:
            raise IndexError(f"valid_idx: index {bad[0]} is out of range for {len(items)} items")
        valid = set(self.valid_idx)
        return [i for i in range(len(items)) if i not in valid], list(dict.fromkeys(self.valid_idx))  # each once


def _split(splitter: Callable, items: list) -> tuple[list[int], list[int]]:
    """Run `splitter` on `items` and check what it returns: two lists of distinct, in-range indices."""
    out = splitter(items)
    try:
        train_idx, valid_idx = out
        train_idx = [int(i) for i in train_idx]
        valid_idx = [int(i) for i in valid_idx]
    except (TypeError, ValueError):
        raise TypeError(f"splitter: expected it to return (train_idx, valid_idx), two lists of ints, got {out!r:.80}") from None
    for i in train_idx + valid_idx:
        if not 0 <= i < len(items):
            raise IndexError(f"splitter: returned index {i}, out of range for {len(items)} items")
    both = set(train_idx) & set(valid_idx)
    if both:
        raise ValueError(f"splitter: {len(both)} items are in both train and valid, e.g. {items[min(both)]}")
    return train_idx, valid_idx


# ---------------------------------------------------------------- transforms

def _applies(tfm: Any, split: int) -> bool:
    """fastai's rule: a transform runs on every split unless its `split_idx` names one."""
    s = getattr(tfm, "split_idx", None)
    return s is None or s == split


class Resize:
    """Item transform: resize a (C, H, W) image to `size` (an int for a square, or (h, w)).

    `method`: 'crop' (fastai's default) scales the shorter side to fit and cuts the centre;
    'squish' scales each side to size; 'pad' scales the longer side to fit and pads with zeros.
    Unlike fastai, 'crop' cuts the centre in training too (fastai cuts at random there)."""

    split_idx = None

    def __init__(self, size: int | tuple[int, int], method: str = "crop") -> None:
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        try:
            h, w = (check_int("size", s, 1) for s in size)
        except (TypeError, ValueError) as e:
            if "size:" in str(e) and isinstance(e, ValueError):
                raise
            raise TypeError(f"size: expected an int or (height, width), got {size!r}") from None
        if method not in ("crop", "squish", "pad"):
            raise ValueError(f"method: expected 'crop', 'squish' or 'pad', got {method!r}")
        self.size, self.method = (h, w), method

    def __call__(self, x: Tensor) -> Tensor:
        from torchvision.transforms.v2 import functional as TF

        h, w = self.size
        H, W = x.shape[-2:]
        if self.method == "squish":
            return TF.resize(x, [h, w], antialias=True)
        scale = max(h / H, w / W) if self.method == "crop" else min(h / H, w / W)
        nh, nw = max(1, round(H * scale)), max(1, round(W * scale))
        x = TF.resize(x, [nh, nw], antialias=True) if (nh, nw) != (H, W) else x
        if self.method == "crop":
            return TF.center_crop(x, [h, w])
        top, left = (h - nh) // 2, (w - nw) // 2
        return TF.pad(x, [left, top, w - nw - left, h - nh - top])

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, method={self.method!r})"


class Normalize:
    """Batch transform: `(x - mean) / std` per channel, on the batch's device; `decode` undoes it.

    `mean` and `std` are numbers or one per channel (fastai's `Normalize.from_stats(*imagenet_stats)`);
    unlike fastai, the statistics must be given (fastai can take them from a batch)."""

    split_idx = None
    order = 99  # fastai's: normalising comes after the other batch transforms

    def __init__(self, mean: float | Sequence[float] | Tensor, std: float | Sequence[float] | Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).flatten().clone()
        self.std = torch.as_tensor(std, dtype=torch.float32).flatten().clone()
        if self.mean.numel() == 0 or self.mean.shape != self.std.shape:
            raise ValueError(f"mean, std: expected as many of one as of the other (one per channel), got "
                             f"{self.mean.numel()} and {self.std.numel()}")
        if not bool((self.std > 0).all()):
            raise ValueError(f"std: expected positive numbers, got {self.std.tolist()}")
        self._on: dict = {}  # device -> (mean, std) on it, so no batch copies the statistics

    @classmethod
    def from_stats(cls, mean: float | Sequence[float] | Tensor, std: float | Sequence[float] | Tensor) -> "Normalize":
        """fastai's constructor from per-channel statistics, e.g. `Normalize.from_stats(*imagenet_stats)`."""
        return cls(mean, std)

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = self.mean.numel()
        if n > 1 and (x.dim() < 2 or x.shape[1] != n):
            raise ValueError(f"Normalize: {n} channel statistics for a batch of shape {tuple(x.shape)} "
                             f"(its dim 1 should be the {n} channels)")
        key = (x.device, x.dtype, x.dim())
        if key not in self._on:
            shape = (1, n) + (1,) * (x.dim() - 2) if n > 1 else ()
            self._on[key] = (self.mean.to(x.device, x.dtype).view(shape), self.std.to(x.device, x.dtype).view(shape))
        return self._on[key]

    def __call__(self, x: Tensor) -> Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def decode(self, x: Tensor) -> Tensor:
        """Undo the normalisation (to show images)."""
        mean, std = self._stats(x)
        return x * std + mean

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Flip:
    """Batch augmentation: flip each image left-right with probability `p`, training set only."""

    split_idx = 0

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_number("p", p, 0, 1)

    def __call__(self, x: Tensor) -> Tensor:
        flip = torch.rand(len(x), device=x.device) < self.p
        return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)

    def __repr__(self) -> str:
        return f"Flip(p={self.p})"


class Affine:
    """Batch augmentation: with probability `p` per image, a rotation by up to `max_rotate`
    degrees and a zoom in [`min_zoom`, `max_zoom`], reflection-padded (fastai's defaults);
    training set only. One `grid_sample` call for the batch, on its device."""

    split_idx = 0

    def __init__(self, max_rotate: float = 10.0, min_zoom: float = 1.0, max_zoom: float = 1.1, p: float = 0.75) -> None:
        self.max_rotate = check_number("max_rotate", max_rotate, 0)
        self.min_zoom = check_number("min_zoom", min_zoom, 0, low_open=True)
        self.max_zoom = check_number("max_zoom", max_zoom, self.min_zoom)
        self.p = check_number("p", p, 0, 1)

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"Affine: expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
        n, dev = len(x), x.device
        on = (torch.rand(n, device=dev) < self.p).float()
        angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(self.max_rotate) * on
        zoom = 1 + (self.min_zoom + torch.rand(n, device=dev) * (self.max_zoom - self.min_zoom) - 1) * on
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def __repr__(self) -> str:
        return f"Affine(max_rotate={self.max_rotate}, min_zoom={self.min_zoom}, max_zoom={self.max_zoom}, p={self.p})"


def aug_transforms(do_flip: bool = True, max_rotate: float = 10.0, min_zoom: float = 1.0, max_zoom: float = 1.1,
                   p_affine: float = 0.75) -> list:
    """fastai's light training augmentations as batch transforms: a flip, a rotation and a zoom
    (fastai's warp and lighting changes are left out)."""
    check_bool("do_flip", do_flip)
    return ([Flip()] if do_flip else []) + [Affine(max_rotate, min_zoom, max_zoom, p_affine)]


def _check_tfms(name: str, tfms: Any) -> list:
    """`tfms` (None, one callable, or a list of them) as a list, each checked callable."""
    tfms = [tfms] if callable(tfms) else as_list(tfms)
    for i, t in enumerate(tfms):
        check_callable(f"{name}[{i}]", t, "a transform (a callable taking a tensor)")
    return tfms


# ---------------------------------------------------------------- decoding

def load_image(path: str | os.PathLike, grey: bool = False) -> Tensor:
    """The image in `path` as uint8 (C, H, W): 1 channel when `grey`, else 3 (alpha dropped).

    Decoded by PIL: torchvision 0.29 deprecates its own decoders (`torchvision.io.decode_image`)
    in favour of TorchCodec, and PIL reads every format they did. The pixels are exactly the
    file's (an MNIST PNG gives MNIST's bytes). A file PIL cannot read is an `ImageFileError`
    naming it."""
    import numpy as np
    from PIL import Image

    mode = "L" if grey else "RGB"
    try:
        with Image.open(path) as im:
            if grey and im.mode.startswith("I;16"):  # 16-bit greyscale: kept, scaled by 65535 (not cut to 8 bits)
                arr = np.array(im).astype(np.uint16)
            else:
                arr = np.array(im if im.mode == mode else im.convert(mode))
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(f"{path}: cannot read the image ({e})") from None
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def _to_float(x: Tensor) -> Tensor:
    """An image as float32 in [0, 1]: uint8 divided by 255 (as `datasets.mnist`), uint16 by 65535."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255)
    if x.dtype == torch.uint16:
        return x.to(torch.float32).div_(65535)
    return x if x.is_floating_point() else x.to(torch.float32)


class ImageFileDataset(Dataset):
    """Images in files, decoded on access: item i is `(image, target)`, or `(image,)` without targets.

    The image is `load_image(files[i], grey)`, then each item transform that applies to `split`
    (0 train, 1 valid and test), then float32 in [0, 1]."""

    def __init__(self, files: Sequence[Path], targets: Tensor | None = None, item_tfms: Sequence[Callable] = (),
                 grey: bool = False, split: int = 0, vocab: list | None = None) -> None:
        self.files = [Path(f) for f in files]
        if targets is not None and len(targets) != len(self.files):
            raise ValueError(f"targets: expected one per file ({len(self.files)}), got {len(targets)}")
        self.targets, self.grey, self.split, self.vocab = targets, grey, split, vocab
        self.item_tfms = [t for t in item_tfms if _applies(t, split)]

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> Tensor:
        """Item `i`'s image, transformed, as float32."""
        x = load_image(self.files[i], self.grey)
        for t in self.item_tfms:
            x = t(x)
        return _to_float(x)

    def __getitem__(self, i: int) -> tuple:
        x = self.image(i)
        return (x,) if self.targets is None else (x, self.targets[i])

    def __repr__(self) -> str:
        return f"ImageFileDataset({len(self)} files, grey={self.grey}, targets={self.targets is not None})"


# ---------------------------------------------------------------- the loader

def default_num_workers(n: int) -> int:
    """Worker processes when `num_workers=None`: min(cores, 4), or 0 (decode in this process)
    for fewer than 512 items (starting workers would cost more than it saves) or where the
    default start method is not fork (a spawned worker must pickle the dataset and transforms)."""
    if n < 512 or multiprocessing.get_context().get_start_method() != "fork":
        return 0
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 4)


class _PassBatches:
    """The batch sampler torch's DataLoader is given: each pass, `dl.epoch_order()` cut into runs
    of `bs` (the last shorter, or dropped), as a minilearn loader batches it. It is iterated in
    this process, so the loader's generator (not a worker's) draws the order."""

    def __init__(self, dl: "FileDataLoader") -> None:
        self._dl = weakref.ref(dl)  # no cycle loader -> workers -> sampler -> loader: a dropped loader frees its workers

    def __iter__(self) -> Iterator[list[int]]:
        dl = self._dl()
        first, dl._first = dl._first, 0  # a pass started at a later batch (`batches_from`): this pass only
        order = dl.epoch_order().tolist()
        for i in range(first * dl.bs, dl._stop, dl.bs):
            yield order[i : i + dl.bs]

    def __len__(self) -> int:
        dl = self._dl()
        return len(dl) if dl is not None else 0


class FileDataLoader(DataLoader):
    """minilearn's `DataLoader` over an `ImageFileDataset`, decoding in worker processes and
    running `batch_tfms` on each batch once it is on `device`.

    Order, batches, `bs`, `n`, `generator`, `epoch_order()`, `fetch()`, `one_batch()` are those of
    `DataLoader` (a seed gives the batches a minilearn loader gives; every item once per epoch).
    With `num_workers` > 0, a torch DataLoader with persistent workers decodes the items, fed
    with this loader's permutation (`pin_memory` when the device is CUDA); `close()` stops the
    workers (they stop too when the loader is garbage collected). `fetch()` (used to shard a pass
    across processes) decodes in this process. The workers' own RNG (for random item transforms)
    is seeded from the loader's generator's initial seed, so building or iterating the loader
    never draws from torch's global RNG.
    """

    def __init__(self, dataset: Dataset, bs: int | None = None, shuffle: bool = False, drop_last: bool = False,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, batch_tfms: Any = None, num_workers: int | None = 0,
                 split: int = 0, batch_size: int | None = None, persistent_workers: bool = True) -> None:
        self.batch_tfms_given = _check_tfms("batch_tfms", batch_tfms)
        self.split = check_int("split", split, 0, 1)
        self.batch_tfms = [t for t in self.batch_tfms_given if _applies(t, self.split)]
        super().__init__(dataset, bs=bs, shuffle=shuffle, drop_last=drop_last, seed=seed, generator=generator,
                         device=device, batch_size=batch_size)
        self.num_workers = default_num_workers(self.n) if num_workers is None else check_int("num_workers", num_workers, 0)
        self._torch_dl: TorchDataLoader | None = None
        self._first = 0  # the batch the next pass of the workers starts at
        self._in_pass = False  # a pass of the workers is under way (a second one at once decodes here)
        self.persistent_workers = persistent_workers

    def _after_move(self, b: tuple) -> tuple:
        """Run the batch transforms on the images (a batch's first element), where the batch now is."""
        if not self.batch_tfms:
            return b
        x = b[0]
        for t in self.batch_tfms:
            x = t(x)
        return (x, *b[1:])

    def _batch(self, idx: Any) -> tuple:
        # decoded in this process (num_workers=0, or fetch), then moved, then transformed
        return self._after_move(super()._batch(idx))

    def _workers(self) -> TorchDataLoader:
        """The torch DataLoader whose workers decode the items; rebuilt only when pinning changes."""
        pin = self._move_to is not None and self._move_to.type == "cuda"
        if self._torch_dl is None or self._torch_dl.pin_memory != pin:
            self.close()
            g = torch.Generator().manual_seed(self.generator.initial_seed() + 1)
            self._torch_dl = TorchDataLoader(self.dataset, batch_sampler=_PassBatches(self), num_workers=self.num_workers,
                                             collate_fn=self._collate, pin_memory=pin,
                                             persistent_workers=self.persistent_workers,
                                             generator=g)
        return self._torch_dl

    def __iter__(self) -> Iterator[tuple]:
        """One epoch of batches, every item once unless `drop_last` cuts the remainder."""
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[tuple]:
        """The pass's batches from batch `first` on (see `DataLoader.batches_from`), the workers
        decoding only those."""
        if self.num_workers == 0 or self._in_pass:
            # no workers, or a second pass while one is under way (one_batch() from a callback, zip(dl, dl)):
            # decoded here, so the pass in progress keeps its workers and its order
            yield from super().batches_from(first)
            return
        move, nb = self._move_to, self._non_blocking
        self._first, self._in_pass = first, True
        try:
            for b in self._workers():
                b = _as_tuple(b)
                yield self._after_move(b if move is None else _move(b, move, nb))
        finally:
            self._in_pass = False

    def close(self) -> None:
        """Stop the worker processes now (a later pass starts new ones)."""
        dl, self._torch_dl = getattr(self, "_torch_dl", None), None
        it = getattr(dl, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def new(self, shuffle: bool | None = None, drop_last: bool | None = None, bs: int | None = None) -> "FileDataLoader":
        """A loader over the same files and transforms with the settings given changed (fastai's
        `dl.new`); a shuffled one shares this loader's generator."""
        shuffle = self.shuffle if shuffle is None else check_bool("shuffle", shuffle)
        return FileDataLoader(self.dataset, bs=self.bs if bs is None else bs, shuffle=shuffle,
                              drop_last=self.drop_last if drop_last is None else drop_last,
                              generator=self.generator if shuffle else None, device=self.device,
                              batch_tfms=self.batch_tfms_given, num_workers=self.num_workers, split=self.split,
                              persistent_workers=False)  # made for a pass or two (get_preds): workers end with it

    def raw_batch(self) -> tuple:
        """The first batch of a pass before the batch transforms (to show images): in order, or, for
        a shuffling loader, the first of a fresh epoch's order, its generator left where it was."""
        idx = list(range(min(self.bs, self.n)))
        if self.shuffle:
            state = self.generator.get_state()
            idx = self.epoch_order()[: len(idx)].tolist()
            self.generator.set_state(state)
        return super()._batch(idx)

    def decode(self, x: Tensor) -> Tensor:
        """Undo the batch transforms that can be undone (`Normalize`), last first, to show `x`."""
        for t in reversed(self.batch_tfms):
            if hasattr(t, "decode"):
                x = t.decode(x)
        return x

    def __repr__(self) -> str:
        return (f"FileDataLoader(n={self.n}, bs={self.bs}, shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"num_workers={self.num_workers}, device={self.device})")


# fastai's name for the DataLoaders of images; minilearn's DataLoaders has the same constructors
ImageDataLoaders = DataLoaders


# ---------------------------------------------------------------- checking files up front

def _scan(files: list[Path]) -> tuple[list[tuple[tuple[int, int], str] | None], list[tuple[Path, str]]]:
    """Each file's (size, mode) from its header (None when it is bad) and the bad files with why.

    PIL reads only the header to open a file; `verify` then reads the rest without decoding
    pixels (for a PNG it checks every chunk, so a truncated file is found here)."""
    from PIL import Image

    info: list = []
    bad: list[tuple[Path, str]] = []
    for f in files:
        try:
            with Image.open(f) as im:
                size, mode = im.size, im.mode
                im.verify()
            info.append((size, mode))
        except FileNotFoundError:
            info.append(None)
            bad.append((f, "no such file"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            info.append(None)
            bad.append((f, f"{type(e).__name__}: {e}"))
    return info, bad


def _check_sizes(files: list[Path], info: list, item_tfms: list, grey: bool) -> None:
    """Raise, naming two files, if items would differ in shape: images of different sizes with no
    item transform, or ones the item transforms (tried on one file of each size) leave different."""
    first_of_size: dict = {}
    for f, (size, _) in zip(files, info):
        first_of_size.setdefault(size, f)
        if len(first_of_size) > 8:
            break
    if len(first_of_size) < 2:
        return
    (s1, f1), (s2, f2) = list(first_of_size.items())[:2]
    if not item_tfms:
        raise ValueError(f"item_tfms: the images differ in size ({f1} is {s1[0]}x{s1[1]}, {f2} is {s2[0]}x{s2[1]}), "
                         f"so they cannot be batched; pass item_tfms=Resize(size) to bring them to one size")
    ref: tuple | None = None  # (file, shape) of the first size tried
    for f in first_of_size.values():
        x = load_image(f, grey)
        for t in item_tfms:
            x = t(x)
        if ref is None:
            ref = (f, tuple(x.shape))
        elif tuple(x.shape) != ref[1]:
            raise ValueError(f"item_tfms: the item transforms leave images of different shapes ({ref[0]} gives "
                             f"{ref[1]}, {f} gives {tuple(x.shape)}), so they cannot be batched; add a Resize(size) "
                             f"to item_tfms")


def _plain_labels(labels: list, files: list[Path]) -> list:
    """One plain label per file: a tensor's value taken out; several labels, or NaN, an error naming the file."""
    out = []
    for f, label in zip(files, labels):
        if isinstance(label, Tensor) and label.numel() == 1:
            label = label.item()
        if isinstance(label, (list, tuple, set, Tensor)):
            raise ValueError(f"labels: {f} has several labels ({label!r}); one label per item is supported "
                             "(multi-label data is not)")
        if isinstance(label, float) and math.isnan(label):
            raise ValueError(f"labels: {f} has no label (NaN)")
        out.append(label)
    return out


def _vocab_of(labels: list, vocab: Any) -> list:
    """The class names: `vocab` as given, else the training labels' distinct values sorted (fastai's CategoryMap)."""
    if vocab is not None:
        if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
            raise TypeError(f"vocab: expected a list of class names, got {type(vocab).__name__}")
        vocab = list(vocab)
        if len(set(vocab)) != len(vocab):
            raise ValueError(f"vocab: expected distinct class names, got {vocab}")
        return vocab
    try:
        return sorted(set(labels))
    except TypeError:
        return sorted(set(labels), key=str)  # mixed kinds of label: sorted as text


def _build(cls: type, path: Path, files: list[Path], labels: list, train_idx: list[int], valid_idx: list[int], *,
           vocab: Any, pos_label: Any, item_tfms: Any, batch_tfms: Any, bs: int, val_bs: int | None, shuffle: bool,
           seed: int | None, num_workers: int | None, device: Any, skip_bad: bool) -> DataLoaders:
    """Check the files and build the train (and valid) FileDataLoaders and their DataLoaders."""
    check_bool("skip_bad", skip_bad)
    check_bool("shuffle", shuffle)
    bs = check_int("bs", bs, 1)
    val_bs = bs if val_bs is None else check_int("val_bs", val_bs, 1)
    if num_workers is not None:
        check_int("num_workers", num_workers, 0)
    device = check_device("device", device)
    item_tfms = _check_tfms("item_tfms", item_tfms)
    batch_tfms = _check_tfms("batch_tfms", batch_tfms)
    if not train_idx:
        raise ValueError(f"path: no training images found under {path}")

    # -- every file opened once: bad files are errors, or skipped with skip_bad
    used = sorted(set(train_idx) | set(valid_idx))
    info_used, bad = _scan([files[i] for i in used])
    info: dict[int, Any] = dict(zip(used, info_used))
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise ImageFileError(f"{bad[0][0]}: cannot read the image ({bad[0][1]}){more}; "
                             f"fix or remove it, or pass skip_bad=True to skip bad files (listed in dls.skipped)")
    train_idx = [i for i in train_idx if info[i] is not None]
    valid_idx = [i for i in valid_idx if info[i] is not None]
    if not train_idx:
        raise ValueError(f"path: every training image under {path} is bad ({len(bad)} skipped)")

    # -- labels to targets
    labels = _plain_labels(labels, files)
    vocab = _vocab_of([labels[i] for i in train_idx], vocab)
    index = {v: k for k, v in enumerate(vocab)}
    for i in train_idx + valid_idx:
        if labels[i] not in index:
            raise ValueError(f"vocab: {files[i]} has label {labels[i]!r}, not one of the classes {vocab[:10]}"
                             f"{' ...' if len(vocab) > 10 else ''} (the training set's labels, or vocab=)")
    if pos_label is not None:
        if len(vocab) != 2 or pos_label not in index:
            raise ValueError(f"pos_label: expected one of exactly two classes, got {pos_label!r} for classes {vocab}")
        vocab = [v for v in vocab if v != pos_label] + [pos_label]  # target 1.0 is vocab[1]
        index = {v: k for k, v in enumerate(vocab)}

    def targets(idx: list[int]) -> Tensor:
        t = torch.tensor([index[labels[i]] for i in idx], dtype=torch.int64)
        return t.float().unsqueeze(1) if pos_label is not None else t

    # -- one channel when every file is greyscale, three otherwise; one size after the item transforms
    grey = all(info[i][1] in _GREY_MODES for i in train_idx + valid_idx)
    _check_sizes([files[i] for i in train_idx + valid_idx], [info[i] for i in train_idx + valid_idx],
                 [t for t in item_tfms if _applies(t, 0)], grey)

    def loader(idx: list[int], split: int) -> FileDataLoader:
        ds = ImageFileDataset([files[i] for i in idx], targets(idx), item_tfms, grey=grey, split=split, vocab=vocab)
        train = split == 0
        return FileDataLoader(ds, bs=bs if train else val_bs, shuffle=shuffle and train, seed=seed if train else None,
                              device=device, batch_tfms=batch_tfms, num_workers=num_workers, split=split)

    loaders = [loader(train_idx, 0)] + ([loader(valid_idx, 1)] if valid_idx else [])
    dls = cls(*loaders, device=device, vocab=vocab)
    dls.path = path
    dls.skipped = [f for f, _ in bad]
    dls._files = {"item_tfms": item_tfms, "batch_tfms": batch_tfms, "grey": grey, "num_workers": num_workers}
    return dls


def _choose_splitter(splitter: Any, valid_pct: Any, seed: Any) -> Callable:
    if splitter is not None:
        return check_callable("splitter", splitter, "a callable items -> (train_idx, valid_idx)")
    return RandomSplitter(valid_pct, seed=seed)


# ---------------------------------------------------------------- the constructors

def from_folder(cls: type, path: str | os.PathLike, train: str = "train", valid: str = "valid",
                valid_pct: float | None = None, seed: int | None = None, vocab: Sequence | None = None,
                item_tfms: Any = None, batch_tfms: Any = None, bs: int = 64, val_bs: int | None = None,
                shuffle: bool = True, num_workers: int | None = None, device: Any = None, pos_label: Any = None,
                skip_bad: bool = False, splitter: Callable | None = None) -> DataLoaders:
    """Images labelled by their folder: `path/train/<label>/*` and `path/valid/<label>/*` (fastai's
    layout, split by `GrandparentSplitter`), or every image under `path` split at random with
    `valid_pct` (`seed`: the split's and the training order's seed)."""
    path = _check_path("path", path)
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} is not a folder")
    if valid_pct is None and splitter is None:
        for name, sub in (("train", train), ("valid", valid)):
            if not isinstance(sub, str):
                raise TypeError(f"{name}: expected a folder name (str), got {type(sub).__name__}")
            if not (path / sub).is_dir():
                hint = "; pass valid_pct=0.2 to split the images at random instead" if name == "valid" else ""
                raise FileNotFoundError(f"{name}: there is no folder {path / sub}{hint}")
            for d in sorted((path / sub).iterdir()):
                if d.is_dir() and not d.name.startswith(".") and not get_image_files(d):
                    raise ValueError(f"{name}: the class folder {d} holds no image files; add images or remove it")
        files = get_image_files(path, folders=[train, valid])
        split = GrandparentSplitter(train, valid)
    else:
        files = get_image_files(path)
        split = _choose_splitter(splitter, valid_pct, seed)
    if not files:
        raise ValueError(f"path: no image files under {path} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    train_idx, valid_idx = _split(split, files)
    return _build(cls, path, files, [parent_label(f) for f in files], train_idx, valid_idx, vocab=vocab,
                  pos_label=pos_label, item_tfms=item_tfms, batch_tfms=batch_tfms, bs=bs, val_bs=val_bs,
                  shuffle=shuffle, seed=seed, num_workers=num_workers, device=device, skip_bad=skip_bad)


def _column(df: Any, name: str, col: Any) -> Any:
    """Column `col` of `df`, by position (int) or by name (str), naming the argument when missing."""
    if isinstance(col, int) and not isinstance(col, bool):
        if not -len(df.columns) <= col < len(df.columns):
            raise IndexError(f"{name}: column {col} is out of range; the CSV has {len(df.columns)} columns {list(df.columns)}")
        return df.iloc[:, col]
    if col not in df.columns:
        raise KeyError(f"{name}: no column {col!r}; the CSV has columns {list(df.columns)}")
    return df[col]


def from_csv(cls: type, path: str | os.PathLike, csv_fname: str | os.PathLike = "labels.csv", folder: str | None = None,
             fn_col: int | str = 0, label_col: int | str = 1, valid_col: int | str | None = None, suff: str = "",
             valid_pct: float = 0.2, seed: int | None = None, header: Any = "infer", delimiter: str | None = None,
             vocab: Sequence | None = None, item_tfms: Any = None, batch_tfms: Any = None, bs: int = 64,
             val_bs: int | None = None, shuffle: bool = True, num_workers: int | None = None, device: Any = None,
             pos_label: Any = None, skip_bad: bool = False, splitter: Callable | None = None) -> DataLoaders:
    """Images named in a CSV (`path/csv_fname`): file names in `fn_col` (under `path/folder`, with
    `suff` appended), labels in `label_col`; split by the booleans of `valid_col`, else at random."""
    import pandas as pd

    path = _check_path("path", path)
    csv_path = path / _check_path("csv_fname", csv_fname)
    if not csv_path.is_file():
        raise FileNotFoundError(f"csv_fname: there is no file {csv_path}")
    df = pd.read_csv(csv_path, header=header, **({} if delimiter is None else {"delimiter": delimiter}))
    if len(df) == 0:
        raise ValueError(f"csv_fname: {csv_path} has no rows")
    base = path / folder if folder is not None else path
    names = _column(df, "fn_col", fn_col).astype(str).tolist()
    files = [base / f"{n}{suff}" for n in names]
    labels = _column(df, "label_col", label_col).tolist()
    missing = [(k, f) for k, f in enumerate(files) if not f.is_file()]
    if missing and not skip_bad:
        k, f = missing[0]
        raise FileNotFoundError(f"csv_fname: row {k} of {csv_path} names {names[k]!r}, but there is no file {f}"
                                f"{f' (and {len(missing) - 1} more missing)' if len(missing) > 1 else ''}; "
                                f"pass skip_bad=True to skip them")
    if valid_col is not None and splitter is None:
        column = _column(df, "valid_col", valid_col)
        if not (pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column)):  # "yes"/"no": all True
            raise ValueError(f"valid_col: expected booleans (or 0/1) in column {valid_col!r}, got values such as "
                             f"{column.iloc[0]!r}")
        is_valid = column.astype(bool).tolist()
        train_idx = [i for i, v in enumerate(is_valid) if not v]
        valid_idx = [i for i, v in enumerate(is_valid) if v]
    else:
        train_idx, valid_idx = _split(_choose_splitter(splitter, valid_pct, seed), files)
    return _build(cls, path, files, labels, train_idx, valid_idx, vocab=vocab, pos_label=pos_label,
                  item_tfms=item_tfms, batch_tfms=batch_tfms, bs=bs, val_bs=val_bs, shuffle=shuffle, seed=seed,
                  num_workers=num_workers, device=device, skip_bad=skip_bad)


def from_lists(cls: type, path: str | os.PathLike, fnames: Sequence, labels: Sequence, valid_pct: float = 0.2,
               seed: int | None = None, vocab: Sequence | None = None, item_tfms: Any = None, batch_tfms: Any = None,
               bs: int = 64, val_bs: int | None = None, shuffle: bool = True, num_workers: int | None = None,
               device: Any = None, pos_label: Any = None, skip_bad: bool = False,
               splitter: Callable | None = None) -> DataLoaders:
    """Images `fnames` with their `labels`, split at random. A name is taken as given (fastai's
    rule: `get_image_files(path)` gives such names) when that file exists, else under `path`."""
    path = _check_path("path", path)
    if isinstance(fnames, (str, bytes)) or isinstance(labels, (str, bytes)):
        raise TypeError("fnames, labels: expected two lists, got a str")
    fnames, labels = list(fnames), list(labels)
    if len(fnames) != len(labels):
        raise ValueError(f"fnames, labels: expected one label per file, got {len(fnames)} files and {len(labels)} labels")
    if not fnames:
        raise ValueError("fnames: expected at least one file, got none")
    files = [f if f.exists() else path / f for f in (_check_path(f"fnames[{k}]", o) for k, o in enumerate(fnames))]
    train_idx, valid_idx = _split(_choose_splitter(splitter, valid_pct, seed), files)
    return _build(cls, path, files, labels, train_idx, valid_idx, vocab=vocab, pos_label=pos_label,
                  item_tfms=item_tfms, batch_tfms=batch_tfms, bs=bs, val_bs=val_bs, shuffle=shuffle, seed=seed,
                  num_workers=num_workers, device=device, skip_bad=skip_bad)


def is_file_list(items: Any) -> bool:
    """Whether `items` names files: a path, a str, or a non-empty list/tuple of them."""
    if isinstance(items, (str, os.PathLike)):
        return True
    return isinstance(items, (list, tuple)) and len(items) > 0 and all(isinstance(o, (str, os.PathLike)) for o in items)


def test_dl(dls: DataLoaders, items: Any, bs: int | None = None) -> FileDataLoader:
    """`dls.test_dl(files)`: a loader over new image files (a list, or a folder's images), in
    order, with the validation set's transforms, yielding `(images,)` batches."""
    items = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    files: list[Path] = []
    for o in items:
        p = Path(o)
        files += get_image_files(p) if p.is_dir() else [p]
    if not files:
        raise ValueError("items: no image files given")
    cfg = dls._files
    info, bad = _scan(files)
    if bad:
        raise ImageFileError(f"{bad[0][0]}: cannot read the image ({bad[0][1]})")
    _check_sizes(files, info, [t for t in cfg["item_tfms"] if _applies(t, 1)], cfg["grey"])
    ref = dls.valid if dls.valid is not None else dls.train
    ds = ImageFileDataset(files, None, cfg["item_tfms"], grey=cfg["grey"], split=1, vocab=dls.vocab)
    return FileDataLoader(ds, bs=ref.bs if bs is None else bs, shuffle=False, device=dls.device,
                          batch_tfms=cfg["batch_tfms"], num_workers=cfg["num_workers"], split=1)


def item_from_file(dls: DataLoaders, path: str | os.PathLike) -> Tensor:
    """One image file as the validation set gives its items (item and batch transforms), without a
    batch dimension: what `learn.predict(path)` feeds the model."""
    if getattr(dls, "_files", None) is None:
        raise TypeError(f"x: a file ({path}) needs DataLoaders built from files (from_folder, from_csv, "
                        "from_lists), whose transforms read it; give a tensor otherwise")
    dl = test_dl(dls, [path], bs=1)
    dl.num_workers = 0  # one image: decoded here, no worker processes started
    return dl.one_batch()[0][0]


# ---------------------------------------------------------------- showing

def _label_names(y: Tensor, vocab: list | None) -> list[str]:
    """Targets (or decoded predictions) as names: vocab entries for class indices, else as numbers."""
    y = y.detach().cpu()
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    vals = y.tolist()
    if vocab is not None and y.dim() == 1:
        return [str(vocab[int(v)]) if float(v).is_integer() and 0 <= int(v) < len(vocab) else str(v) for v in vals]
    return [str(v) for v in vals]


def _as_images(x: Tensor, name: str) -> Tensor:
    x = x.detach().float().cpu()
    if x.dim() not in (3, 4):
        raise ValueError(f"{name}: a batch of shape {tuple(x.shape)} is not images ((N, C, H, W) or (N, H, W))")
    return x.clamp(0, 1) if x.dim() == 4 and x.shape[1] in (1, 3) else x


def _grid(n: int, nrows: int | None, ncols: int | None) -> tuple[int, int]:
    if nrows is None and ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if nrows is None:
        nrows = math.ceil(n / check_int("ncols", ncols, 1))
    if ncols is None:
        ncols = math.ceil(n / check_int("nrows", nrows, 1))
    return check_int("nrows", nrows, 1), check_int("ncols", ncols, 1)


def _batch_images(dl: Any) -> tuple[Tensor, tuple]:
    """The first in-order batch of `dl`, its images decoded for showing (after its batch transforms
    and their `decode`; the images before them when the transforms leave no images, e.g. a flatten)."""
    if isinstance(dl, FileDataLoader):
        raw = dl.raw_batch()  # in order for validation; a shuffled draw for training (generator left as it was)
        if dl._move_to is not None:
            raw = _move(raw, dl._move_to, False)
        x = dl.decode(dl._after_move(raw)[0])
        return (x if x.dim() == 4 else raw[0]), raw
    b = dl.new(shuffle=False).one_batch() if hasattr(dl, "new") and dl.torch_loader is None else dl.one_batch()
    return b[0], b


def _draw(images: Tensor, titles: list[str], colors: list[str] | None, nrows: int | None, ncols: int | None,
          figsize: Any, **kwargs: Any):
    from minilearn.plotting import new_figure, show_image, show_once

    n = len(images)
    nrows, ncols = _grid(n, nrows, ncols)
    if nrows * ncols < n:
        images, titles = images[: nrows * ncols], titles[: nrows * ncols]
    fig, axes = new_figure(nrows, ncols, figsize=figsize or (ncols * 2.0, nrows * 2.2))
    import numpy as np

    grid = np.array(axes, dtype=object).reshape(-1)
    for k, ax in enumerate(grid):
        if k < len(images):
            show_image(images[k], ax=ax, **kwargs)
            ax.set_title(titles[k], **({"color": colors[k]} if colors else {}))
        ax.axis("off")
    return show_once(fig)


def show_batch(dls: DataLoaders, max_n: int = 9, nrows: int | None = None, ncols: int | None = None,
               figsize: tuple[float, float] | None = None, ds_idx: int = 0, **kwargs: Any):
    """A grid of the first `max_n` images of loader `ds_idx`'s first in-order batch (training by
    default), titled with their labels' vocab names; returns the Figure (shown once in a notebook).
    `kwargs` go to `show_image` (cmap, ...)."""
    max_n = check_int("max_n", max_n, 1)
    dl = dls[check_int("ds_idx", ds_idx, 0, len(dls) - 1)]
    x, b = _batch_images(dl)
    x = _as_images(x, "show_batch")[:max_n]
    titles = _label_names(b[1][: len(x)], getattr(dls, "vocab", None)) if len(b) > 1 else [""] * len(x)
    return _draw(x, titles, None, nrows, ncols, figsize, **kwargs)


def _decode_preds(out: Tensor, loss_func: Any) -> Tensor:
    """Model outputs to targets' form: the loss's `activation` and `decodes` when it has them, else
    argmax over classes, or `out > 0` for one output (a logit, as fastbook's mnist_loss takes)."""
    if hasattr(loss_func, "decodes") and hasattr(loss_func, "activation"):
        return loss_func.decodes(loss_func.activation(out))
    if out.dim() == 2 and out.shape[1] == 1:
        return (out > 0).float()
    return out.argmax(dim=-1)


def show_results(learn: Any, ds_idx: int = 1, max_n: int = 9, nrows: int | None = None, ncols: int | None = None,
                 figsize: tuple[float, float] | None = None, **kwargs: Any):
    """A grid of the first `max_n` images of `learn.dls[ds_idx]` (the validation set by default),
    each titled target over prediction (vocab names), green when they agree and red when not, as
    fastai's `learn.show_results`; returns the Figure (shown once in a notebook)."""
    max_n = check_int("max_n", max_n, 1)
    dls = learn.dls
    dl = dls[check_int("ds_idx", ds_idx, 0, len(dls) - 1)]
    x_show, _ = _batch_images(dl)
    b = dl.fetch(torch.arange(min(dl.bs, dl.n))) if isinstance(dl, FileDataLoader) else \
        (dl.new(shuffle=False).one_batch() if dl.torch_loader is None else dl.one_batch())
    if len(b) < 2:
        raise ValueError(f"ds_idx: loader {ds_idx} has no targets to compare predictions with")
    learn._to_device()
    b = to_device(b, learn.device)  # batches follow the model, as in the Learner's passes
    model = learn.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*b[:-1])
    finally:
        model.train(was_training)
    preds, targs = _decode_preds(out, learn.loss_func), b[-1]
    n = min(max_n, len(x_show))
    vocab = getattr(dls, "vocab", None)
    t_names, p_names = _label_names(targs[:n], vocab), _label_names(preds[:n], vocab)
    colors = ["green" if t == p else "red" for t, p in zip(t_names, p_names)]
    titles = [f"{t}\n{p}" for t, p in zip(t_names, p_names)]
    return _draw(_as_images(x_show, "show_results")[:n], titles, colors, nrows, ncols, figsize, **kwargs)

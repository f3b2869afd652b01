"""Data to learn from: MNIST through torchvision, fastbook's 3-vs-7 sample, small synthetic sets.

MNIST is read from `data_root()` (the `root` argument, else `$MINILEARN_DATA`, else
`~/.cache/minilearn`), where torchvision expects `MNIST/raw/`; torchvision downloads it there when
it is missing and the internet is reachable. torchvision is imported only when MNIST is loaded, so
`import minilearn` stays fast.
"""

import functools
import os
import pathlib
import shutil
import tarfile
import tempfile

import torch
from torch import Tensor

from minilearn.checks import check_bool, check_int, check_number

__all__ = [
    "data_root",
    "mnist",
    "mnist_pair",
    "mnist_3v7",
    "mnist_sample",
    "cache_root",
    "synthetic_regression",
    "synthetic_classification",
]

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def data_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder that holds the data: `root`, else `$MINILEARN_DATA`, else `~/.cache/minilearn`."""
    if root is None:
        root = os.environ.get("MINILEARN_DATA") or pathlib.Path.home() / ".cache" / "minilearn"
    elif not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root: expected a str, a path or None, got {type(root).__name__}")
    return pathlib.Path(root).expanduser()


@functools.lru_cache(maxsize=4)
def _load_mnist_uint8(root: str, train: bool) -> tuple[Tensor, Tensor]:
    """Read one MNIST split as stored (uint8 images, int64 labels), once per process and folder."""
    # imported here: torchvision takes seconds to import and most uses of minilearn never need it
    from torchvision.datasets import MNIST

    raw = pathlib.Path(root) / "MNIST" / "raw"
    try:
        ds = MNIST(root, train=train, download=True)
    except (RuntimeError, OSError) as e:
        # With the files in place this is some other failure (say, a corrupt file): let it through.
        if all((raw / name).is_file() for name in _MNIST_FILES):
            raise
        raise FileNotFoundError(
            f"MNIST not found in {raw}, and downloading it failed (the error above says why). "
            f"Set MINILEARN_DATA (or pass root=) to a folder holding MNIST/raw/ with "
            f"{', '.join(_MNIST_FILES)}."
        ) from e
    return ds.data, ds.targets


def _mnist_uint8(root: str | os.PathLike | None, train: bool) -> tuple[Tensor, Tensor]:
    """The cached uint8 split for `root`, keyed on the resolved folder so spellings share a cache entry."""
    return _load_mnist_uint8(str(data_root(root).resolve()), train)


def _to_float(images: Tensor, flatten: bool) -> Tensor:
    """uint8 images to a new float32 tensor in [0, 1], as fastbook's `tensor(im).float()/255`."""
    x = images.to(torch.float32).div_(255)
    return x.reshape(len(x), -1) if flatten else x


def mnist(root: str | os.PathLike | None = None, train: bool = True, flatten: bool = False) -> tuple[Tensor, Tensor]:
    """MNIST's training (or test) split as `(x, y)`: x float32 in [0, 1], y int64 digit labels.

    x is (N, 28, 28), or (N, 784) with `flatten`. Files are read once per process; every call
    returns new tensors, so changing them in place cannot corrupt later calls.
    """
    check_bool("train", train)
    check_bool("flatten", flatten)
    data, targets = _mnist_uint8(root, train)
    return _to_float(data, flatten), targets.clone()


def mnist_pair(a: int, b: int, root: str | os.PathLike | None = None, flatten: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits `a` vs `b` as `(train_x, train_y, valid_x, valid_y)`: a binary task like fastbook's 3s vs 7s.

    Train is MNIST's training split's `a`s then its `b`s (each in file order), valid the same from
    the test split. x is float32 in [0, 1] ((N, 784), or (N, 28, 28) without `flatten`); y is
    float32 of shape (N, 1), 1.0 for `a` and 0.0 for `b`, so both fastbook's `mnist_loss` and
    `BCEWithLogitsLoss` take it as it is.
    """
    a = check_int("a", a, 0)
    b = check_int("b", b, 0)
    if a > 9 or b > 9:
        raise ValueError(f"a and b: expected digits 0..9, got a={a} and b={b}")
    if a == b:
        raise ValueError(f"a and b: expected two different digits, got a={a} and b={b}")
    check_bool("flatten", flatten)
    out = []
    for train in (True, False):
        data, targets = _mnist_uint8(root, train)
        is_a, is_b = targets == a, targets == b
        idx = torch.cat([is_a.nonzero().flatten(), is_b.nonzero().flatten()])
        y = torch.cat([torch.ones(int(is_a.sum())), torch.zeros(int(is_b.sum()))]).unsqueeze(1)
        out += [_to_float(data[idx], flatten), y]
    return tuple(out)


def mnist_3v7(root: str | os.PathLike | None = None, flatten: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """fastbook's MNIST_SAMPLE (3s vs 7s) as `(train_x, train_y, valid_x, valid_y)`; y is 1.0 for a 3."""
    return mnist_pair(3, 7, root=root, flatten=flatten)


def cache_root() -> pathlib.Path:
    """Where extracted archives are kept: `$MINILEARN_CACHE`, else `~/.cache/minilearn` (never the
    data folder, which may be read-only)."""
    return pathlib.Path(os.environ.get("MINILEARN_CACHE") or pathlib.Path.home() / ".cache" / "minilearn").expanduser()


_SAMPLE = "mnist_sample"


def _is_sample_folder(p: pathlib.Path) -> bool:
    """Whether `p` holds fastai's MNIST_SAMPLE layout (train/, valid/ and labels.csv)."""
    return (p / "train").is_dir() and (p / "valid").is_dir() and (p / "labels.csv").is_file()


def _safe_members(tar: tarfile.TarFile, archive: pathlib.Path) -> list[tarfile.TarInfo]:
    """The archive's members, checked to stay inside `mnist_sample/` (no absolute paths, no `..`,
    no links or devices), so extracting cannot write anywhere else."""
    members = tar.getmembers()
    for m in members:
        parts = pathlib.PurePosixPath(m.name).parts
        if m.name.startswith("/") or ".." in parts or not parts or parts[0] != _SAMPLE:
            raise ValueError(f"{archive}: member {m.name!r} is outside {_SAMPLE}/; refusing to extract it")
        if not (m.isfile() or m.isdir()):
            raise ValueError(f"{archive}: member {m.name!r} is not a plain file or folder; refusing to extract it")
    return members


def mnist_sample(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder of fastai's MNIST_SAMPLE (`train/{3,7}/*.png`, `valid/{3,7}/*.png`, `labels.csv`).

    Found in the data folder (`root`, else `$MINILEARN_DATA`, see `data_root`) as an extracted
    `mnist_sample/`, else extracted from `mnist_sample.tgz` there into `cache_root()/mnist_sample`
    once (to a temporary folder, then renamed, so a crash leaves no half-extracted folder; an
    existing extraction is re-used: delete it to extract again). Members that would land outside
    the folder are refused. Nothing is downloaded: without the archive it is a FileNotFoundError.
    """
    data = data_root(root)
    if _is_sample_folder(data / _SAMPLE):
        return data / _SAMPLE
    cache = cache_root()
    target = cache / _SAMPLE
    if _is_sample_folder(target):
        return target
    archive = data / f"{_SAMPLE}.tgz"
    if not archive.is_file():
        raise FileNotFoundError(
            f"MNIST_SAMPLE not found: neither {data / _SAMPLE} nor {archive} exists (nor an extraction in {target}). "
            f"Set MINILEARN_DATA (or pass root=) to a folder holding {_SAMPLE}.tgz, fastai's MNIST_SAMPLE archive."
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{_SAMPLE}-", dir=cache))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, members=_safe_members(tar, archive), filter="data")
        if not _is_sample_folder(tmp / _SAMPLE):
            raise ValueError(f"{archive}: expected {_SAMPLE}/train, {_SAMPLE}/valid and {_SAMPLE}/labels.csv in it")
        try:
            os.rename(tmp / _SAMPLE, target)
        except OSError:
            if not _is_sample_folder(target):  # another process finished first: use its folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def synthetic_regression(n: int = 256, n_features: int = 4, noise: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A linear regression task `y = x @ w + b + noise` as `(x, y)`, y of shape (n, 1), for fast tests.

    It uses its own generator, so it neither reads nor advances torch's global RNG.
    """
    n = check_int("n", n, 1)
    n_features = check_int("n_features", n_features, 1)
    noise = check_number("noise", noise, 0)
    seed = check_int("seed", seed, -(2**63))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    w = torch.randn(n_features, 1, generator=g)
    b = torch.randn(1, generator=g)
    y = x @ w + b + noise * torch.randn(n, 1, generator=g)
    return x, y


def synthetic_classification(n: int = 256, n_features: int = 8, n_classes: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Well separated Gaussian clusters, one per class, as `(x, y)` with y int64 (n,), for fast tests.

    Classes are balanced (they differ by at most one item) and shuffled. It uses its own
    generator, so it neither reads nor advances torch's global RNG.
    """
    n = check_int("n", n, 1)
    n_features = check_int("n_features", n_features, 1)
    n_classes = check_int("n_classes", n_classes, 2)
    seed = check_int("seed", seed, -(2**63))
    g = torch.Generator().manual_seed(seed)
    # centres spread three times wider than the unit noise keep the clusters nearly separable
    centres = 3 * torch.randn(n_classes, n_features, generator=g)
    y = (torch.arange(n) % n_classes)[torch.randperm(n, generator=g)]
    x = centres[y] + torch.randn(n, n_features, generator=g)
    return x, y


def mnist_train_valid(root: str | os.PathLike | None = None, flatten: bool = True, standardize: bool = False,
                      limit: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Full MNIST as `(train_x, train_y, valid_x, valid_y)`: the training set and the test set.

    `limit` keeps the first `limit` training images; `standardize` subtracts the (kept) training
    images' mean and divides by their standard deviation, for both sets (an MLP trained with Adam
    or SGD learns much faster on zero-mean inputs).
    """
    if limit is not None:
        limit = check_int("limit", limit, 1)
    x, y = mnist(root=root, train=True, flatten=flatten)
    valid_x, valid_y = mnist(root=root, train=False, flatten=flatten)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if standardize:
        mean, std = x.mean(), x.std()
        x, valid_x = (x - mean) / std, (valid_x - mean) / std
    return x, y, valid_x, valid_y

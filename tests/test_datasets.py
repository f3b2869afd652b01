"""Tests for minilearn.datasets: MNIST readers (on tiny IDX files and on the real data) and synthetic sets."""

import socket
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from minilearn.datasets import (
    data_root,
    mnist,
    mnist_3v7,
    mnist_pair,
    synthetic_classification,
    synthetic_regression,
)

# tiny splits whose 3s and 7s are interleaved with other digits, to check the 3-then-7 order
TRAIN_LABELS = [7, 3, 1, 3, 7, 0, 9, 3, 7, 2, 3, 5]
TEST_LABELS = [3, 7, 8, 7, 3, 4]


def write_idx(path: Path, magic: int, dims: tuple[int, ...], data: bytes) -> None:
    """Write one file in the IDX format MNIST uses: big-endian magic, big-endian dims, uint8 data."""
    path.write_bytes(struct.pack(f">I{len(dims)}I", magic, *dims) + data)


def pixels(labels: list[int], seed: int) -> bytes:
    """Random 28x28 uint8 images, one per label, covering 0 and 255."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(labels), 28, 28), generator=g, dtype=torch.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    return images.numpy().tobytes()


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> dict:
    """A folder holding all four MNIST files in the real IDX format, with a few items each."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = {}
    for prefix, labels, seed in (("train", TRAIN_LABELS, 0), ("t10k", TEST_LABELS, 1)):
        images[prefix] = pixels(labels, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 0x00000803, (len(labels), 28, 28), images[prefix])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 0x00000801, (len(labels),), bytes(labels))
    return {"root": tmp_path, "train": images["train"], "t10k": images["t10k"]}


def expected_x(data: bytes, n: int) -> torch.Tensor:
    """The float images the bytes stand for: byte / 255."""
    return torch.tensor(list(data), dtype=torch.float32).reshape(n, 28, 28) / 255


# -- data_root


def test_data_root_prefers_the_argument_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILEARN_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("MINILEARN_DATA")
    assert data_root() == Path.home() / ".cache" / "minilearn"
    with pytest.raises(TypeError, match="root"):
        data_root(3)


# -- mnist on tiny IDX files


def test_mnist_reads_idx_files(tiny_mnist):
    x, y = mnist(root=tiny_mnist["root"])
    assert x.shape == (12, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x, expected_x(tiny_mnist["train"], 12))
    assert x.min() == 0 and x.max() == 1
    assert y.dtype == torch.int64 and y.tolist() == TRAIN_LABELS
    xt, yt = mnist(root=str(tiny_mnist["root"]), train=False, flatten=True)
    assert xt.shape == (6, 784)
    assert torch.equal(xt, expected_x(tiny_mnist["t10k"], 6).reshape(6, 784))
    assert yt.tolist() == TEST_LABELS


def test_mnist_returns_fresh_tensors_each_call(tiny_mnist):
    x, y = mnist(root=tiny_mnist["root"])
    x.zero_()
    y.zero_()
    x2, y2 = mnist(root=tiny_mnist["root"])
    assert torch.equal(x2, expected_x(tiny_mnist["train"], 12)) and y2.tolist() == TRAIN_LABELS


def test_mnist_3v7_is_threes_then_sevens_in_file_order(tiny_mnist):
    train_x, train_y, valid_x, valid_y = mnist_3v7(root=tiny_mnist["root"])
    all_train = expected_x(tiny_mnist["train"], 12).reshape(12, 784)
    all_test = expected_x(tiny_mnist["t10k"], 6).reshape(6, 784)
    train_idx = [1, 3, 7, 10, 0, 4, 8]  # the 3s, then the 7s, as they appear in TRAIN_LABELS
    valid_idx = [0, 4, 1, 3]
    assert torch.equal(train_x, all_train[train_idx])
    assert torch.equal(valid_x, all_test[valid_idx])
    assert train_y.shape == (7, 1) and train_y.dtype == torch.float32
    assert train_y.flatten().tolist() == [1.0] * 4 + [0.0] * 3
    assert valid_y.flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    images = mnist_3v7(root=tiny_mnist["root"], flatten=False)[0]
    assert images.shape == (7, 28, 28)


def test_mnist_pair_labels_the_first_digit_one(tiny_mnist):
    train_x, train_y, valid_x, valid_y = mnist_pair(7, 3, root=tiny_mnist["root"])
    assert train_y.flatten().tolist() == [1.0] * 3 + [0.0] * 4
    assert torch.equal(train_x[0], expected_x(tiny_mnist["train"], 12).reshape(12, 784)[0])


def test_mnist_pair_bad_digits(tiny_mnist):
    with pytest.raises(ValueError, match="a and b: expected two different digits"):
        mnist_pair(3, 3, root=tiny_mnist["root"])
    with pytest.raises(ValueError, match="a and b: expected digits 0..9"):
        mnist_pair(3, 10, root=tiny_mnist["root"])
    with pytest.raises(ValueError, match="a: expected an int >= 0"):
        mnist_pair(-1, 3)
    with pytest.raises(TypeError, match="b: expected an int"):
        mnist_pair(3, "7")


def test_mnist_bad_flags():
    with pytest.raises(TypeError, match="train"):
        mnist(train="yes")
    with pytest.raises(TypeError, match="flatten"):
        mnist(flatten=1)


def test_missing_mnist_raises_one_clear_error(tmp_path, monkeypatch):
    # Route any download through a closed local port, so the test never reaches the internet
    # (where it would download MNIST) and fails fast whatever the network is.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2)
    # urllib caches its opener (and the proxies it saw) on first use: drop it before and after
    urllib.request.install_opener(None)
    try:
        with pytest.raises(FileNotFoundError) as info:
            mnist(root=tmp_path)
    finally:
        socket.setdefaulttimeout(old_timeout)
        urllib.request.install_opener(None)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "MINILEARN_DATA" in message
    assert info.value.__cause__ is not None
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no half-written files left behind


def test_importing_minilearn_data_does_not_import_torchvision():
    code = "import sys, minilearn.data, minilearn.datasets; print('torchvision' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- synthetic sets


def test_synthetic_regression():
    x, y = synthetic_regression(n=100, n_features=3, noise=0.0, seed=1)
    assert x.shape == (100, 3) and y.shape == (100, 1)
    # noise-free data is fit exactly by least squares with a bias column
    design = torch.cat([x, torch.ones(100, 1)], dim=1)
    fit = torch.linalg.lstsq(design, y).solution
    assert torch.allclose(design @ fit, y, atol=1e-4)
    x2, y2 = synthetic_regression(n=100, n_features=3, noise=0.0, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, synthetic_regression(n=100, n_features=3, seed=2)[0])


def test_synthetic_classification():
    x, y = synthetic_classification(n=300, n_features=8, n_classes=3, seed=0)
    assert x.shape == (300, 8) and y.dtype == torch.int64 and y.shape == (300,)
    assert y.bincount().tolist() == [100, 100, 100]
    # the nearest class mean classifies nearly every point: the classes are (almost) separable
    means = torch.stack([x[y == c].mean(0) for c in range(3)])
    assert (torch.cdist(x, means).argmin(1) == y).float().mean() > 0.95
    assert torch.equal(y, synthetic_classification(n=300, n_features=8, n_classes=3, seed=0)[1])


def test_synthetic_sets_leave_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    synthetic_regression()
    synthetic_classification()
    assert torch.equal(torch.rand(3), expected)


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        synthetic_regression(n=0)
    with pytest.raises(ValueError, match="noise"):
        synthetic_regression(noise=-1.0)
    with pytest.raises(ValueError, match="n_classes"):
        synthetic_classification(n_classes=1)
    with pytest.raises(TypeError, match="n_features"):
        synthetic_classification(n_features=2.0)


# -- the real MNIST (needs MINILEARN_DATA; fails rather than skips under CI)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.mnist
def test_real_mnist_sizes_and_label_counts(mnist_root):
    x, y = mnist(root=mnist_root)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert 0 <= x.min() and x.max() <= 1
    xt, yt = mnist(root=mnist_root, train=False, flatten=True)
    assert xt.shape == (10000, 784)
    assert yt.bincount().tolist() == MNIST_TEST_COUNTS


@pytest.mark.mnist
def test_real_mnist_3v7(mnist_root):
    train_x, train_y, valid_x, valid_y = mnist_3v7(root=mnist_root)
    assert train_x.shape == (6131 + 6265, 784) and train_y.shape == (12396, 1)
    assert valid_x.shape == (1010 + 1028, 784) and valid_y.shape == (2038, 1)
    assert train_y.sum() == 6131 and valid_y.sum() == 1010
    assert train_y[:6131].eq(1).all() and train_y[6131:].eq(0).all()


@pytest.mark.mnist
def test_real_mnist_default_root_comes_from_the_environment(mnist_root, monkeypatch):
    monkeypatch.setenv("MINILEARN_DATA", str(mnist_root))
    assert data_root() == mnist_root
    assert mnist(train=False)[1].shape == (10000,)


@pytest.mark.mnist
def test_mnist_train_valid_standardized_and_limited(mnist_root):
    from minilearn import datasets

    x, y, vx, vy = datasets.mnist_train_valid(root=mnist_root, standardize=True, limit=5000)
    assert x.shape == (5000, 784) and y.shape == (5000,) and vx.shape == (10000, 784) and vy.shape == (10000,)
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4
    raw_x, _, raw_vx, _ = datasets.mnist_train_valid(root=mnist_root, limit=5000)
    assert torch.allclose(vx, (raw_vx - raw_x.mean()) / raw_x.std())
    with pytest.raises(ValueError, match="limit"):
        datasets.mnist_train_valid(root=mnist_root, limit=0)

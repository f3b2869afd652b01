"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _in_ci() -> bool:
    """Whether we run under CI (`CI` set to anything but empty, "false" or "0")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "false", "0")


def _has_mnist(root: Path) -> bool:
    """Whether `root/MNIST/raw` holds the four MNIST files (extracted, or as torchvision's .gz)."""
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in _MNIST_FILES)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding the real `MNIST/raw/` files, from `$MINILEARN_DATA`.

    When it is missing the test is skipped locally but fails under CI, where the real-MNIST tests
    must run rather than pass by being skipped.
    """
    value = os.environ.get("MINILEARN_DATA", "")
    if value and _has_mnist(Path(value).expanduser()):
        return Path(value).expanduser()
    why = (
        "MINILEARN_DATA is not set"
        if not value
        else f"MINILEARN_DATA={value} has no MNIST/raw/ with {', '.join(_MNIST_FILES)}"
    )
    if _in_ci():
        pytest.fail(f"{why}; under CI the real-MNIST tests must run, so point MINILEARN_DATA at the MNIST data")
    pytest.skip(f"{why}; set MINILEARN_DATA to a folder holding MNIST/raw/ to run the real-MNIST tests")


@pytest.fixture(scope="session")
def fastai():
    """fastai's Learner module, for the side-by-side tests (`pip install -e .[compare]`).

    Skipped locally when fastai is missing; under CI, where the parity tests must run, it fails.
    """
    try:
        from minilearn.compare import import_fastai

        return import_fastai()
    except ImportError as e:
        if _in_ci():
            pytest.fail(f"fastai is not installed ({e}); CI installs the compare extra to run the parity tests")
        pytest.skip(f"fastai is not installed ({e}); pip install -e '.[compare]' to run the parity tests")

"""Writing and reading files safely: atomic writes, and checkpoints that cannot run code."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import torch


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through `write(f)` so that a crash never leaves a half-written file.

    The bytes go to a temporary file beside `path`, which is flushed, synced to disk and then
    renamed over `path` in one step: readers see the old file or the new one, nothing between.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """`torch.save(obj)` to `path`, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location=None) -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`: tensors and plain data only.

    A file crafted to run code when unpickled is refused before anything runs; a truncated or
    corrupted file gives an error naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"checkpoint {path}: refused to load, it holds objects other than tensors and plain data "
            f"(weights_only=True); only load files you trust with torch.load yourself") from e
    except (PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"checkpoint {path}: truncated or corrupted ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path}: expected a dict, got {type(obj).__name__}")
    return obj


def check_weights_fit(model: "torch.nn.Module", saved: dict, path, strict: bool = True) -> None:
    """Raise before loading if the weights in `saved` do not fit `model` (load_state_dict would
    half-load them): missing or unexpected names (when `strict`), or different shapes."""
    current = model.state_dict()
    missing, unexpected = sorted(current.keys() - saved.keys()), sorted(saved.keys() - current.keys())
    if strict and (missing or unexpected):
        raise ValueError(f"checkpoint {path}: its weights do not fit the model "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    bad = [f"{k}: saved {tuple(v.shape)}, model {tuple(current[k].shape)}"
           for k, v in saved.items() if k in current and tuple(v.shape) != tuple(current[k].shape)]
    if bad:
        raise ValueError(f"checkpoint {path}: shapes differ from the model's ({'; '.join(bad[:5])})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (where the OS allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

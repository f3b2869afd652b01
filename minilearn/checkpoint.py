"""Checkpoints: a learner's weights, optimiser state, epoch and random number generators, written
atomically and read back checked, in files that cannot run code when loaded.

`Learner.save` / `Learner.load` / `Learner.rng_state` call the functions of a learner here. The
file is a `torch.save` of plain data:

    {"model": state_dict, "epoch": int, "rng": rng_state(), "opt": optimiser state_dict (with_opt)}
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pickle
import random
import secrets
import signal
import socket
import stat
import threading
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import torch

from minilearn.distributed import distrib_barrier, is_rank0


# ---------------------------------------------------------------- a learner's checkpoints
def checkpoint_path(learn, name: str | Path) -> Path:
    """Where `save(name)` writes: `path/model_dir/<name>.pth` (`.pth` added unless the name ends
    with it, so `run1.best` gives `run1.best.pth`; an absolute name is kept)."""
    name = Path(name)
    name = name if name.name.endswith(".pth") else name.with_name(name.name + ".pth")
    return name if name.is_absolute() else learn.path / learn.model_dir / name


def save_learner(learn, name: str | Path, with_opt: bool = True) -> Path:
    """Write `learn`'s weights, optimiser state, epoch and RNG states to `checkpoint_path(name)`."""
    path = checkpoint_path(learn, name)
    if not is_rank0():  # under torch.distributed only rank 0 writes (every rank holds the same weights)
        distrib_barrier()
        return path
    state = {"model": learn.model.state_dict(), "epoch": learn.epoch, "rng": rng_state(learn.dls.loaders)}
    if with_opt and learn.opt is not None:
        state["opt"] = learn.opt.state_dict()
    save_checkpoint(state, path)
    distrib_barrier()  # every process may load it next (a no-op in a single process)
    return path


def load_learner_state(learn, name: str | Path, with_opt: bool = True, with_rng: bool = False, device=None,
                       strict: bool = True) -> None:
    """Put what `save_learner` wrote back into `learn`, checked in full before anything changes."""
    path = checkpoint_path(learn, name)
    ckpt = load_checkpoint(path, map_location="cpu")
    saved = ckpt.get("model")
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {path}: no model weights in it")
    check_weights_fit(learn.model, saved, path, strict)
    if learn.opt is None:  # as fastai's: after a load there is an optimiser, its state loaded or fresh
        learn.create_opt()
    opt_state = ckpt.get("opt") if with_opt else None
    if with_opt and opt_state is None:
        warnings.warn(f"checkpoint {path}: it holds no optimiser state (saved with with_opt=False?); the optimiser "
                      "starts afresh, so a resumed run will not continue exactly", stacklevel=3)
    if opt_state is not None:
        check_opt_state_fits(learn.opt, opt_state, path)
    rng = ckpt.get("rng") if with_rng else None
    if with_rng:
        check_rng_state(rng, learn.dls.loaders, path)
        epoch = ckpt.get("epoch", learn.epoch)
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"checkpoint {path}: its epoch is {epoch!r}, expected an int >= 0")
    # everything is checked: now change things
    if opt_state is not None:
        learn.opt.load_state_dict(opt_state)
    learn.model.load_state_dict(saved, strict=strict)
    if with_rng:
        set_rng_state(rng, learn.dls.loaders)
        learn.epoch = epoch
    learn.restored = {"opt": opt_state is not None, "rng": with_rng}  # what a resumed fit can count on
    if device is not None:
        learn.model.to(device)


def check_opt_state_fits(opt, state: dict, path) -> None:
    """Raise, naming the file, if an optimiser state dict does not fit `opt` (ours check without
    loading; a torch optimiser checks as it loads)."""
    check = getattr(opt, "_check_state_dict", None)
    if check is None:
        return
    try:
        check(state)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: its optimiser state does not fit: {e}") from None


def warn_if_inexact_resume(learn, start_epoch: int) -> None:
    """A fit resumed at `start_epoch` continues a run exactly only from a checkpoint's optimiser
    state and RNGs (`learn.load(name, with_rng=True)`); say what is missing."""
    restored = learn.restored or {}
    missing = [what for key, what in (("opt", "optimiser state"), ("rng", "random number generators"))
               if not restored.get(key)]
    if missing:
        warnings.warn(f"fit: resuming at start_epoch={start_epoch} without the checkpoint's {' or '.join(missing)} "
                      "(learn.load(name, with_rng=True) from a checkpoint saved with its optimiser), so the run "
                      "will not continue as it would have", stacklevel=3)


# ---------------------------------------------------------------- random number generators
def rng_state(loaders=()) -> dict:
    """The random number generators: torch's (CPU and CUDA), Python's, and each loader's."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else [],
        "python": random.getstate(),
        "loaders": [dl.generator.get_state() if getattr(dl, "generator", None) is not None else None
                    for dl in loaders],
    }


def check_rng_state(state, loaders, path) -> None:
    """Raise, naming the file, unless `state` is an `rng_state()` every generator here accepts
    (tried on throwaway generators, so nothing changes)."""
    def fail(why: str):
        raise ValueError(f"checkpoint {path}: its random number generator state {why}")
    if not isinstance(state, dict) or not {"torch", "python", "loaders"} <= set(state):
        fail("is missing or incomplete (saved without it?); load with with_rng=False")
    try:
        torch.Generator().set_state(state["torch"].cpu())
        random.Random().setstate(state["python"])
    except Exception as e:
        fail(f"is not valid ({type(e).__name__}: {e})")
    if not isinstance(state["loaders"], list) or len(state["loaders"]) != len(list(loaders)):
        fail(f"is for {len(state['loaders']) if isinstance(state['loaders'], list) else '?'} loader(s), "
             f"the DataLoaders have {len(list(loaders))}")
    for i, (dl, s) in enumerate(zip(loaders, state["loaders"])):
        if s is not None and getattr(dl, "generator", None) is not None:
            try:
                torch.Generator().set_state(s.cpu())
            except Exception as e:
                fail(f"for loader {i} is not valid ({type(e).__name__}: {e})")


def set_rng_state(state: dict, loaders=()) -> None:
    """Put back what `rng_state()` returned."""
    torch.set_rng_state(state["torch"].cpu())
    # CUDA generators only where the same number of GPUs is there (a GPU run resumed on a CPU
    # keeps the CPU state, the one its data order and dropout on the CPU depend on)
    if state["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    random.setstate(state["python"])
    for dl, s in zip(loaders, state["loaders"]):
        if s is not None:
            dl.generator.set_state(s.cpu())


# ---------------------------------------------------------------- files


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through `write(f)` so that a crash never leaves a half-written file.

    The bytes go to a temporary file beside `path`, which is flushed, synced to disk and then
    renamed over `path` in one step: readers see the old file or the new one, nothing between.
    The new file keeps the mode of the one it replaces, else gets a new file's mode under the
    process's umask (made by the system: the umask itself is never touched). An error says which
    file could not be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
        tmp, fd = _new_temp(path)
    except OSError as e:
        raise _naming(e, path) from e
    interrupted: list[int] = []
    try:
        with _noting_interrupts(interrupted), os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        _remove_stale_temps(path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if interrupted and not isinstance(e, KeyboardInterrupt):
            # Ctrl-C inside torch.save's C++ writer comes out as its RuntimeError: say what it was
            raise KeyboardInterrupt(f"interrupted while writing {path} (left as it was)") from e
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        raise
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def _noting_interrupts(interrupted: list):
    """Inside the block a SIGINT is noted in `interrupted` and then handled as before (Ctrl-C still
    stops the write at once); only in the main thread, where Python runs signal handlers."""
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None:  # another thread, or a handler not set from Python: leave it alone
        yield
        return

    def note(signum, frame):
        interrupted.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _new_temp(path: Path) -> tuple[str, int]:
    """A new file beside `path` for writing, created with mode 0o666 (the system applies the umask),
    named with this machine and process, so that one a killed process left can be recognised."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not make a temporary file beside {path}")


_HOST = socket.gethostname().replace(".", "-")


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of `path` that a process on this machine, killed while writing
    it, left behind (a SIGKILL runs no cleanup); those of live processes or other machines stay."""
    prefix = f".{path.name}.{_HOST}."
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0] if tmp.name.startswith(prefix) else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def _naming(e: OSError, path: Path) -> OSError:
    """`e` as an OSError of the same kind whose message names `path`."""
    named = type(e)(e.errno, e.strerror or str(e)) if e.errno is not None else type(e)(str(e))
    named.filename = str(path)
    return named


def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """`torch.save(obj)` to `path`, atomically, with a checksum of its tensors (checked on load)."""
    obj = {**obj, "checksum": tensor_checksum(obj)}
    return atomic_write(path, lambda f: torch.save(obj, f))


def tensor_checksum(obj) -> str:
    """A SHA-256 of every tensor in `obj` (nested dicts, lists, tuples), with where it sits, its
    dtype and shape: a flipped bit in any weight changes it."""
    digest = hashlib.sha256()

    def walk(o, where: str) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            digest.update(f"{where}:{t.dtype}:{tuple(t.shape)};".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            for k in sorted(o, key=repr):
                if k != "checksum" or where:
                    walk(o[k], f"{where}/{k!r}")
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{where}[{i}]")

    walk(obj, "")
    return digest.hexdigest()


def load_checkpoint(path: str | Path, map_location=None) -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`: tensors and plain data only.

    A file crafted to run code when unpickled is refused before anything runs; a truncated or
    corrupted file gives an error naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    _refuse_inflating(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"checkpoint {path}: refused to load, it holds objects other than tensors and plain data "
            f"(weights_only=True); only load files you trust with torch.load yourself") from e
    except (PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # a truncated, fuzzed or foreign file: whatever torch raises, say which file
        raise ValueError(f"checkpoint {path}: truncated or corrupted ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path}: expected a dict, got {type(obj).__name__}")
    saved = obj.pop("checksum", None)  # files written before checksums have none
    if saved is not None and saved != tensor_checksum(obj):
        raise ValueError(f"checkpoint {path}: its tensors do not match the checksum saved with them "
                         "(the file is damaged)")
    return obj


def _refuse_inflating(path: Path) -> None:
    """torch writes its archives uncompressed: one whose entries would inflate to much more than the
    file's size (a zip bomb, say 1 MB giving a 1 GiB tensor) is refused before any is read."""
    if not zipfile.is_zipfile(path):
        return  # torch's older format, or not a checkpoint: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: truncated or corrupted ({type(e).__name__}: {e})") from e
    if inflated > 2 * path.stat().st_size + (1 << 20):
        raise ValueError(f"checkpoint {path}: its contents would inflate to {inflated:,} bytes from a file of "
                         f"{path.stat().st_size:,}; torch's own files are not compressed, so this one is refused")


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

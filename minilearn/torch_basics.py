"""fastai's small helpers over torch, shared by several modules (fastai keeps them in `torch_core`).

`tensor`, `Module`, `to_device` / `to_cpu` / `to_np` / `to_detach`, `set_seed` / `no_random`,
`default_device`, `find_bs` and `kept_modes`, plus fastcore's `L` and `first` as they are.
This module is the bottom layer: it imports nothing else of minilearn but `checks`.
"""

from __future__ import annotations

import contextlib
import numbers
import random
from typing import Any, Callable, Iterator

import fastcore.xtras  # noqa: F401  importing it is what gives pathlib.Path its `ls()` (an `L` of paths), as fastai users have it
import torch
from fastcore.basics import first
from fastcore.foundation import L
from torch import Tensor, nn

from minilearn.checks import check_bool, check_device, check_int

try:
    import numpy as np
except ImportError:  # numpy is optional for torch; only arrays, images and numpy's RNG need it
    np = None

__all__ = [
    "L", "first", "tensor", "Module", "to_device", "to_cpu", "to_np", "to_detach",
    "set_seed", "no_random", "default_device", "find_bs", "kept_modes", "TensorBase", "TensorImage",
    "TensorMask", "cast",
]


# -- making tensors


def tensor(x: Any, *rest: Any, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
           requires_grad: bool = False, pin_memory: bool = False) -> Tensor:
    """A tensor from a number, a (nested) list or tuple, a numpy array, an image or a tensor, as
    fastai's `tensor`: several arguments make a 1-d tensor, and float64 becomes float32.

    Lists of ints give int64, of floats float32 (torch's defaults); a numpy array shares its
    memory when it can (`torch.as_tensor`), and uint16 arrays become float32 (as fastai's).
    Anything else numpy can turn into an array (a PIL image, a pandas Series) goes through
    `numpy.array`, so PIL is never imported here. A tensor comes back as it is unless `dtype` or
    `device` ask for a copy. float64 results become float32 unless `dtype` asked for float64.
    """
    check_bool("requires_grad", requires_grad)
    check_bool("pin_memory", pin_memory)
    if rest:
        x = (x, *rest)
    if isinstance(x, Tensor):
        res = x if dtype is None and device is None else x.to(device=device, dtype=dtype)
    elif isinstance(x, (tuple, list, numbers.Number)):
        try:
            res = torch.tensor(x, dtype=dtype, device=device)
        except ValueError as e:  # ragged lists, strings
            raise ValueError(f"x: cannot make a tensor of this {type(x).__name__}: {e}") from e
        except (TypeError, RuntimeError) as e:  # items torch cannot read, such as None
            raise TypeError(f"x: cannot make a tensor of this {type(x).__name__}: {e}") from e
    else:
        res = torch.as_tensor(_as_array(x), dtype=dtype, device=device)
    if res.dtype is torch.float64 and dtype is None:
        res = res.float()
    if requires_grad:
        res.requires_grad_()
    if pin_memory:
        res = res.pin_memory()
    return res


def _as_array(x: Any):
    """`x` as a numpy array of numbers or bools that torch can take, else a TypeError naming `x`."""
    want = "a number, a (nested) list/tuple of numbers, a tensor, a numpy array or an image"
    if np is None:
        raise TypeError(f"x: expected {want}; a {type(x).__name__} needs numpy, which is not installed")
    # np.array copies (so a read-only buffer such as a PIL image's gives a writable array);
    # an ndarray is used as it is, so the tensor shares its memory as torch.as_tensor does
    arr = x if isinstance(x, np.ndarray) else np.array(x)
    if arr.dtype.kind not in "biufc":  # bool, int, uint, float, complex: what torch has
        raise TypeError(f"x: expected {want}, got {type(x).__name__} (as an array of {arr.dtype})")
    if arr.dtype == np.uint16:  # fastai's choice: 16-bit images (and counts) become float32
        arr = arr.astype(np.float32)
    return arr


class TensorBase(Tensor):
    """fastai's base for tensors that say what they hold (`TensorImage`, `TensorMask`). Here they
    are plain subclasses: torch's operations keep the type, and nothing in minilearn dispatches on
    it, so they only label data (and `show_image` draws them as any tensor)."""

    def __new__(cls, x: Any) -> "TensorBase":
        return torch.as_tensor(x).as_subclass(cls)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        # two different labels mix (an image times a mask): the result takes the first one's type
        types = tuple(Tensor if issubclass(t, TensorBase) else t for t in types)
        return super().__torch_function__(func, types, args, kwargs)


class TensorImage(TensorBase):
    """A tensor holding an image, (C, H, W) or a batch of them (fastai's name)."""


class TensorMask(TensorBase):
    """A tensor holding a segmentation mask: class indices per pixel (fastai's name)."""


def cast(x: Any, typ: type) -> Any:
    """`x` as a `typ`: a tensor becomes that subclass sharing its data (fastai's `cast`); anything
    else is passed to `typ`."""
    if isinstance(x, Tensor) and isinstance(typ, type) and issubclass(typ, Tensor):
        return x.as_subclass(typ)
    return typ(x)


class Module(nn.Module):
    """`nn.Module` whose subclasses need not call `super().__init__()` (fastai's `Module`).

    fastai does this with a metaclass; here `__new__` is enough: it runs `nn.Module.__init__` on
    the new object before Python calls the subclass's `__init__`, so the tables for parameters,
    buffers and submodules exist when that `__init__` assigns layers. A subclass that still
    calls `super().__init__()` reaches `Module.__init__`, which does nothing, so layers it
    assigned before the call are kept. Copies and unpickling go through `__new__` too and then
    put the saved state over the fresh tables.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Module:
        self = super().__new__(cls)  # the arguments are the subclass __init__'s, not ours
        nn.Module.__init__(self)
        return self

    def __init__(self) -> None:
        """Nothing left to do: `__new__` has already set up the `nn.Module`."""


# -- moving, detaching and converting batches (tensors inside tuples, lists, dicts, L)


def _apply(func: Callable[[Tensor], Any], b: Any) -> Any:
    """`func` applied to every tensor in `b`, rebuilding its tuples (namedtuples too), lists,
    dicts and `L`s; anything else passes through as it is."""
    if isinstance(b, Tensor):
        return func(b)
    if isinstance(b, tuple):
        out = [_apply(func, o) for o in b]
        # namedtuples take their fields as positional arguments, plain tuples take one iterable
        return type(b)(*out) if hasattr(b, "_fields") else type(b)(out)
    if isinstance(b, list):
        return [_apply(func, o) for o in b]
    if isinstance(b, dict):
        return {k: _apply(func, v) for k, v in b.items()}
    if isinstance(b, L):
        return L([_apply(func, o) for o in b])
    return b


def _move(b: Any, device: torch.device, non_blocking: bool) -> Any:
    """What `to_device` does once the device is checked (the DataLoader calls it per batch)."""
    return _apply(lambda t: t.to(device, non_blocking=non_blocking), b)


def _non_blocking(device: torch.device) -> bool:
    """Whether copies to `device` may be asynchronous."""
    # A non-blocking copy *to the CPU* can be read before it has landed, so only copies towards
    # an accelerator (which orders them on its stream) are made asynchronous.
    return device.type != "cpu"


def to_device(b: Any, device: torch.device | str | None = None) -> Any:
    """Move a tensor, or the tensors in tuples/lists/dicts (recursively), to `device`; others pass through.

    Unlike fastai's, where None means `default_device()`, `device=None` returns `b` unchanged:
    the Learner calls it whether or not a device was chosen. Copies are non-blocking only
    towards an accelerator, never to the CPU (a copy not yet landed could be read).
    """
    device = check_device("device", device)
    if device is None:
        return b
    return _move(b, device, _non_blocking(device))


def to_cpu(b: Any) -> Any:
    """The tensors in `b` (recursively) on the CPU, to read or save them."""
    return to_device(b, "cpu")


def to_np(x: Any) -> Any:
    """The tensors in `x` (recursively) as numpy arrays, detached and on the CPU; others pass through."""
    return _apply(lambda t: t.detach().cpu().numpy(), x)


def to_detach(b: Any, cpu: bool = True, gather: bool = True) -> Any:
    """The tensors in `b` (recursively) detached from the graph, on the CPU when `cpu`, so that
    keeping them keeps no graph or GPU memory alive; with `gather`, under several processes,
    each is every process's copy concatenated (a 0-d one, such as a loss, averaged)."""
    check_bool("cpu", cpu)
    check_bool("gather", gather)
    gather = gather and torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1

    def detach(t: Tensor) -> Tensor:
        t = t.detach()
        if gather:
            t = _gather(t)
        return t.cpu() if cpu else t

    return _apply(detach, b)


def _gather(t: Tensor) -> Tensor:
    """Every process's `t` joined along dim 0 in rank order; a 0-d `t` is averaged instead."""
    # imported here: minilearn.distributed imports minilearn.data, which imports this module
    from minilearn.distributed import all_gather_cat

    if t.ndim == 0:
        g = all_gather_cat([t[None]])
        return g.mean() if g.is_floating_point() else g.float().mean()
    return all_gather_cat([t])


# -- random number generators

_SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


def set_seed(s: int, reproducible: bool = False) -> None:
    """Seed torch (CPU and every GPU), Python's `random` and numpy (when installed) with `s`,
    so a run draws the same numbers again; `reproducible` also makes cuDNN pick deterministic
    kernels (slower: no benchmarking)."""
    s = check_int("s", s, *_SEED_RANGE)
    check_bool("reproducible", reproducible)
    torch.manual_seed(s)
    torch.cuda.manual_seed_all(s)  # done when CUDA starts, if it has not yet
    if np is not None:
        np.random.seed(s % (2**32 - 1))  # numpy takes 32-bit seeds; fastai's modulus, for the same draws
    random.seed(s)
    if reproducible:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def no_random(seed: int = 42, reproducible: bool = True) -> Iterator[None]:
    """Inside the block the generators are seeded with `seed` (see `set_seed`); on leaving,
    error or not, torch's, Python's and numpy's generators and the cuDNN flags are as they were,
    so the block does not shift the random numbers drawn after it.

    CUDA's generators are saved and put back when CUDA has started. When it has not, its
    generators do not exist yet; torch queues a seed for them instead, and on leaving the queued
    seed is the outer one again (the CPU generator's, which is what `torch.manual_seed` queues);
    if CUDA starts inside the block, its generators keep the block's seeding.
    """
    check_int("seed", seed, *_SEED_RANGE)
    check_bool("reproducible", reproducible)
    cuda = torch.cuda.is_initialized()
    saved_torch = torch.get_rng_state()
    saved_seed = torch.initial_seed()
    saved_cuda = torch.cuda.get_rng_state_all() if cuda else None
    saved_python = random.getstate()
    saved_numpy = np.random.get_state() if np is not None else None
    saved_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    set_seed(seed, reproducible)
    try:
        yield
    finally:
        torch.set_rng_state(saved_torch)
        if saved_cuda is not None:
            torch.cuda.set_rng_state_all(saved_cuda)
        elif not torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(saved_seed)  # replaces the seed set_seed queued for CUDA's start
        random.setstate(saved_python)
        if saved_numpy is not None:
            np.random.set_state(saved_numpy)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved_cudnn


# -- devices and batches


def default_device(use: bool | None | int = -1) -> torch.device:
    """The device to train on, as fastai's: the current GPU when `use` is -1, None or True and
    CUDA (or Apple's MPS) is available, else the CPU; `use=False` always gives the CPU.

    Unlike fastai's, `use` is not remembered for later calls: there is no global setting.
    """
    if use is not None and use not in (-1, True, False):
        raise ValueError(f"use: expected -1 (the default), None, True or False, got {use!r}")
    if use is not None and not use:  # False (or 0)
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if torch.backends.mps.is_available():
        return torch.device("mps", 0)
    return torch.device("cpu")


def find_bs(b: Any) -> int:
    """How many items batch `b` holds, to weight per-batch values: the first dim of the first
    tensor (or array) found, depth first, in `b` or its tuples/lists/dicts (plain values such as
    names are skipped); a list of plain values holds that many, and an empty batch counts 1."""
    if hasattr(b, "shape") and not isinstance(b, (tuple, list, dict)):
        if len(b.shape) == 0:
            raise ValueError("b: a 0-d tensor has no batch dimension to count")
        return int(b.shape[0])
    if isinstance(b, dict):
        items = list(b.values())
    elif isinstance(b, (tuple, list, L)):
        items = b
    else:
        raise TypeError(f"b: expected a tensor, or tuples/lists/dicts holding tensors, got {type(b).__name__}")
    for o in items:
        if hasattr(o, "shape") or isinstance(o, (tuple, list, dict, L)):
            return find_bs(o)
    return len(items) if len(items) else 1


@contextlib.contextmanager
def kept_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model may switch between train and eval mode; on leaving, error or
    not, every module is back in the mode it had (a frozen BatchNorm in eval stays in eval)."""
    modes = [m.training for m in model.modules()]
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode


def find_device(b) -> torch.device | None:
    """The device of the first tensor in `b` (a tensor, or tuples/lists/dicts of them), as
    fastai's `find_device`; None when it holds no tensor."""
    if isinstance(b, torch.Tensor):
        return b.device
    items = b.values() if isinstance(b, dict) else b if isinstance(b, (list, tuple)) else ()
    for item in items:
        device = find_device(item)
        if device is not None:
            return device
    return None


def replacing_yield(o, attr: str, val):
    """A generator that sets `o.<attr>` to `val`, yields once, and puts the old value back when it
    is resumed, closed or thrown into (fastai's): the body of a context manager, as in
    `@contextmanager def changed(self, v): return replacing_yield(self, "a", v)`, or
    `with contextlib.contextmanager(replacing_yield)(o, "a", v):`."""
    old = getattr(o, attr)
    setattr(o, attr, val)
    try:
        yield val
    finally:
        setattr(o, attr, old)

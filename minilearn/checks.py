"""Argument checks shared by every module: each names the argument and says what was expected.

They run before any work is done, so bad input fails at once with a message such as
`patience: expected an int >= 1, got 0` instead of deep inside the training loop.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import torch
from fastcore.foundation import L


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. It is also a ValueError: some checks raised ValueError for
    a wrong type before they were shared here, and code catching that keeps working."""


def check_bool(name: str, value: Any) -> bool:
    """`value` if it is True or False, else a TypeError naming `name`."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")
    return value


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int (numpy and 0-d tensor integers too, never a bool or 2.0), within [low, high]."""
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name}: expected an int{_bounds(low, high)}, got a bool ({value})")
    try:
        value = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(f"{name}: expected an int{_bounds(low, high)}, got {value!r} "
                                f"({type(value).__name__})") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}: expected an int{_bounds(low, high)}, got {value}")
    return value


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float: a finite real number (not a bool) in the interval from `low` to `high`,
    each end included unless `low_open` / `high_open`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        want = " and ".join(s for s in (lo, hi) if s)
        raise ValueError(f"{name}: expected a finite number{' ' + want if want else ''}, got {value}")
    return value


def check_callable(name: str, value: Any, what: str) -> Any:
    """`value` if it is callable, else a TypeError naming `name` and saying `what` is expected."""
    if not callable(value):
        raise TypeError(f"{name}: expected {what}, got {value!r}")
    return value


def check_device(name: str, device: Any) -> torch.device | None:
    """`device` as a `torch.device` (None stays None); a str such as 'cuda:0' or an index is accepted."""
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, (str, int)) and not isinstance(device, bool):
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"{name}: not a valid device, got {device!r}") from e
    raise TypeError(f"{name}: expected a torch.device, a str such as 'cuda' or None, got {type(device).__name__}")


def as_list(x) -> list:
    """An argument that takes one thing or several (`cbs=`, `metrics=`) as a list: None is [];
    a list, tuple or fastcore `L` gives its items."""
    if x is None:
        return []
    if isinstance(x, (list, tuple, L)):
        return list(x)
    return [x]


def check_lr(lr) -> None:
    """A learning rate: None (the default), a number >= 0, a list or numpy array (one per group), or a slice."""
    def number(v) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    one_per_group = isinstance(lr, (list, tuple)) or (type(lr).__module__ == "numpy" and getattr(lr, "ndim", 0) == 1)
    ends = [v for v in (lr.start, lr.stop) if v is not None] if isinstance(lr, slice) else []
    ok = lr is None or (isinstance(lr, slice) and all(number(v) for v in ends)) or number(lr) or \
        (one_per_group and all(number(v) for v in lr))
    if not ok:
        raise ValueError(f"lr: expected a finite number >= 0, a list with one per parameter group, or a slice of "
                         f"them; got {lr!r}")

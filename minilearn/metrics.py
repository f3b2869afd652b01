"""Metrics: plain functions `f(pred, targ) -> tensor` and the accumulators that make them exact.

A metric in a Learner is an object with `reset()`, `accumulate(learn)`, `value` and `name`
(fastai's protocol). `as_metric` turns what the user passes into one:
- a plain function becomes an `AvgMetric`: batch values weighted by batch size, so the result
  is exact over the whole validation set for any mean-decomposable metric (accuracy, mse, ...);
- an object with `update` / `compute` / `reset` (torchmetrics, torcheval) becomes a
  `StatefulMetric`, computed once over everything it was fed.
Accumulators keep their sums on the device: no host synchronisation per batch. Under
torch.distributed each accumulator combines itself across the processes (`sync()`), so every
rank reports the metric over the whole validation set.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from fastcore.basics import camel2snake
from torch import Tensor

from minilearn.checks import as_list, check_number
from minilearn.distributed import all_gather_cat, all_reduce_sum
from minilearn.torch_basics import find_bs


def _flat_targ(pred: Tensor, targ: Tensor) -> tuple[Tensor, Tensor]:
    """Class indices from `pred` (argmax over the last dim) and `targ`, both flat."""
    return pred.argmax(dim=-1).flatten(), targ.flatten()


def accuracy(pred: Tensor, targ: Tensor) -> Tensor:
    """Fraction of rows whose highest score is the target class."""
    p, t = _flat_targ(pred, targ)
    return (p == t).float().mean()


def error_rate(pred: Tensor, targ: Tensor) -> Tensor:
    """1 - accuracy."""
    return 1 - accuracy(pred, targ)


def accuracy_multi(pred: Tensor, targ: Tensor, thresh: float = 0.5, sigmoid: bool = True) -> Tensor:
    """Per-label accuracy for multi-label or single-output binary tasks (fastai's name)."""
    if sigmoid:
        pred = pred.sigmoid()
    return ((pred > thresh) == targ.bool()).float().mean()


def batch_accuracy(pred: Tensor, targ: Tensor) -> Tensor:
    """fastbook chapter 4's metric: sigmoid of one output per row, thresholded at 0.5."""
    return ((pred.sigmoid() > 0.5) == targ.bool()).float().mean()


def mnist_loss(pred: Tensor, targ: Tensor) -> Tensor:
    """fastbook chapter 4's loss: distance of the sigmoid output from the 0/1 target."""
    pred = pred.sigmoid()
    return torch.where(targ == 1, 1 - pred, pred).mean()


def mse(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean squared error."""
    return F.mse_loss(pred, targ.view_as(pred).to(pred.dtype))


def mae(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean absolute error."""
    return (pred - targ.view_as(pred)).abs().mean()


class Metric:
    """The protocol a Learner's metrics follow (fastai's): reset, accumulate(learn), value, name."""

    def reset(self) -> None:
        pass

    def accumulate(self, learn) -> None:
        pass

    @property
    def value(self):
        return None

    @property
    def name(self) -> str:
        return camel2snake(type(self).__name__)


class AvgMetric(Metric):
    """Mean of `func(pred, *yb)` over all items, each batch weighted by its size."""

    def __init__(self, func: Callable):
        if not callable(func):
            raise TypeError(f"func: expected a callable f(pred, targ) -> tensor, got {type(func).__name__}")
        self.func = func
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def batch_value(self, learn) -> Tensor:
        """This batch's value of the metric (a mean over its items)."""
        return torch.as_tensor(self.func(learn.pred, *learn.yb)).detach()

    def accumulate(self, learn) -> None:
        bs = find_bs(learn.yb)
        self.total = self.total + self.batch_value(learn).float() * bs  # float32 sums: fp16 would overflow
        self.count += bs

    def sync(self) -> None:
        """Every process's total and count added up (in float64), so each holds the whole pass's."""
        self.total, count = all_reduce_sum(self.total, self.count)
        self.count = int(round(count))

    @property
    def value(self):
        return self.total / self.count if self.count else None

    @property
    def name(self) -> str:
        return getattr(self.func, "__name__", type(self.func).__name__)


class AvgLoss(AvgMetric):
    """Mean of the loss over all items, each batch weighted by its size (the valid_loss column)."""

    def __init__(self):
        self.reset()

    def batch_value(self, learn) -> Tensor:
        return learn.loss if learn.loss.ndim == 0 else learn.loss.mean()

    @property
    def name(self) -> str:
        return "loss"


class AvgSmoothLoss(Metric):
    """Exponential moving average of the loss, debiased (the train_loss column).

    `val = beta * val + (1 - beta) * loss` at every batch, reported as `val / (1 - beta**count)`.
    """

    def __init__(self, beta: float = 0.98):
        self.beta = check_number("beta", beta, low=0, high=1, high_open=True)
        self.reset()

    def reset(self) -> None:
        self.count, self.val = 0, None

    def accumulate(self, learn) -> None:
        loss = (learn.loss if learn.loss.ndim == 0 else learn.loss.mean()).float()
        self.val = loss * (1 - self.beta) if self.val is None else torch.lerp(loss, self.val, self.beta)
        self.count += 1

    @property
    def value(self):
        return self.val / (1 - self.beta**self.count) if self.count else None

    @property
    def name(self) -> str:
        return "smooth_loss"


class AccumMetric(Metric):
    """Stores every prediction and target, and computes `func(preds, targs)` once at the end.

    For metrics that are not a mean over items (F1, AUC, RMSE...). `flatten` and `dim_argmax`
    prepare predictions as fastai's `AccumMetric` does.
    """

    def __init__(self, func: Callable, dim_argmax: int | None = None, activation: Callable | None = None,
                 flatten: bool = True, name: str | None = None):
        if not callable(func):
            raise TypeError(f"func: expected a callable f(preds, targs), got {type(func).__name__}")
        self.func, self.dim_argmax, self.activation, self.flatten = func, dim_argmax, activation, flatten
        self._name = name
        self.reset()

    def reset(self) -> None:
        self.preds, self.targs = [], []

    def accumulate(self, learn) -> None:
        pred = learn.pred.detach()
        if self.activation is not None:
            pred = self.activation(pred)
        if self.dim_argmax is not None:
            pred = pred.argmax(dim=self.dim_argmax)
        self.preds.append(pred)
        self.targs.append(learn.yb[0].detach())

    def sync(self) -> None:
        """Every process's predictions and targets gathered, in rank order, on every process."""
        preds, targs = all_gather_cat(self.preds), all_gather_cat(self.targs)
        self.preds, self.targs = ([preds], [targs]) if preds is not None else ([], [])

    @property
    def value(self):
        if not self.preds:
            return None
        preds, targs = torch.cat(self.preds), torch.cat(self.targs)
        if self.flatten:
            preds, targs = preds.flatten(), targs.flatten()
        return self.func(preds, targs)

    @property
    def name(self) -> str:
        return self._name or getattr(self.func, "__name__", type(self.func).__name__)


class StatefulMetric(Metric):
    """Adapter for metric objects with `update(pred, targ)`, `compute()`, `reset()` (torchmetrics).

    The wrapped object is moved to the predictions' device on first use when it has `.to`.
    """

    def __init__(self, metric, name: str | None = None):
        for attr in ("update", "compute", "reset"):
            if not callable(getattr(metric, attr, None)):
                raise TypeError(f"metric: expected an object with update/compute/reset, missing {attr!r}")
        self.metric = metric
        self._name = name
        self._device = None

    def reset(self) -> None:
        self.metric.reset()

    def accumulate(self, learn) -> None:
        pred, targ = learn.pred.detach(), learn.yb[0].detach()
        if self._device != pred.device and hasattr(self.metric, "to"):
            self.metric = self.metric.to(pred.device)
            self._device = pred.device
        self.metric.update(pred, targ)

    def sync(self) -> None:
        """torchmetrics gathers its states across processes in `compute()`; other objects cannot."""
        if not getattr(self.metric, "sync_on_compute", False):
            _warn_cannot_sync(self.name)

    @property
    def value(self):
        return self.metric.compute()

    @property
    def name(self) -> str:
        return self._name or getattr(self.metric, "name", None) or camel2snake(type(self.metric).__name__)


_warned: set[str] = set()


def _warn_cannot_sync(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"metric {name!r}: minilearn cannot combine its state across processes, so each "
                      "rank reports its own share of the data; use a function f(pred, targ), AccumMetric "
                      "or a torchmetrics metric", RuntimeWarning, stacklevel=3)


def sync_metric(m) -> None:
    """Under torch.distributed: make `m` hold the whole pass on every process through its own
    `sync()`, or warn (once per name) that it keeps this process's share."""
    sync = getattr(m, "sync", None)
    if callable(sync):
        sync()
    else:
        _warn_cannot_sync(m.name)


class ValueMetric(Metric):
    """A column whose value is `func()` at the end of each validation: a number computed elsewhere
    (a callback's), shown and tracked as a metric, under `metric_name` or the function's name."""

    def __init__(self, func: Callable, metric_name: str | None = None):
        if not callable(func):
            raise TypeError(f"func: expected a callable func() -> number, got {type(func).__name__}")
        self.func, self.metric_name = func, metric_name

    @property
    def value(self):
        return self.func()

    @property
    def name(self) -> str:
        return self.metric_name or getattr(self.func, "__name__", type(self.func).__name__)


def as_metric(m) -> Metric:
    """Turn what a user passes as a metric into an object following the `Metric` protocol."""
    if all(callable(getattr(m, a, None)) for a in ("reset", "accumulate")) and hasattr(m, "name"):
        return m  # already a Metric (ours, or a fastai-style one)
    if all(callable(getattr(m, a, None)) for a in ("update", "compute", "reset")):
        return StatefulMetric(m)
    if callable(m):
        return AvgMetric(m)
    raise TypeError(
        f"metrics: expected a function f(pred, targ) -> tensor or an object with "
        f"update/compute/reset, got {type(m).__name__}")


def as_metrics(metrics) -> list[Metric]:
    """A Learner's `metrics=` (one or a list) as Metric objects, with different names: they are
    looked up by name (the table's columns, trackers' monitors), never by position."""
    out = [as_metric(m) for m in as_list(metrics)]
    seen = set()
    for n in (m.name for m in out):
        if n in seen:
            raise ValueError(f"metrics: two metrics are named {n!r}; metrics are looked up by name, so name one: "
                             f"AvgMetric(f) takes its function's __name__, StatefulMetric(m, name=...) any name")
        seen.add(n)
    return out


def to_float(v, name: str = "metric") -> float | None:
    """A metric value as a Python float (one host sync), or None when there is no value."""
    if v is None:
        return None
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name}: a metric must give one number, got a tensor of shape {tuple(v.shape)}")
        return v.detach().float().item()
    try:
        return float(v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: a metric must give one number, got {type(v).__name__}") from e

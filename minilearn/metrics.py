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

import enum
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from fastcore.basics import camel2snake
from torch import Tensor

from minilearn.checks import as_list, check_number
from minilearn.distributed import all_gather_cat, all_reduce_sum
from minilearn.torch_basics import find_bs


def flatten_check(pred: Tensor, targ: Tensor) -> tuple[Tensor, Tensor]:
    """`pred` and `targ` flattened, after checking they hold as many numbers (fastai's): an (N, 1)
    prediction against (N,) targets is fine, (N, 10) against (N,) is an error naming both shapes."""
    if pred.numel() != targ.numel():
        raise ValueError(f"pred and targ: expected as many numbers in each, got predictions of shape "
                         f"{tuple(pred.shape)} and targets of shape {tuple(targ.shape)}")
    return pred.flatten(), targ.flatten()


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


def top_k_accuracy(pred: Tensor, targ: Tensor, k: int = 5, axis: int = -1) -> Tensor:
    """Fraction of rows whose target class is among the `k` highest scores (along `axis`)."""
    top = pred.topk(k=k, dim=axis)[1]
    return (top == targ.unsqueeze(axis)).any(dim=axis).float().mean()


def accuracy_multi(pred: Tensor, targ: Tensor, thresh: float = 0.5, sigmoid: bool = True) -> Tensor:
    """Per-label accuracy for multi-label or single-output binary tasks (fastai's name)."""
    pred, targ = flatten_check(pred, targ)
    if sigmoid:
        pred = pred.sigmoid()
    return ((pred > thresh) == targ.bool()).float().mean()


def _same_shape(name: str, pred: Tensor, targ: Tensor) -> None:
    """`pred` and `targ` compared element by element must have one shape: (N, 1) against (N,)
    would broadcast to (N, N) and train on nonsense without a word."""
    if pred.shape == targ.shape:
        return
    msg = f"{name}: pred and targ must have the same shape, got pred {tuple(pred.shape)} and targ {tuple(targ.shape)}"
    try:
        msg += f", which would broadcast to {tuple(torch.broadcast_shapes(pred.shape, targ.shape))}"
    except RuntimeError:
        pass
    if pred.ndim == targ.ndim + 1 and pred.shape[-1] == 1:
        msg += f"; give targets of shape {tuple(pred.shape)} (y.unsqueeze(1), as fastbook does)"
    raise ValueError(msg)


def batch_accuracy(pred: Tensor, targ: Tensor) -> Tensor:
    """fastbook chapter 4's metric: sigmoid of one output per row, thresholded at 0.5.
    `pred` and `targ` must have the same shape (the book's: (N, 1) both)."""
    _same_shape("batch_accuracy", pred, targ)
    return ((pred.sigmoid() > 0.5) == targ.bool()).float().mean()


def mnist_loss(pred: Tensor, targ: Tensor) -> Tensor:
    """fastbook chapter 4's loss: distance of the sigmoid output from the 0/1 target.
    `pred` and `targ` must have the same shape (the book's: (N, 1) both)."""
    _same_shape("mnist_loss", pred, targ)
    pred = pred.sigmoid()
    return torch.where(targ == 1, 1 - pred, pred).mean()


def mse(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean squared error."""
    pred, targ = flatten_check(pred, targ)
    return F.mse_loss(pred, targ.to(pred.dtype))


def mae(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean absolute error."""
    pred, targ = flatten_check(pred, targ)
    return (pred - targ).abs().mean()


def msle(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean squared error of log(1 + x): for positive targets spanning orders of magnitude."""
    pred, targ = flatten_check(pred, targ)
    return F.mse_loss(torch.log1p(pred), torch.log1p(targ.to(pred.dtype)))


def _rmse(pred: Tensor, targ: Tensor) -> Tensor:
    return torch.sqrt(mse(pred, targ))


def _exp_rmspe(pred: Tensor, targ: Tensor) -> Tensor:
    pred, targ = flatten_check(pred, targ)
    pred, targ = torch.exp(pred), torch.exp(targ.to(pred.dtype))
    return torch.sqrt((((targ - pred) / targ) ** 2).mean())


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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


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
    """Exponential moving average of the loss, debiased (the train_loss column), as fastai's.

    `val = beta * val + (1 - beta) * loss` at every batch (starting from 0), reported as
    `value = val / (1 - beta**count)`. `accumulate(learn)` takes a batch's loss where it is (no
    host sync); `add(losses)` takes numbers already on the host, as the Recorder feeds it once an
    epoch, and returns the smoothed value after each.
    """

    def __init__(self, beta: float = 0.98):
        self.beta = check_number("beta", beta, low=0, high=1, high_open=True)
        self.reset()

    def reset(self) -> None:
        self.count, self.val = 0, torch.tensor(0.0)
        self.host_val: float | None = 0.0  # `val` in full precision, as `add` left it (None: `val` rules)

    def accumulate(self, learn) -> None:
        loss = (learn.loss if learn.loss.ndim == 0 else learn.loss.mean()).detach().float()
        self.val = torch.lerp(loss, self.val.to(loss.device), self.beta)
        self.count += 1
        self.host_val = None

    def add(self, losses: list[float]) -> list[float]:
        """Smooth these losses (floats) on from the current state; the debiased value after each.
        It goes on from the full-precision value the last `add` reached, so the result does not
        depend on how the losses were split into calls."""
        val = self.host_val if self.host_val is not None else float(self.val)
        beta, out = self.beta, []
        for loss in losses:
            val = beta * val + (1 - beta) * loss
            self.count += 1
            out.append(val / (1 - beta**self.count))
        self.val, self.host_val = torch.tensor(val), val
        return out

    @property
    def value(self):
        return self.val / (1 - self.beta**self.count) if self.count else None

    @property
    def name(self) -> str:
        return "smooth_loss"


class Perplexity(AvgLoss):
    """exp of the mean loss over the items: the perplexity of a language model's cross-entropy."""

    @property
    def value(self):
        return torch.exp(torch.as_tensor(self.total / self.count)) if self.count else None

    @property
    def name(self) -> str:
        return "perplexity"


perplexity = Perplexity()


class LossMetric(AvgMetric):
    """A column holding `learn.loss_func.<attr>` (a component of the loss that the loss function
    keeps, as fastai's `LossMetric`), averaged over the items like the loss itself."""

    def __init__(self, attr: str, nm: str | None = None):
        if not isinstance(attr, str) or not attr:
            raise TypeError(f"attr: expected the name of an attribute of the loss function, got {attr!r}")
        self.attr, self.nm = attr, nm
        self.reset()

    def batch_value(self, learn) -> Tensor:
        if not hasattr(learn.loss_func, self.attr):
            raise AttributeError(f"LossMetric {self.name!r}: the loss function ({type(learn.loss_func).__name__}) "
                                 f"has no attribute {self.attr!r} to report")
        return torch.as_tensor(getattr(learn.loss_func, self.attr)).detach()

    @property
    def name(self) -> str:
        return self.nm if self.nm is not None else self.attr


def LossMetrics(attrs, nms=None) -> list[LossMetric]:
    """One `LossMetric` per attribute of the loss function: `attrs` and their column names `nms`
    as lists or comma-separated strings (fastai's)."""
    def names(x):
        return [a.strip() for a in x.split(",")] if isinstance(x, str) else list(x)
    attrs = names(attrs)
    nms = names(nms) if nms is not None else [None] * len(attrs)
    if len(nms) != len(attrs):
        raise ValueError(f"nms: expected one name per attribute ({len(attrs)}), got {len(nms)}")
    return [LossMetric(a, n) for a, n in zip(attrs, nms)]


class ActivationType(enum.Enum):
    """What `AccumMetric` applies to the predictions first (fastai's)."""
    No = "no"
    Sigmoid = "sigmoid"
    Softmax = "softmax"
    BinarySoftmax = "binary_softmax"  # softmax, then the last class's probability


class AccumMetric(Metric):
    """Keeps every prediction and target, and computes `func(preds, targs)` once over all of them.

    For metrics that are not a mean over items (F1, AUC, RMSE, ...). Each batch's prediction is
    prepared as fastai's `AccumMetric` prepares it, in this order:
    - `activation`: an `ActivationType` (softmax along `dim_argmax`, or -1 when it is None) or any
      function of the predictions;
    - `dim_argmax`: the argmax along that dimension, when no activation is given (fastai's rule);
    - `thresh`: `pred >= thresh`, for scores turned into 0/1 decisions;
    - `flatten`: predictions and targets flattened (checked to hold as many numbers).
    At the end `func(preds, targs, **kwargs)` is called on everything, as numpy arrays with `to_np`
    and with the arguments swapped with `invert_arg` (scikit-learn's `f(y_true, y_pred)`).
    Under torch.distributed every rank's predictions are gathered first, so the value is the
    metric over the whole validation set on every rank.
    """

    def __init__(self, func: Callable, dim_argmax: int | None = None, activation=ActivationType.No,
                 thresh: float | None = None, to_np: bool = False, invert_arg: bool = False, flatten: bool = True,
                 name: str | None = None, **kwargs):
        if not callable(func):
            raise TypeError(f"func: expected a callable f(preds, targs), got {type(func).__name__}")
        if activation is None:
            activation = ActivationType.No
        if not isinstance(activation, ActivationType) and not callable(activation):
            raise TypeError(f"activation: expected an ActivationType or a function, got {type(activation).__name__}")
        if thresh is not None:
            check_number("thresh", thresh)
        self.func, self.dim_argmax, self.activation, self.thresh = func, dim_argmax, activation, thresh
        self.to_np, self.invert_arg, self.flatten, self.kwargs = to_np, invert_arg, flatten, kwargs
        self._name = name
        self.reset()

    def reset(self) -> None:
        self.preds, self.targs = [], []

    def prepare(self, pred: Tensor) -> Tensor:
        """A batch's predictions after the activation, argmax and threshold."""
        act = self.activation
        if act in (ActivationType.Softmax, ActivationType.BinarySoftmax):
            pred = F.softmax(pred, dim=-1 if self.dim_argmax is None else self.dim_argmax)
            if act is ActivationType.BinarySoftmax:
                pred = pred[:, -1]
        elif act is ActivationType.Sigmoid:
            pred = torch.sigmoid(pred)
        elif callable(act):
            pred = act(pred)
        elif self.dim_argmax is not None:
            pred = pred.argmax(dim=self.dim_argmax)
        if self.thresh is not None:
            pred = pred >= self.thresh
        return pred

    def accumulate(self, learn) -> None:
        self.accum_values(self.prepare(learn.pred.detach()), learn.yb[0].detach())

    def accum_values(self, preds: Tensor, targs: Tensor) -> None:
        """Keep one batch's prepared predictions and its targets."""
        if self.flatten:
            preds, targs = flatten_check(preds, targs)
        self.preds.append(preds.detach())
        self.targs.append(targs.detach())

    def __call__(self, preds: Tensor, targs: Tensor):
        """The metric of these (already prepared) predictions alone, as fastai's."""
        self.reset()
        self.accum_values(preds, targs)
        return self.value

    def sync(self) -> None:
        """Every process's predictions and targets gathered, in rank order, on every process."""
        preds, targs = all_gather_cat(self.preds), all_gather_cat(self.targs)
        self.preds, self.targs = ([preds], [targs]) if preds is not None else ([], [])

    @property
    def value(self):
        if not self.preds:
            return None
        preds, targs = torch.cat(self.preds), torch.cat(self.targs)
        if self.to_np:
            preds, targs = preds.cpu().numpy(), targs.cpu().numpy()
        return self.func(targs, preds, **self.kwargs) if self.invert_arg else self.func(preds, targs, **self.kwargs)

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        func = getattr(self.func, "func", self.func)  # a functools.partial: its function's name
        return getattr(func, "__name__", type(func).__name__)


def skm_to_fastai(func: Callable, is_class: bool = True, thresh: float | None = None, axis: int = -1,
                  activation=None, **kwargs) -> AccumMetric:
    """A scikit-learn metric `func(y_true, y_pred, **kwargs)` as an `AccumMetric` (fastai's rule):
    a classification metric gets class indices (argmax along `axis`) or, with `thresh`, sigmoid
    scores thresholded; `activation` overrides the sigmoid; `is_class=False` passes the outputs
    as they are."""
    if activation is None:
        activation = ActivationType.Sigmoid if (is_class and thresh is not None) else ActivationType.No
    dim_argmax = axis if is_class and thresh is None else None
    return AccumMetric(func, dim_argmax=dim_argmax, activation=activation, thresh=thresh, to_np=True,
                       invert_arg=True, **kwargs)


rmse = AccumMetric(_rmse, name="rmse")
exp_rmspe = AccumMetric(_exp_rmspe, name="exp_rmspe")


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

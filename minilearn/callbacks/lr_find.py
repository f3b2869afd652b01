"""The learning-rate finder: `LRFinder`, the suggestion functions, the plot, and `lr_find(learn)`.

`Learner.lr_find()` calls `lr_find` here. It trains briefly with an exponentially rising lr and
leaves no trace: weights, optimiser state, the loop's counters, the model's modes and every
random number generator are put back afterwards, and the callbacks that keep a run's record
(`sits_out` holding "lr_find": the Recorder, the table, trackers, loggers) sit it out.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections import namedtuple
from pathlib import Path
from typing import Callable, Sequence

from minilearn.callback import CancelFitException, CancelValidException
from minilearn.callbacks.schedule import ParamScheduler, SchedExp
from minilearn.checkpoint import rng_state, set_rng_state
from minilearn.checks import check_callable, check_int, check_number
from minilearn.distributed import is_rank0
from minilearn.metrics import AvgSmoothLoss
from minilearn.torch_basics import kept_modes


class LRFinder(ParamScheduler):
    """Raises the learning rate exponentially, batch by batch, recording the smoothed loss.

    Stops after `num_it` batches, or (with `stop_div`) once the smoothed loss passes 4 times
    the best seen or stops being finite. Validation is skipped. It keeps its own records
    (`lrs`, `losses`), so the Recorder's history is not touched.
    """

    def __init__(self, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True, beta: float = 0.98):
        check_int("num_it", num_it, low=1)
        check_number("start_lr", start_lr, low=0, low_open=True)  # an exponential from 0 never leaves it
        check_number("end_lr", end_lr, low=start_lr, low_open=True)
        super().__init__({"lr": SchedExp(start_lr, end_lr)})
        self.num_it, self.stop_div = max(num_it, 6), stop_div
        self.smoother = AvgSmoothLoss(beta)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.suggestions, self.points = None, []  # filled in by lr_find

    def before_fit(self) -> None:
        super().before_fit()
        self.smoother.reset()
        self.lrs, self.losses, self.best_loss = [], [], math.inf

    def before_batch(self) -> None:
        self.set_values(self.learn.train_iter / self.num_it)

    def after_batch(self) -> None:
        super().after_batch()
        self.smoother.accumulate(self.learn)
        loss = float(self.smoother.value)  # one host sync per batch: lr_find is short
        self.learn.smooth_loss = self.smoother.value
        self.lrs.append(self.learn.opt.hypers[-1]["lr"])
        self.losses.append(loss)
        self.best_loss = min(self.best_loss, loss)
        if self.stop_div and (not math.isfinite(loss) or loss > 4 * self.best_loss):
            raise CancelFitException()
        if self.learn.train_iter >= self.num_it:
            raise CancelFitException()

    def before_validate(self) -> None:
        raise CancelValidException()


# ---------------------------------------------------------------- LR suggestions
# Each takes the learning rates, smoothed losses and num_it of an lr_find and returns
# (suggested lr, (lr, loss) of the point to mark on the plot). fastai's four methods.

def valley(lrs: list[float], losses: list[float], num_it: int):
    """The lr two thirds down the longest run of decreasing loss (fastai's default)."""
    n = len(losses)
    run = [1] * n  # run[i]: length of the longest decreasing subsequence ending at i
    best_start, best_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
            if run[best_end] < run[i]:
                best_end, best_start = i, i - run[i]
    third = (best_end - best_start) / 3
    idx = best_start + int(third) + int(third / 2)
    return lrs[idx], (lrs[idx], losses[idx])


def minimum(lrs: list[float], losses: list[float], num_it: int):
    """A tenth of the lr where the loss was lowest."""
    i = min(range(len(losses)), key=losses.__getitem__)
    return lrs[i] / 10, (lrs[i], losses[i])


def steep(lrs: list[float], losses: list[float], num_it: int):
    """The lr where the loss fell fastest per step of log(lr)."""
    slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(lrs) - 1)]
    i = min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[i], (lrs[i], losses[i])


def slide(lrs: list[float], losses: list[float], num_it: int, lr_diff: int = 15, thresh: float = 0.005,
          adjust_value: float = 1.0):
    """Walk left from the end until the loss's slope is about the same `lr_diff` points apart."""
    n = len(losses)
    grad = [0.0] * n  # central differences, one-sided at the ends (as numpy.gradient)
    for i in range(n):
        lo, hi = max(i - 1, 0), min(i + 1, n - 1)
        grad[i] = (losses[hi] - losses[lo]) / (hi - lo) if hi > lo else 0.0
    r, l = n - 1, n - 1 - lr_diff
    found = lrs[max(l, 0)]
    while l >= 0 and abs(grad[r] - grad[l]) > thresh:
        found = lrs[l]
        r, l = r - 1, l - 1
    lr = found * adjust_value
    # the loss at `lr`, interpolated on log(lr), for the plot's marker
    logs = [math.log10(x) for x in lrs]
    k = min(max(bisect.bisect_left(logs, math.log10(lr)), 1), n - 1)
    t = (math.log10(lr) - logs[k - 1]) / (logs[k] - logs[k - 1]) if logs[k] != logs[k - 1] else 0.0
    return lr, (lr, losses[k - 1] + min(max(t, 0.0), 1.0) * (losses[k] - losses[k - 1]))


def suggest(lrs: list[float], losses: list[float], num_it: int, funcs: Sequence[Callable]):
    """Run the suggestion functions on an lr_find's records: a named tuple and the points to mark.

    As fastai, the first tenth and the last five points are left out, and so is everything from
    the first non-finite loss on.
    """
    lrs, losses = lrs[num_it // 10:-5], losses[num_it // 10:-5]
    for i, l in enumerate(losses):
        if not math.isfinite(l):
            lrs, losses = lrs[:i], losses[:i]
            break
    if len(losses) < 2:
        raise RuntimeError(
            "lr_find: too few finite losses to suggest a learning rate; raise num_it or lower start_lr")
    names = [getattr(f, "__name__", None) or getattr(getattr(f, "func", None), "__name__", "suggestion") for f in funcs]
    results = [f(lrs, losses, num_it) for f in funcs]
    SuggestedLRs = namedtuple("SuggestedLRs", names)
    return SuggestedLRs(*[r[0] for r in results]), [r[1] for r in results]


def plot_lr_find(lrs: list[float], losses: list[float], points=(), names=(), skip_end: int = 5):
    """Loss against learning rate on a log axis, with one marker per suggestion; a Figure."""
    from minilearn.plotting import new_figure

    fig, ax = new_figure()
    end = len(lrs) - skip_end if len(lrs) > skip_end else len(lrs)
    ax.plot(lrs[:end], losses[:end])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    for (lr, loss), name, color in zip(points, names, ("C1", "C2", "C3", "C4", "C5")):
        ax.plot(lr, loss, "o", color=color, label=f"{name}: {lr:.2e}")
    if points:
        ax.legend()
    return fig


# ---------------------------------------------------------------- on a learner
def lr_find(learn, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True, show_plot: bool = True,
            suggest_funcs=(valley,), plot_path: str | Path | None = None):
    """`Learner.lr_find`: a short fit under an `LRFinder`, then everything put back; the suggestions."""
    finder = LRFinder(start_lr, end_lr, num_it, stop_div)
    funcs = tuple(suggest_funcs) if isinstance(suggest_funcs, (list, tuple)) else (suggest_funcs,)
    for f in funcs:  # before the 100 steps, not after them
        check_callable("suggest_funcs", f, "suggestion functions such as valley, minimum, steep, slide")
    n_epoch = finder.num_it // len(learn.dls.train) + 1
    saved = _snapshot(learn)
    try:
        with learn.kept_state(), kept_modes(learn.model), \
                learn.removed_cbs([cb for cb in learn.cbs if "lr_find" in cb.sits_out]):
            learn.fit(n_epoch, cbs=finder)
    finally:
        _restore(learn, saved)
    learn.lr_finder = finder
    if funcs:
        finder.suggestions, finder.points = suggest(finder.lrs, finder.losses, finder.num_it, funcs)
    if show_plot or plot_path is not None:
        fig = plot_learner_lr_find(learn)
        if plot_path is not None and is_rank0():
            from minilearn.plotting import save_figure
            save_figure(fig, plot_path)
        if show_plot:
            from minilearn.plotting import show_once
            show_once(fig)
    return finder.suggestions


def plot_learner_lr_find(learn, skip_end: int = 5):
    """`Learner.plot_lr_find`: the last lr_find's curve with its suggestions; a Figure."""
    finder = getattr(learn, "lr_finder", None)
    if finder is None:
        raise RuntimeError("plot_lr_find: run learn.lr_find() first")
    names = finder.suggestions._fields if finder.suggestions is not None else ()
    return plot_lr_find(finder.lrs, finder.losses, finder.points, names, skip_end)


def _snapshot(learn) -> dict:
    """What a fit changes beyond the loop's state: weights, optimiser, random number generators."""
    np_rng = sys.modules["numpy"].random.get_state() if "numpy" in sys.modules else None
    return {
        "model": {k: v.detach().to("cpu", copy=True) for k, v in learn.model.state_dict().items()},
        "opt": learn.opt.state_dict() if learn.opt is not None else None,
        "rng": rng_state(learn.dls.loaders), "np_rng": np_rng,
    }


def _restore(learn, saved: dict) -> None:
    learn.model.load_state_dict(saved["model"])
    if saved["opt"] is None:
        learn.opt = None
    else:
        learn.opt.load_state_dict(saved["opt"])
    set_rng_state(saved["rng"], learn.dls.loaders)
    if saved["np_rng"] is not None:
        sys.modules["numpy"].random.set_state(saved["np_rng"])

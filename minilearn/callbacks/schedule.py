"""Hyper-parameter schedules, the ParamScheduler callback, and the learning-rate finder.

A schedule is a function of training progress `pos` in [0, 1] (fastai's): `SchedCos(1e-3, 1e-5)(pos)`.
Its `start` and `end` may be numbers or lists with one value per parameter group.
"""

from __future__ import annotations

import bisect
import math
from collections import namedtuple
from typing import Callable, Sequence

from minilearn.callback import Callback, CancelFitException, CancelValidException
from minilearn.metrics import AvgSmoothLoss


def _elementwise(f: Callable[[float, float], float], start, end):
    """Apply f to numbers, or pairwise to lists (one value per parameter group)."""
    if isinstance(start, (list, tuple)) or isinstance(end, (list, tuple)):
        n = len(start) if isinstance(start, (list, tuple)) else len(end)
        starts = list(start) if isinstance(start, (list, tuple)) else [start] * n
        ends = list(end) if isinstance(end, (list, tuple)) else [end] * n
        return [f(s, e) for s, e in zip(starts, ends)]
    return f(start, end)


class Scheduler:
    """A schedule from `start` (at pos 0) to `end` (at pos 1); subclasses define `interpolate`."""

    def __init__(self, start, end=None):
        self.start, self.end = start, start if end is None else end

    def __call__(self, pos: float):
        return _elementwise(lambda s, e: self.interpolate(s, e, pos), self.start, self.end)

    def interpolate(self, start: float, end: float, pos: float) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.start}, {self.end})"


class SchedLin(Scheduler):
    """Linear from start to end."""

    def interpolate(self, start, end, pos):
        return start + pos * (end - start)


class SchedCos(Scheduler):
    """Half a cosine from start to end: flat at both ends, steepest in the middle."""

    def interpolate(self, start, end, pos):
        return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


class SchedNo(Scheduler):
    """Constant at start."""

    def interpolate(self, start, end, pos):
        return start


class SchedExp(Scheduler):
    """Exponential from start to end (linear on a log scale); start and end must be > 0."""

    def __init__(self, start, end):
        for name, v in (("start", start), ("end", end)):
            if any(x <= 0 for x in (v if isinstance(v, (list, tuple)) else [v])):
                raise ValueError(f"{name}: SchedExp needs values > 0, got {v}")
        super().__init__(start, end)

    def interpolate(self, start, end, pos):
        return start * (end / start) ** pos


class SchedPoly(Scheduler):
    """Polynomial: start + (end - start) * pos**power."""

    def __init__(self, start, end, power: float):
        super().__init__(start, end)
        self.power = power

    def interpolate(self, start, end, pos):
        return start + (end - start) * pos**self.power


class CombinedSched:
    """Schedules run one after the other, each over its fraction `pcts[i]` of training."""

    def __init__(self, pcts: Sequence[float], scheds: Sequence[Callable]):
        if len(pcts) != len(scheds):
            raise ValueError(f"pcts: expected one fraction per schedule ({len(scheds)}), got {len(pcts)}")
        if any(p < 0 for p in pcts) or abs(sum(pcts) - 1) > 1e-6:
            raise ValueError(f"pcts: expected fractions >= 0 that add up to 1, got {list(pcts)}")
        self.scheds = list(scheds)
        self.bounds = [0.0]
        for p in pcts:
            self.bounds.append(self.bounds[-1] + p)

    def __call__(self, pos: float):
        if pos >= 1:
            return self.scheds[-1](1.0)
        # the last phase whose start is <= pos (a phase of length 0 is never chosen)
        i = min(bisect.bisect_right(self.bounds, pos) - 1, len(self.scheds) - 1)
        width = self.bounds[i + 1] - self.bounds[i]
        return self.scheds[i]((pos - self.bounds[i]) / width if width > 0 else 1.0)


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Callable]) -> CombinedSched:
    """Run `scheds[i]` over the fraction `pcts[i]` of training (fastai's `combine_scheds`)."""
    return CombinedSched(pcts, scheds)


def combined_cos(pct: float, start, middle, end) -> CombinedSched:
    """Cosine from start to middle over `pct` of training, then cosine from middle to end."""
    return combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])


class ParamScheduler(Callback):
    """Sets each scheduled hyper-parameter from training progress before every training batch.

    `scheds` maps a hyper-parameter name ('lr', 'mom', 'wd', ...) to a schedule. The values
    the optimiser used are recorded per batch in `hps` and, after the fit, `learn.recorder.hps`.
    """

    order = 60
    run_valid = False

    def __init__(self, scheds: dict[str, Callable]):
        if not isinstance(scheds, dict) or not all(callable(f) for f in scheds.values()):
            raise TypeError("scheds: expected a dict mapping hyper-parameter names to schedules")
        self.scheds = scheds
        self.hps: dict[str, list] = {}

    def before_fit(self) -> None:
        self.hps = {name: [] for name in self.scheds}

    def before_batch(self) -> None:
        self.set_values(self.learn.pct_train)

    def set_values(self, pos: float) -> None:
        for name, sched in self.scheds.items():
            self.learn.opt.set_hyper(name, sched(pos))

    def after_batch(self) -> None:
        for name in self.scheds:
            self.hps[name].append(self.learn.opt.hypers[-1][name])

    def after_fit(self) -> None:
        recorder = getattr(self.learn, "recorder", None)
        if recorder is not None:
            recorder.hps = self.hps


class LRFinder(ParamScheduler):
    """Raises the learning rate exponentially, batch by batch, recording the smoothed loss.

    Stops after `num_it` batches, or (with `stop_div`) once the smoothed loss passes 4 times
    the best seen or stops being finite. Validation is skipped. It keeps its own records
    (`lrs`, `losses`), so the Recorder's history is not touched.
    """

    def __init__(self, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True, beta: float = 0.98):
        if not isinstance(num_it, int) or num_it < 1:
            raise ValueError(f"num_it: expected an int >= 1, got {num_it!r}")
        super().__init__({"lr": SchedExp(start_lr, end_lr)})
        self.num_it, self.stop_div = max(num_it, 6), stop_div
        self.smoother = AvgSmoothLoss(beta)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.suggestions, self.points = None, []  # filled in by Learner.lr_find

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

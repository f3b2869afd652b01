"""Hyper-parameter schedules, the ParamScheduler callback, and the fits built on them:
`fit_one_cycle`, `fit_flat_cos`, `fit_sgdr` (`Learner.fit_one_cycle` & co call these).

A schedule is a function of training progress `pos` in [0, 1] (fastai's): `SchedCos(1e-3, 1e-5)(pos)`.
Its `start` and `end` may be numbers or lists with one value per parameter group.
"""

from __future__ import annotations

import bisect
import math
import struct
from typing import Callable, Sequence

from minilearn.callback import Callback
from minilearn.checks import as_list, check_bool, check_int, check_lr, check_number


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


def _f32(x: float) -> float:
    """`x` rounded to the nearest float32 (as a Python float)."""
    return struct.unpack("f", struct.pack("f", x))[0]


class CombinedSched:
    """Schedules run one after the other, each over its fraction `pcts[i]` of training.

    Where a position falls, and how far into its phase, is computed in float32, as fastai's
    `combine_scheds` does (its bounds are a float32 tensor): the same learning rate, to the last
    bit, at every batch, so a long run matches fastai's rather than drifting from it one rounding
    at a time. (Float32 operations are done in double and rounded back, which gives exactly the
    float32 results.)
    """

    def __init__(self, pcts: Sequence[float], scheds: Sequence[Callable]):
        if len(pcts) != len(scheds):
            raise ValueError(f"pcts: expected one fraction per schedule ({len(scheds)}), got {len(pcts)}")
        if any(p < 0 for p in pcts) or abs(sum(pcts) - 1) > 1e-6:
            raise ValueError(f"pcts: expected fractions >= 0 that add up to 1, got {list(pcts)}")
        self.scheds = list(scheds)
        self.bounds = [0.0]
        for p in pcts:  # a float32 running sum, as torch.cumsum of fastai's float32 tensor
            self.bounds.append(_f32(self.bounds[-1] + _f32(p)))

    def __call__(self, pos: float):
        pos = _f32(pos)
        # the last phase whose start is <= pos (a phase of length 0 is never chosen past its start)
        i = min(bisect.bisect_right(self.bounds, pos) - 1, len(self.scheds) - 1)
        width = _f32(self.bounds[i + 1] - self.bounds[i])
        return self.scheds[i](_f32(_f32(pos - self.bounds[i]) / width) if width > 0 else 1.0)


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
    A name the optimiser has no hyper-parameter for is an error at the fit's start (it would
    change nothing); `strict=False` adds it instead, as fastai does, which `fit_one_cycle` & co
    use so that their momentum schedule works on an optimiser without momentum.
    """

    order = 60
    run_valid = False

    def __init__(self, scheds: dict[str, Callable], strict: bool = True):
        if not isinstance(scheds, dict) or not all(callable(f) for f in scheds.values()):
            raise TypeError("scheds: expected a dict mapping hyper-parameter names to schedules")
        self.scheds = scheds
        self.strict = check_bool("strict", strict)  # a name the optimiser lacks: an error (False: added)
        self.hps: dict[str, list] = {}

    def before_fit(self) -> None:
        known = self.learn.opt.hypers[0] if self.learn.opt is not None and self.learn.opt.hypers else {}
        unknown = [name for name in self.scheds if name not in known]
        if self.strict and known and unknown:
            raise ValueError(f"scheds: the optimiser has no hyper-parameter {unknown} to schedule (it has "
                             f"{sorted(known)}), so nothing would change")
        self.hps = {name: [] for name in self.scheds}

    def before_batch(self) -> None:
        self.set_values(self.learn.pct_train)

    def state_dict(self) -> dict:
        """The values used so far (the schedules themselves are the fit's arguments, given again)."""
        return {"hps": {k: list(v) for k, v in self.hps.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.hps = {k: list(v) for k, v in state["hps"].items()}

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


# ---------------------------------------------------------------- fits on a schedule
# `Learner.fit_one_cycle(...)` & co call these with the learner: each sets the optimiser's lr,
# builds its schedules and runs one `fit` with a ParamScheduler for them.

def _lrs_after_setting(learn, lr):
    """Set the optimiser's lr (a number, list or slice) and read back one value per group."""
    check_lr(lr)
    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", learn.lr if lr is None else lr)
    lrs = [h["lr"] for h in learn.opt.hypers]
    return lrs if len(lrs) > 1 else lrs[0]


def _elementwise_div(x, d: float):
    """x / d for a number or a list of numbers (one per parameter group)."""
    return [v / d for v in x] if isinstance(x, list) else x / d


def _check_moms(moms) -> None:
    """Three momentums in [0, 1): start, middle, end (fastai's `moms`)."""
    if not isinstance(moms, (tuple, list)) or len(moms) != 3:
        raise ValueError(f"moms: expected three momentums (start, middle, end), got {moms!r}")
    for m in moms:
        check_number("moms", m, low=0, high=1, high_open=True)


def fit_one_cycle(learn, n_epoch: int, lr_max=None, div: float = 25.0, div_final: float = 1e5,
                  pct_start: float = 0.25, wd: float | None = None, moms=None, cbs=None,
                  reset_opt: bool = False, start_epoch: int = 0) -> None:
    """fastai's one-cycle policy: lr warms up from lr_max/div to lr_max over `pct_start`, then
    anneals to lr_max/div_final, both along cosines; momentum moves the opposite way."""
    check_number("div", div, low=0, low_open=True)
    check_number("div_final", div_final, low=0, low_open=True)
    check_number("pct_start", pct_start, low=0, high=1)
    if moms is not None:
        _check_moms(moms)
    if reset_opt:
        learn.opt = None
    lr_max = _lrs_after_setting(learn, lr_max)
    div_lr = _elementwise_div(lr_max, div)
    scheds = {"lr": combined_cos(pct_start, div_lr, lr_max, _elementwise_div(lr_max, div_final)),
              "mom": combined_cos(pct_start, *(learn.moms if moms is None else moms))}
    learn.fit(n_epoch, wd=wd, cbs=[ParamScheduler(scheds, strict=False)] + as_list(cbs), start_epoch=start_epoch)


def fit_flat_cos(learn, n_epoch: int, lr=None, div_final: float = 1e5, pct_start: float = 0.75,
                 wd: float | None = None, cbs=None, reset_opt: bool = False, start_epoch: int = 0) -> None:
    """Constant lr for `pct_start` of training, then a cosine down to lr/div_final."""
    if reset_opt:
        learn.opt = None
    lr = _lrs_after_setting(learn, lr)
    scheds = {"lr": combined_cos(pct_start, lr, lr, _elementwise_div(lr, div_final))}
    learn.fit(n_epoch, wd=wd, cbs=[ParamScheduler(scheds, strict=False)] + as_list(cbs), start_epoch=start_epoch)


def fit_sgdr(learn, n_cycles: int, cycle_len: int, lr_max=None, cycle_mult: int = 2, wd: float | None = None,
             cbs=None, reset_opt: bool = False, start_epoch: int = 0) -> None:
    """Warm restarts: `n_cycles` cosines from lr_max to 0, each `cycle_mult` times longer."""
    check_int("n_cycles", n_cycles, low=1)
    check_int("cycle_len", cycle_len, low=1)
    check_int("cycle_mult", cycle_mult, low=1)
    if reset_opt:
        learn.opt = None
    lr_max = _lrs_after_setting(learn, lr_max)
    lengths = [cycle_len * cycle_mult**i for i in range(n_cycles)]
    n_epoch = sum(lengths)
    scheds = {"lr": combine_scheds([n / n_epoch for n in lengths], [SchedCos(lr_max, 0.0) for _ in lengths])}
    learn.fit(n_epoch, wd=wd, cbs=[ParamScheduler(scheds, strict=False)] + as_list(cbs), start_epoch=start_epoch)


def fine_tune(learn, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
              pct_start: float = 0.3, div: float = 5.0, **kwargs) -> None:
    """fastai's transfer-learning recipe: `freeze_epochs` one-cycle epochs of the last parameter
    group alone, then `epochs` of the whole model unfrozen, at half the lr and with discriminative
    rates from base_lr/2/lr_mult (first group) to base_lr/2 (last). `kwargs` go to both fits."""
    check_int("epochs", epochs, low=0)
    check_int("freeze_epochs", freeze_epochs, low=0)
    learn.freeze()
    learn.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
    base_lr /= 2
    learn.unfreeze()
    learn.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)

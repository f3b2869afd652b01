"""Schedules, ParamScheduler, and fit_one_cycle & co."""

from __future__ import annotations

import math

import pytest

from minilearn import Callback
from minilearn.callbacks.schedule import (
    ParamScheduler, SchedCos, SchedExp, SchedLin, SchedNo, SchedPoly, combine_scheds, combined_cos,
)
from synthetic import regression_learner


def test_schedule_values_at_known_points():
    assert SchedLin(0, 10)(0.5) == 5 and SchedLin(0, 10)(1) == 10
    assert SchedCos(0, 10)(0) == 0 and SchedCos(0, 10)(0.5) == pytest.approx(5) and SchedCos(0, 10)(1) == 10
    assert SchedCos(0, 10)(0.25) == pytest.approx(5 * (1 - math.sqrt(0.5)))
    assert SchedNo(3, 7)(0.9) == 3
    assert SchedExp(1, 100)(0.5) == pytest.approx(10)
    assert SchedPoly(0, 10, 2)(0.5) == pytest.approx(2.5)
    assert SchedLin([0, 1], [10, 11])(0.5) == [5, 6]  # one value per parameter group
    with pytest.raises(ValueError, match="start"):
        SchedExp(0, 1)


def test_combine_scheds():
    f = combine_scheds([0.25, 0.75], [SchedLin(0, 1), SchedLin(1, 0)])
    assert f(0) == 0 and f(0.125) == pytest.approx(0.5) and f(0.25) == pytest.approx(1)
    assert f(0.625) == pytest.approx(0.5) and f(1) == 0
    g = combined_cos(0.3, 1, 10, 0.01)
    assert g(0) == pytest.approx(1) and g(0.3) == pytest.approx(10) and g(1) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="pcts"):
        combine_scheds([0.5, 0.6], [SchedLin(0, 1), SchedLin(1, 0)])
    with pytest.raises(ValueError, match="pcts"):
        combine_scheds([1.0], [SchedLin(0, 1), SchedLin(1, 0)])


class SeenByOptimizer(Callback):
    """The hyper-parameters the optimiser holds when it steps, batch by batch."""

    def __init__(self):
        self.lrs, self.moms, self.pcts = [], [], []

    def before_step(self):
        self.lrs.append(self.opt.hypers[-1]["lr"])
        self.moms.append(self.opt.hypers[-1]["mom"])
        self.pcts.append(self.pct_train)


def test_fit_one_cycle_lr_and_mom_at_every_batch():
    learn = regression_learner(n=64, n_valid=16, bs=16)  # 4 batches an epoch
    seen = SeenByOptimizer()
    with learn.no_logging():
        learn.fit_one_cycle(3, lr_max=0.1, cbs=seen)
    total = 12
    assert seen.pcts == pytest.approx([i / total for i in range(total)])
    lr_sched = combined_cos(0.25, 0.1 / 25, 0.1, 0.1 / 1e5)
    mom_sched = combined_cos(0.25, 0.95, 0.85, 0.95)
    assert seen.lrs == pytest.approx([lr_sched(i / total) for i in range(total)], rel=1e-12)
    assert seen.moms == pytest.approx([mom_sched(i / total) for i in range(total)], rel=1e-12)
    assert seen.lrs[0] == pytest.approx(0.1 / 25) and max(seen.lrs) <= 0.1
    assert learn.recorder.lrs == seen.lrs  # the Recorder saw the same
    assert learn.recorder.hps["mom"] == seen.moms


def test_fit_flat_cos_and_sgdr():
    learn = regression_learner(n=64, n_valid=16, bs=16)
    seen = SeenByOptimizer()
    with learn.no_logging():
        learn.fit_flat_cos(2, lr=0.05, cbs=seen)
    assert seen.lrs[:6] == pytest.approx([0.05] * 6) and seen.lrs[-1] < 0.05
    seen = SeenByOptimizer()
    with learn.no_logging():
        learn.fit_sgdr(2, 1, lr_max=0.05, cbs=seen)  # epochs: 1 + 2
    assert len(seen.lrs) == 12
    assert seen.lrs[0] == pytest.approx(0.05) and seen.lrs[4] == pytest.approx(0.05)  # restart
    assert seen.lrs[3] < seen.lrs[2] < seen.lrs[1] < 0.05


def test_param_scheduler_any_hyper_and_plot_sched():
    learn = regression_learner()
    with learn.no_logging():
        learn.fit(2, cbs=ParamScheduler({"wd": SchedLin(0.0, 0.1)}))
    wds = learn.recorder.hps["wd"]
    assert wds[0] == 0 and wds[-1] == pytest.approx(0.1 * (len(wds) - 1) / len(wds))
    from matplotlib.figure import Figure

    with learn.no_logging():
        learn.fit_one_cycle(1, 0.1)
    fig = learn.recorder.plot_sched()
    assert isinstance(fig, Figure) and [ax.get_ylabel() for ax in fig.axes] == ["lr", "mom"]
    with pytest.raises(TypeError, match="scheds"):
        ParamScheduler({"lr": 3})



@pytest.mark.parametrize("lr", [-1.0, "0.1", [0.1, -2]])
def test_bad_lr(lr):
    learn = regression_learner()
    with pytest.raises(ValueError, match="lr"):
        learn.fit(1, lr=lr)
    with pytest.raises(ValueError, match="lr"):
        learn.fit_one_cycle(1, lr)


def test_fine_tune_trains_the_last_group_then_all_with_discriminative_lrs():
    import torch
    from torch import nn

    from minilearn import SGD, DataLoaders, Learner
    from synthetic import linear_data

    x, y, vx, vy = linear_data(n=64, n_valid=16)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0), model, nn.MSELoss(), opt_func=SGD,
                    splitter=lambda m: [list(m[0].parameters()), list(m[1].parameters())])
    moved = []

    class Watch(Callback):
        def before_fit(self):
            self.before = [p.detach().clone() for p in self.model[0].parameters()]

        def after_fit(self):
            moved.append(any(not torch.equal(a, p) for a, p in zip(self.before, self.model[0].parameters())))
            self.learn.seen_lrs = [h["lr"] for h in self.opt.hypers]

    with learn.no_logging():
        learn.fine_tune(2, base_lr=1e-2, freeze_epochs=1, cbs=Watch())
    assert moved == [False, True]  # the body is frozen for the first fit only
    assert len(learn.recorder.values) == 2  # the second fit's epochs
    # the second fit: discriminative rates lr_mult apart, the last group's peaking at base_lr / 2
    assert learn.seen_lrs[0] / learn.seen_lrs[1] == pytest.approx(1 / 100)
    assert max(learn.recorder.hps["lr"]) == pytest.approx(1e-2 / 2, rel=0.05)
    with pytest.raises(ValueError, match="epochs"):
        learn.fine_tune(-1)


def test_combined_schedules_give_fastais_values_to_the_last_bit(fastai):
    """fastai locates the phase in float32 (its bounds are a float32 tensor); so does minilearn,
    so a long one-cycle run gets the very same learning rate at every batch."""
    from fastai.callback import schedule as theirs

    from minilearn.callbacks import schedule as ours

    pairs = [
        (ours.combined_cos(0.25, 0.003 / 25, 0.003, 0.003 / 25 / 1e5),
         theirs.combined_cos(0.25, 0.003 / 25, 0.003, 0.003 / 25 / 1e5)),
        (ours.combine_scheds([0.3, 0.5, 0.2], [ours.SchedLin(1, 2), ours.SchedCos(2, 1), ours.SchedNo(1, 0)]),
         theirs.combine_scheds([0.3, 0.5, 0.2], [theirs.SchedLin(1, 2), theirs.SchedCos(2, 1), theirs.SchedNo(1, 0)])),
    ]
    for a, b in pairs:
        for n in (469, 1407, 3001):
            assert [a(i / n) for i in range(n + 1)] == [b(i / n) for i in range(n + 1)]


def test_combined_schedule_positions_are_float32():
    import struct

    from minilearn.callbacks.schedule import SchedLin, combine_scheds

    def f32(x):
        return struct.unpack("f", struct.pack("f", x))[0]

    sched = combine_scheds([0.3, 0.7], [SchedLin(0.0, 1.0), SchedLin(1.0, 0.0)])
    for pos in (0.1, 0.2999, 0.31, 0.77777):
        start, width = (0.0, f32(0.3)) if f32(pos) < f32(0.3) else (f32(0.3), f32(f32(1.0) - f32(0.3)))
        inner = f32(f32(f32(pos) - start) / width)
        expected = inner if start == 0 else 1.0 - inner
        assert sched(pos) == pytest.approx(expected, abs=1e-15)

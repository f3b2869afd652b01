"""Schedules, ParamScheduler, fit_one_cycle & co, and the LR finder that leaves no trace."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minilearn import Callback, DataLoaders, Learner, SGD
from minilearn.callbacks.schedule import (
    ParamScheduler, SchedCos, SchedExp, SchedLin, SchedNo, SchedPoly, combine_scheds, combined_cos,
    minimum, slide, steep, valley,
)
from synthetic import class_data, regression_learner


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


def class_learner(seed: int = 0, n: int = 300) -> Learner:
    x, y, vx, vy = class_data(n=n, n_valid=60, seed=seed)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 3))
    return Learner(dls, model, nn.CrossEntropyLoss(), opt_func=lambda p, lr: SGD(p, lr, mom=0.9), lr=0.05)


def test_lr_find_leaves_no_trace():
    """lr_find then fit gives exactly the numbers of fit alone (weights, history, data order)."""
    alone = class_learner()
    with alone.no_logging():
        alone.fit(2)
    probe = class_learner()
    probe.lr_find(num_it=30, show_plot=False)
    assert probe.opt is None and probe.recorder.values == []
    with probe.no_logging():
        probe.fit(2)
    for a, b in zip(alone.model.parameters(), probe.model.parameters()):
        assert torch.equal(a, b)
    assert probe.recorder.values == alone.recorder.values
    assert probe.recorder.losses == alone.recorder.losses


def test_lr_find_after_training_restores_optimizer_state_and_history():
    learn = class_learner()
    with learn.no_logging():
        learn.fit(1)
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    params = list(learn.model.parameters())
    moms = [learn.opt.state[p]["grad_avg"].clone() for p in params]
    values = [list(r) for r in learn.recorder.values]
    learn.model.train()
    learn.lr_find(num_it=20, show_plot=False)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(a, learn.opt.state[p]["grad_avg"]) for a, p in zip(moms, params))
    assert learn.opt.hypers[0]["lr"] == 0.05
    assert learn.recorder.values == values
    assert learn.model.training  # the mode it had


def test_lr_find_suggestions_records_and_epochs():
    learn = class_learner(n=48)  # 3 batches an epoch: lr_find needs several epochs
    sugg = learn.lr_find(num_it=40, end_lr=1.0, stop_div=False, show_plot=False,
                         suggest_funcs=(valley, minimum, steep, slide))
    assert sugg._fields == ("valley", "minimum", "steep", "slide")
    finder = learn.lr_finder
    assert len(finder.lrs) == 40
    assert finder.lrs == pytest.approx([1e-7 * (1.0 / 1e-7) ** (i / 40) for i in range(40)])
    assert all(1e-7 <= v <= 1.0 for v in sugg)
    assert not hasattr(learn, "l_r_finder") and all(type(c).__name__ != "LRFinder" for c in learn.cbs)


def test_lr_find_stops_when_the_loss_diverges():
    learn = class_learner()
    learn.lr_find(num_it=100, end_lr=1e4, show_plot=False)
    finder = learn.lr_finder
    assert len(finder.losses) < 100
    assert finder.losses[-1] > 4 * min(finder.losses) or not math.isfinite(finder.losses[-1])


def test_lr_find_plot(tmp_path):
    from matplotlib.figure import Figure

    learn = class_learner()
    path = tmp_path / "plots" / "lr_find.png"
    sugg = learn.lr_find(num_it=30, show_plot=True, plot_path=path)
    assert path.read_bytes()[:4] == b"\x89PNG" and not list(path.parent.glob(".*"))
    fig = learn.plot_lr_find()
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert any(l.startswith("valley") for l in labels)
    assert sugg.valley > 0


def test_suggestion_functions_on_a_known_curve():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # loss falls steadily from lr 1e-5 to 1e-2, then blows up
    losses = [2.0 if lr < 1e-5 else (2.0 - 0.5 * math.log10(lr / 1e-5) if lr < 1e-2 else 0.5 + 50 * (lr - 1e-2))
              for lr in lrs]
    lr_min, (p_lr, _) = minimum(lrs, losses, 100)
    assert p_lr == pytest.approx(1e-2, rel=0.15) and lr_min == pytest.approx(p_lr / 10)
    lr_valley, _ = valley(lrs, losses, 100)
    assert 1e-5 < lr_valley < 1e-2
    lr_steep, _ = steep(lrs, losses, 100)
    assert lr_steep > 1e-2 * 0.9 or 1e-5 <= lr_steep <= 1e-2
    lr_slide, (_, loss_at) = slide(lrs, losses, 100)
    assert 1e-6 <= lr_slide <= 1 and min(losses) <= loss_at <= max(losses)


@pytest.mark.parametrize("lr", [-1.0, "0.1", [0.1, -2]])
def test_bad_lr(lr):
    learn = regression_learner()
    with pytest.raises(ValueError, match="lr"):
        learn.fit(1, lr=lr)
    with pytest.raises(ValueError, match="lr"):
        learn.fit_one_cycle(1, lr)

"""Trackers: early stopping and best-model saving (driven by a scripted metric), LR plateaus, stopping on NaN."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

from minilearn import (
    Callback, DataLoaders, EarlyStoppingCallback, Learner, ReduceLROnPlateau, SaveModelCallback,
    TerminateOnNaNCallback,
)
from synthetic import class_learner, linear_data, regression_learner


class Scripted:
    """A metric whose value at epoch e is `values[e]` (so trackers see a known sequence)."""

    def __init__(self, values):
        self.values, self.epoch, self.__name__ = values, 0, "scripted"

    def __call__(self, pred, targ):
        return torch.tensor(float(self.values[self.epoch]))


class FollowEpoch(Callback):
    def __init__(self, metric):
        self.metric = metric

    def before_validate(self):
        self.metric.epoch = self.learn.epoch


def learner_with(values, tmp_path):
    metric = Scripted(values)
    learn = regression_learner(path=tmp_path, metrics=[metric])
    learn.add_cb(FollowEpoch(metric))
    return learn


@pytest.mark.parametrize("values, patience, min_delta, stop", [
    ([0.5, 0.6, 0.7, 0.8, 0.9], 1, 0.0, None),     # always improving (higher is better)
    ([0.5, 0.6, 0.6, 0.7, 0.9], 1, 0.0, 2),        # a tie is no improvement
    ([0.5, 0.6, 0.6, 0.7, 0.9], 2, 0.0, None),
    ([0.5, 0.55, 0.58, 0.59, 0.9], 2, 0.05, 3),    # improvements below min_delta do not count
])
def test_early_stopping(values, patience, min_delta, stop, tmp_path, capsys):
    learn = learner_with(values, tmp_path)
    es = EarlyStoppingCallback(monitor="scripted", min_delta=min_delta, patience=patience)
    with learn.no_logging():
        learn.fit(5, cbs=es)
    assert es.stopped_epoch == stop
    assert len(learn.recorder.values) == (5 if stop is None else stop + 1)
    if stop is not None:
        assert "early stopping" in capsys.readouterr().out


def test_save_model_saves_on_improvement_and_loads_the_best(tmp_path, capsys):
    learn = learner_with([0.3, 0.2, 0.25, 0.1, 0.15], tmp_path)
    best_weights = {}

    class Remember(Callback):
        order = 70

        def after_epoch(self):
            best_weights[self.epoch] = [p.detach().clone() for p in self.model.parameters()]

    sm = SaveModelCallback(monitor="scripted", comp=operator.lt, fname="best")
    with learn.no_logging():
        learn.fit(5, cbs=[sm, Remember()])
    assert sm.saved_epochs == [0, 1, 3]
    assert (tmp_path / "models" / "best.pth").is_file()
    for a, b in zip(learn.model.parameters(), best_weights[3]):
        assert torch.equal(a, b)  # the best epoch's weights are back at the end
    assert "Better model found at epoch 3" in capsys.readouterr().out


def test_save_model_every_epoch(tmp_path):
    learn = learner_with([0.3] * 3, tmp_path)
    sm = SaveModelCallback(every_epoch=True, fname="e")
    with learn.no_logging():
        learn.fit(3, cbs=sm)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["e_0.pth", "e_1.pth", "e_2.pth"]


def test_unknown_monitor_is_an_error_listing_the_columns(tmp_path):
    learn = learner_with([0.3] * 3, tmp_path)
    with learn.no_logging(), pytest.raises(ValueError, match=r"'acc'.*'train_loss', 'valid_loss', 'scripted'"):
        learn.fit(1, cbs=EarlyStoppingCallback(monitor="acc"))
    assert learn.opt is not None and len(learn.recorder.values) == 0


def test_trackers_sit_out_lr_find(tmp_path):
    learn = learner_with([0.3] * 3, tmp_path)
    learn.add_cb(SaveModelCallback(monitor="scripted"))
    learn.lr_find(num_it=10, show_plot=False)
    assert not (tmp_path / "models").exists()


def test_reduce_lr_on_plateau():
    learn = class_learner()
    seen = []

    class Flat(Callback):
        order = 50  # before the plateau tracker, after nothing: the recorder fills the log
        def after_epoch(self):
            seen.append(self.opt.hypers[-1]["lr"])

    with learn.no_logging():
        learn.fit(6, cbs=[ReduceLROnPlateau(monitor="accuracy", patience=1, factor=10, min_delta=2.0), Flat()])
    # accuracy can never improve by 2.0, so every epoch after the first counts as a plateau
    assert learn.opt.hypers[-1]["lr"] == pytest.approx(0.1 / 10**5)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1)


def test_save_model_does_not_load_an_earlier_fits_file(tmp_path):
    learn = class_learner(tmp_path)
    sm = learn.add_cb(SaveModelCallback(fname="best"))
    with learn.no_logging():
        learn.fit(1)
        after_first = [p.detach().clone() for p in learn.model.parameters()]
        learn.fit(2)   # improves and saves again
        learn.fit(3, start_epoch=3)  # no epoch runs, nothing saved: nothing to load
    assert sm.saved_epochs == [] and sm.last_saved_path is None
    assert not all(torch.equal(a, b) for a, b in zip(after_first, learn.model.parameters()))


def test_terminate_on_nan_runs_after_the_distributed_loss_sync():
    from minilearn import DistributedTrainer, TerminateOnNaNCallback

    assert TerminateOnNaNCallback.order > DistributedTrainer.order


def test_nan_loss_stops_at_that_batch(capsys):
    x, y, vx, vy = linear_data(n=64, n_valid=16)
    x = x.clone()
    x[37] = float("nan")                               # batch 2 of epoch 0 (bs 16, no shuffle)
    torch.manual_seed(0)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16, shuffle=False), nn.Linear(3, 1), nn.MSELoss())
    nan_cb = TerminateOnNaNCallback()
    with learn.no_logging():
        learn.fit(3, cbs=nan_cb)
    assert nan_cb.stopped_at == (0, 2)
    assert "nan at epoch 0, batch 2" in capsys.readouterr().out
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())  # the NaN batch took no step
    assert len(learn.recorder.losses) == 2


def test_trackers_read_the_epochs_row_as_the_recorder_keeps_it(tmp_path):
    from minilearn import Callback, SaveModelCallback

    class Rewrite(Callback):  # fastai's tests script metrics by rewriting recorder.values[-1]
        order = 55
        script = [3.0, 2.0, 2.5]

        def after_epoch(self):
            self.learn.recorder.values[-1][1] = self.script[self.epoch]  # the valid_loss column

    learn = class_learner(tmp_path)
    saver = SaveModelCallback(fname="best")
    with learn.no_logging():
        learn.fit(3, cbs=[Rewrite(), saver])
    assert saver.best == 2.0 and saver.saved_epochs == [0, 1]

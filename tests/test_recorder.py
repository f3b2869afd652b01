"""The Recorder keeps numbers, found by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilearn import DataLoaders, Learner, Recorder, accuracy
from synthetic import class_data, regression_learner


def fitted(n_epoch: int = 3, **kwargs) -> Learner:
    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy, **kwargs)
    with learn.no_logging():
        learn.fit(n_epoch)
    return learn


def test_values_are_floats_per_epoch():
    learn = fitted(3)
    rec = learn.recorder
    assert rec.metric_names == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert len(rec.values) == 3 and all(len(row) == 3 for row in rec.values)
    assert all(isinstance(v, float) for row in rec.values for v in row)
    assert [row["epoch"] for row in rec.history] == [0, 1, 2]
    assert all(isinstance(row["time"], float) and row["time"] >= 0 for row in rec.history)


def test_column_by_name():
    rec = fitted(2).recorder
    assert rec.column("accuracy") == [row[2] for row in rec.values]
    assert rec.column("valid_loss") == [row[1] for row in rec.values]
    with pytest.raises(KeyError, match="columns are"):
        rec.column("acc")


def test_per_batch_losses_and_lrs():
    learn = fitted(2)
    rec = learn.recorder
    n_batches = 2 * len(learn.dls.train)
    assert len(rec.losses) == n_batches and all(isinstance(l, float) for l in rec.losses)
    assert rec.lrs == [0.1] * n_batches
    assert rec.iters == [len(learn.dls.train), n_batches]
    assert learn.smooth_loss is not None and float(learn.smooth_loss) == pytest.approx(rec.losses[-1])


def test_history_resets_at_each_fit():
    learn = fitted(2)
    with learn.no_logging():
        learn.fit(1)
    assert len(learn.recorder.values) == 1


def test_train_metrics_and_no_time():
    learn = fitted(1, cbs=None)
    learn.remove_cb(Recorder)
    learn.add_cb(Recorder(train_metrics=True, add_time=False))
    with learn.no_logging():
        learn.fit(1)
    rec = learn.recorder
    assert rec.metric_names == ["epoch", "train_loss", "train_accuracy", "valid_loss", "accuracy"]
    assert 0 <= rec.column("train_accuracy")[0] <= 1


def test_no_validation_set_leaves_blanks():
    learn = regression_learner()
    learn.dls = DataLoaders(learn.dls.train)
    with learn.no_logging():
        learn.fit(1)
    assert learn.recorder.history[0]["valid_loss"] is None
    assert learn.recorder.history[0]["train_loss"] is not None


def test_plot_loss_returns_a_figure(tmp_path):
    from matplotlib.figure import Figure

    fig = fitted(3).recorder.plot_loss(skip_start=0)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [l.get_label() for l in ax.get_lines()]
    assert labels == ["train", "valid"]
    fig.savefig(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_iters_match_history_when_an_epoch_is_cancelled():
    from minilearn import Callback, CancelEpochException

    class SkipSecondEpoch(Callback):
        order = 0

        def before_train(self):
            if self.epoch == 1:
                raise CancelEpochException()

    learn = fitted(0)
    with learn.no_logging():
        learn.fit(3, cbs=SkipSecondEpoch())
    rec = learn.recorder
    n = len(learn.dls.train)
    assert len(rec.iters) == len(rec.history) == 3
    assert rec.iters == [n, n, 2 * n]


def test_cancel_in_before_epoch_from_an_early_callback():
    from minilearn import Callback, CancelEpochException

    class SkipFirst(Callback):
        order = -20

        def before_epoch(self):
            if self.epoch == 0:
                raise CancelEpochException()

    learn = fitted(0)
    with learn.no_logging():
        learn.fit(2, cbs=SkipFirst())
    assert len(learn.recorder.history) == 2


def test_without_a_table_each_epochs_row_goes_to_learn_logger(capsys):
    from minilearn import ProgressCallback

    learn = regression_learner()
    learn.remove_cb(ProgressCallback)
    rows = []
    learn.logger = rows.append
    learn.fit(2)
    assert [r[0] for r in rows] == [0, 1] and rows[1][1:3] == learn.recorder.values[1]
    assert isinstance(rows[0][-1], str) and ":" in rows[0][-1]  # the time, formatted as in the table
    learn.logger = print  # the default, as fastai's
    learn.fit(1)
    assert capsys.readouterr().out.startswith("[0, ")
    with learn.no_logging():  # no table and nothing logged
        learn.fit(1)
    assert capsys.readouterr().out == "" and learn.logger is print


def test_a_metric_error_names_the_metric_and_a_loss_error_the_prediction():
    from torch import nn

    from minilearn import DataLoaders, Learner, accuracy
    from synthetic import class_data

    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=8)

    def broken(pred, targ):
        raise RuntimeError("my metric broke")

    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), metrics=[accuracy, broken])
    with pytest.raises(RuntimeError, match="my metric broke") as info, learn.no_logging():
        learn.fit(1)
    (note,) = info.value.__notes__
    assert note.startswith("minilearn: raised in metric 'broken' (AvgMetric) taking the batch; at epoch 0, validation")
    assert "pred: (8, 3) float32" in note and "recorder" not in note
    learn = Learner(dls, nn.Linear(4, 1), nn.CrossEntropyLoss())  # one output for 3 classes
    with pytest.raises(IndexError) as info, learn.no_logging():
        learn.fit(1)
    assert "targets: (8,) int64 on cpu; pred: (8, 1) float32 on cpu" in info.value.__notes__[0]

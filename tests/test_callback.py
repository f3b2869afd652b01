"""The Callback class: its name rule, reads and writes of learner state, run_train/run_valid, the printed loop."""

from __future__ import annotations

import pytest
import torch

from minilearn import Callback
from synthetic import run_with, small_learner


def test_state_seen_by_callbacks():
    seen = []

    class Watch(Callback):
        def after_loss(self):
            seen.append((self.epoch, self.iter, self.n_iter, self.training, round(self.pct_train, 4),
                         self.xb[0].shape[0], self.yb[0].shape[0], self.pred.shape, self.loss.ndim, self.n_epoch))

    run_with(Watch(), n_epoch=2)
    assert seen[0] == (0, 0, 2, True, 0.0, 16, 16, torch.Size([16, 1]), 0, 2)
    assert seen[1] == (0, 1, 2, True, 0.25, 16, 16, torch.Size([16, 1]), 0, 2)
    assert seen[2][:4] == (0, 0, 1, False)
    assert seen[3][:5] == (1, 0, 2, True, 0.5)


def test_callback_writes_must_go_through_learn():
    class BadWrite(Callback):
        def after_pred(self):
            self.pred = self.pred * 2

    learn = small_learner()
    with learn.no_logging(), pytest.raises(AttributeError, match=r"self\.learn\.pred"):
        learn.fit(1, cbs=BadWrite())


def test_run_train_and_run_valid_filter_batch_events():
    class TrainOnly(Callback):
        run_valid = False

        def __init__(self):
            self.n = 0

        def after_batch(self):
            self.n += 1

    class ValidOnly(TrainOnly):
        run_valid, run_train = True, False

    t, v = TrainOnly(), ValidOnly()
    learn = small_learner()
    with learn.no_logging():
        learn.fit(2, cbs=[t, v])
    assert (t.n, v.n) == (4, 2)


def test_callback_name():
    class EarlyStoppingCallback(Callback):
        pass

    class GradNormLogger(Callback):
        pass

    assert EarlyStoppingCallback().name == "early_stopping"
    assert GradNormLogger().name == "grad_norm_logger"
    learn = small_learner()
    assert learn.recorder.name == "recorder" and learn.progress.name == "progress"
    assert learn.train_eval.name == "train_eval"


def test_show_training_loop_lists_events_and_callbacks(capsys):
    learn = small_learner()
    learn.show_training_loop()
    out = capsys.readouterr().out
    assert "before_fit" in out and "after_fit" in out
    line = next(l for l in out.splitlines() if l.strip().startswith("before_fit"))
    assert "TrainEvalCallback" in line and "Recorder" in line and "ProgressCallback" in line
    assert out.index("before_epoch") < out.index("before_train") < out.index("after_step") < out.index("after_epoch")


def test_show_training_loop_respects_run_valid():
    learn = small_learner()
    import io
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        learn.show_training_loop()
    lines = out.getvalue().splitlines()
    valid_after_batch = next(l for l in lines if l.strip().startswith("after_batch (valid)"))
    train_after_batch = next(l for l in lines if l.strip().startswith("after_batch (train)"))
    assert "TrainEvalCallback" in train_after_batch and "TrainEvalCallback" not in valid_after_batch

"""Faults injected into training: errors at every event, interrupts, kills mid-save, NaNs, bad batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from minilearn import (
    Callback, CancelBackwardException, CancelBatchException, CancelEpochException, CancelFitException,
    CancelStepException, CancelTrainException, CancelValidException, DataLoaders, Learner,
    TerminateOnNaNCallback,
)
from minilearn.callback import EVENTS
from synthetic import linear_data, regression_learner

# To reach an after_cancel_<x> event, something must first cancel <x>.
CANCEL_FIRST = {
    "after_cancel_batch": ("before_batch", CancelBatchException),
    "after_cancel_backward": ("before_backward", CancelBackwardException),
    "after_cancel_step": ("before_step", CancelStepException),
    "after_cancel_train": ("before_train", CancelTrainException),
    "after_cancel_validate": ("before_validate", CancelValidException),
    "after_cancel_epoch": ("before_epoch", CancelEpochException),
    "after_cancel_fit": ("before_fit", CancelFitException),
}


class Failure(Exception):
    pass


def raiser_at(event: str, exc: BaseException) -> Callback:
    cls = type(f"FailAt_{event}", (Callback,), {event: lambda self: (_ for _ in ()).throw(exc)})
    return cls()


def canceller_at(event: str, exc_type: type) -> Callback:
    cls = type("Canceller", (Callback,), {"order": -5, event: lambda self: (_ for _ in ()).throw(exc_type())})
    return cls()


@pytest.mark.parametrize("event", [e for e in EVENTS if e != "after_create"])
def test_an_error_at_any_event_propagates_noted_and_the_learner_recovers(event):
    learn = regression_learner(n=32, n_valid=16, bs=16)
    cbs = [raiser_at(event, Failure(f"failed in {event}"))]
    if event in CANCEL_FIRST:
        cbs.append(canceller_at(*CANCEL_FIRST[event]))
    with learn.no_logging(), pytest.raises(Failure, match=f"failed in {event}") as info:
        learn.fit(1, cbs=cbs)
    notes = info.value.__notes__
    assert f"callback 'fail_at_{event}'" in notes[0] and f"event {event!r}" in notes[0] and len(notes) == 1
    assert [type(c).__name__ for c in learn.cbs] == ["TrainEvalCallback", "Recorder", "ProgressCallback"]
    assert all(p.grad is None for p in learn.model.parameters())
    with learn.no_logging():
        learn.fit(1)  # works afterwards
    assert len(learn.recorder.values) == 1 and learn.recorder.values[0][1] is not None


def test_keyboard_interrupt_mid_epoch_keeps_the_history():
    learn = regression_learner(n=64, n_valid=16, bs=16)  # 4 batches an epoch

    class CtrlC(Callback):
        def before_batch(self):
            if self.training and self.epoch == 1 and self.iter == 2:
                raise KeyboardInterrupt()

    with learn.no_logging(), pytest.raises(KeyboardInterrupt) as info:
        learn.fit(3, cbs=CtrlC())
    assert "epoch 1" in info.value.__notes__[0] or "before_batch" in info.value.__notes__[0]
    assert len(learn.recorder.values) == 1           # the finished epoch
    assert len(learn.recorder.losses) == 4 + 2       # and every batch trained so far
    assert not hasattr(learn, "ctrl_c")
    with learn.no_logging():
        learn.fit(1)
    assert len(learn.recorder.values) == 1


SAVER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    sys.path.insert(0, {tests!r})
    from synthetic import linear_data
    from minilearn import DataLoaders, Learner
    x, y, vx, vy = linear_data()
    model = nn.Sequential(nn.Linear(3, 4000), nn.Linear(4000, 4000), nn.Linear(4000, 1))  # ~64 MB of weights
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy), model, nn.MSELoss(), path={path!r})
    with torch.no_grad():
        for p in model.parameters(): p.fill_(1.0)
    learn.save("ckpt")
    print("first", flush=True)
    value = 2.0
    while True:
        with torch.no_grad():
            for p in model.parameters(): p.fill_(value)
        print("saving", value, flush=True)
        learn.save("ckpt")
        value += 1
""")


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08])
def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path, delay):
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(tests=str(Path(__file__).parent), path=str(tmp_path)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "first"
        line = proc.stdout.readline()          # a save has started
        assert line.startswith("saving")
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    x, y, vx, vy = linear_data()
    model = nn.Sequential(nn.Linear(3, 4000), nn.Linear(4000, 4000), nn.Linear(4000, 1))
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy), model, nn.MSELoss(), path=tmp_path)
    learn.load("ckpt")                              # a whole checkpoint, old or new
    values = {p.flatten()[0].item() for p in model.parameters()}
    assert len(values) == 1 and all(torch.all(p == p.flatten()[0]) for p in model.parameters())


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


def test_wrong_input_shape_is_named_at_the_first_batch():
    x, y, vx, vy = linear_data(n=32, n_valid=16)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=8), nn.Linear(784, 1), nn.MSELoss())
    with learn.no_logging(), pytest.raises(RuntimeError) as info:
        learn.fit(1)
    note = info.value.__notes__[0]
    assert "epoch 0, training batch 0" in note and "(8, 3) float32 on cpu" in note
    assert "model parameters: float32 on cpu" in note


def test_wrong_dtype_is_named_at_the_first_batch():
    x, y, vx, vy = linear_data(n=32, n_valid=16)
    dls = DataLoaders.from_tensors(x.double(), y.double(), vx.double(), vy.double(), bs=8)
    learn = Learner(dls, nn.Linear(3, 1), nn.MSELoss())
    with learn.no_logging(), pytest.raises(RuntimeError) as info:
        learn.fit(1)
    assert "float64" in info.value.__notes__[0] and "model parameters: float32" in info.value.__notes__[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_split_across_devices_is_named():
    x, y, vx, vy = linear_data(n=32, n_valid=16)
    model = nn.Sequential(nn.Linear(3, 4).cuda(), nn.Linear(4, 1))  # second layer left on the CPU
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=8), model, nn.MSELoss())
    with learn.no_logging(), pytest.raises(RuntimeError) as info:
        learn.fit(1)
    assert "on cuda:0" in info.value.__notes__[0]

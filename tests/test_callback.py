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


def test_a_callback_reads_any_attribute_of_its_learner_and_through_it_the_model():
    seen = {}

    class Sets(Callback):
        order = 1

        def before_fit(self):
            self.learn.note = "set by another callback"

    class Reads(Callback):
        order = 2

        def before_fit(self):
            # another callback by name, an attribute another callback set, the learner's own,
            # and the model's (through the learner)
            seen.update(recorder=self.recorder, note=self.note, lr=self.lr, weight=self.weight)

    learn = small_learner(cbs=[Sets(), Reads()])
    with learn.no_logging():
        learn.fit(1)
    assert seen["recorder"] is learn.recorder and seen["note"] == "set by another callback"
    assert seen["lr"] == learn.lr and seen["weight"] is learn.model.weight
    with pytest.raises(AttributeError, match="neither the callback nor its Learner has an attribute 'nope'"):
        learn.reads.nope
    with pytest.raises(AttributeError, match="not attached to a Learner"):
        Callback().recorder
    with pytest.raises(AttributeError):
        learn.reads._private  # private names are never forwarded


def test_calling_a_callback_runs_one_event_in_the_current_phase():
    calls = []

    class Counts(Callback):
        run_valid = False

        def after_batch(self):
            calls.append("after_batch")

    cb = Counts()
    cb("after_batch")
    assert calls == ["after_batch"]
    assert cb("before_fit") is None and calls == ["after_batch"]  # it has no before_fit
    learn = small_learner(cbs=cb)
    learn.training = False  # a validation batch: run_valid=False keeps it out
    cb("after_batch")
    assert calls == ["after_batch"]
    assert cb("after_batchh") is None  # no such method: nothing runs, as in fastai

    class Other(Callback):
        def call_me(self):
            return "called"

    assert Other()("call_me") == "called"  # any method, not only events


def test_a_callback_made_from_event_functions():
    seen = []
    cb = Callback(before_fit=lambda self: seen.append(("before_fit", self)), after_fit=lambda self: seen.append("end"))
    learn = small_learner(cbs=cb)
    with learn.no_logging():
        learn.fit(1)
    assert seen == [("before_fit", cb), "end"]
    with pytest.raises(ValueError, match="before_fitt: not an event"):
        Callback(before_fitt=lambda self: None)
    with pytest.raises(TypeError, match="after_fit: expected a function"):
        Callback(after_fit=3)


def test_run_after_and_run_before_place_callbacks_whatever_their_order():
    from minilearn import Recorder, TrainEvalCallback

    class Late(Callback):
        order = -20          # would run first ...
        run_after = Recorder  # ... but must follow the Recorder (order 50)

    class Early(Callback):
        order = 100
        run_before = [TrainEvalCallback]

    learn = small_learner(cbs=[Late(), Early()])
    names = [type(cb).__name__ for cb in learn.cbs]
    assert names.index("Late") > names.index("Recorder")
    assert names.index("Early") < names.index("TrainEvalCallback")

    class A(Callback):
        pass

    class B(Callback):
        run_before = A

    A.run_before = B
    try:
        with pytest.raises(ValueError, match="run_after / run_before make a cycle"):
            small_learner(cbs=[A(), B()])
    finally:
        A.run_before = None


def test_event_namespace_ordered_cbs_and_cbs_as_a_read_only_L():
    from fastcore.foundation import L

    from minilearn import event
    from minilearn.callback import EVENTS

    assert all(getattr(event, e) == e for e in EVENTS) and not hasattr(event, "after_batchh")
    learn = small_learner(cbs=L([Callback()]))  # cbs= takes an L
    assert isinstance(learn.cbs, L) and learn.cbs.map(type)[0].__name__ == "TrainEvalCallback"
    assert [type(cb).__name__ for cb in learn.ordered_cbs(event.after_batch)] == [
        "TrainEvalCallback", "Recorder", "ProgressCallback"]
    assert learn.ordered_cbs(event.after_create) == []
    with pytest.raises(AttributeError, match="read-only"):
        learn.cbs.append(Callback())
    with pytest.raises(AttributeError, match="read-only"):
        learn.cbs[0] = Callback()


def test_before_batch_cb_changes_each_batch():
    from minilearn import before_batch_cb

    seen = []

    @before_batch_cb
    def shift(self, xb, yb):
        return tuple(x + 1000 for x in xb), yb

    class Look(Callback):
        order = 1

        def after_pred(self):
            seen.append(self.xb[0].min().item())

    learn = small_learner(cbs=[shift, Look()])
    with learn.no_logging():
        learn.fit(1)
    assert min(seen) > 900


def test_a_misspelt_event_is_named_when_the_callback_is_added():
    import warnings

    from synthetic import small_learner

    class Typos(Callback):
        def after_batchh(self):
            pass

        def beforefit(self):
            pass

        def helper(self):  # an ordinary method: nothing to say
            pass

        def after_batch(self):
            pass

    learn = small_learner()
    with pytest.warns(UserWarning) as caught:
        learn.add_cb(Typos())
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        "callback 'typos' (Typos): no event is called 'after_batchh', so it never runs; did you mean 'after_batch'?",
        "callback 'typos' (Typos): no event is called 'beforefit', so it never runs; did you mean 'before_fit'?",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the learner's own callbacks and a correct one: silent
        small_learner().add_cb(type("Fine", (Callback,), {"after_batch": lambda self: None, "state_dict": lambda self: {}})())

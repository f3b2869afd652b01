"""The seven-step loop, its events, cancellation, errors injected at any event, bad batches, and callback management."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilearn import (
    SGD, Callback, CancelBackwardException, CancelBatchException, CancelEpochException,
    CancelFitException, CancelStepException, CancelTrainException, CancelValidException, DataLoaders,
    Learner, accuracy,
)
from minilearn.callback import EVENTS
from synthetic import LogEvents, class_data, class_learner, linear_data, regression_learner, run_with, small_learner


class RaiseAt(Callback):
    """Raises `exc` at `event` the first time it happens in the given phase (None: either)."""

    def __init__(self, exc: BaseException, event: str, training: bool | None = True, skip: int = 0):
        self.exc, self.event, self.phase, self.skip, self.done = exc, event, training, skip, False
        setattr(self, event, self._maybe_raise)

    def _maybe_raise(self):
        if not self.done and (self.phase is None or self.learn.training == self.phase):
            if self.skip:
                self.skip -= 1
                return
            self.done = True
            raise self.exc


TRAIN_BATCH = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
               "before_step", "after_step", "after_batch"]
VALID_BATCH = ["before_batch", "after_pred", "after_loss", "after_batch"]


def epoch_events(n_train: int, n_valid: int) -> list[str]:
    return (["before_epoch", "before_train"] + TRAIN_BATCH * n_train + ["after_train", "before_validate"]
            + VALID_BATCH * n_valid + ["after_validate", "after_epoch"])


def test_event_order_for_fit_with_train_and_valid():
    learn = small_learner()
    log = LogEvents()
    with learn.no_logging():
        learn.fit(2, cbs=log)
    assert log.events == ["before_fit"] + epoch_events(2, 1) * 2 + ["after_fit"]


def test_after_create_runs_for_callbacks_given_to_the_learner():
    log = LogEvents()
    x, y, vx, vy = linear_data()
    Learner(DataLoaders.from_tensors(x, y, vx, vy), nn.Linear(3, 1), nn.MSELoss(), cbs=log)
    assert log.events == ["after_create"]


def test_cancel_batch_skips_rest_of_batch_and_runs_after_cancel_then_after():
    log = run_with(RaiseAt(CancelBatchException(), "after_pred"), n_epoch=1)
    first = ["before_batch", "after_pred", "after_cancel_batch", "after_batch"]
    assert log.events[:6] == ["before_fit", "before_epoch", "before_train"] + first[:3]
    assert log.events == ["before_fit", "before_epoch", "before_train"] + first + TRAIN_BATCH + \
        epoch_events(0, 1)[2:] + ["after_fit"]


def test_cancel_backward_skips_gradient_but_steps_on():
    learn = small_learner()
    before = [p.clone() for p in learn.model.parameters()]
    log = LogEvents()
    with learn.no_logging():
        learn.fit(1, cbs=[log, RaiseAt(CancelBackwardException(), "before_backward")])
    ev = log.events
    i = ev.index("before_backward")
    assert ev[i:i + 5] == ["before_backward", "after_cancel_backward", "after_backward", "before_step", "after_step"]
    # The first step had no gradient, so the first batch changed nothing; the second did.
    assert any(not torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))


def test_cancel_step_leaves_weights_untouched():
    class CancelEveryStep(Callback):
        def before_step(self):
            raise CancelStepException()

    learn = small_learner()
    before = [p.clone() for p in learn.model.parameters()]
    log = LogEvents()
    with learn.no_logging():
        learn.fit(2, cbs=[log, CancelEveryStep()])
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    i = log.events.index("before_step")
    assert log.events[i:i + 4] == ["before_step", "after_cancel_step", "after_step", "after_batch"]
    assert all(p.grad is None for p in learn.model.parameters())  # zero_grad still ran


def test_cancel_train_goes_on_to_validation():
    log = run_with(RaiseAt(CancelTrainException(), "after_batch"), n_epoch=1)
    ev = log.events
    assert ev.count("after_step") == 1  # only the first training batch ran
    i = ev.index("after_batch")
    assert ev[i:i + 4] == ["after_batch", "after_cancel_train", "after_train", "before_validate"]
    assert "after_validate" in ev


def test_cancel_validate_skips_validation_batches():
    log = run_with(RaiseAt(CancelValidException(), "before_validate", training=None), n_epoch=1)
    ev = log.events
    i = ev.index("before_validate")
    assert ev[i:i + 4] == ["before_validate", "after_cancel_validate", "after_validate", "after_epoch"]


def test_cancel_epoch_goes_on_to_next_epoch():
    log = run_with(RaiseAt(CancelEpochException(), "before_train", training=None), n_epoch=2)
    ev = log.events
    assert ev[:5] == ["before_fit", "before_epoch", "before_train", "after_cancel_epoch", "after_epoch"]
    assert ev[5:] == epoch_events(2, 1) + ["after_fit"]


def test_cancel_fit_stops_after_the_epoch():
    log = run_with(RaiseAt(CancelFitException(), "after_epoch", training=None), n_epoch=3)
    ev = log.events
    assert ev == ["before_fit"] + epoch_events(2, 1) + ["after_cancel_fit", "after_fit"]


def test_after_cancel_fit_then_after_fit_when_cancelled_mid_batch():
    log = run_with(RaiseAt(CancelFitException(), "after_loss"), n_epoch=3)
    assert log.events[-3:] == ["after_loss", "after_cancel_fit", "after_fit"]
    assert "after_batch" not in log.events  # nothing between the cancel and the fit's end


def test_callbacks_passed_to_fit_are_removed_after_a_normal_fit():
    learn = small_learner()
    log = LogEvents()
    with learn.no_logging():
        learn.fit(1, cbs=log)
    assert log not in learn.cbs and not hasattr(learn, "log_events") and log.learn is None


class Boom(Exception):
    pass


def test_exception_in_callback_propagates_with_note_and_cleans_up():
    learn = small_learner()
    err = Boom("my own error")
    with learn.no_logging(), pytest.raises(Boom) as info:
        learn.fit(1, cbs=RaiseAt(err, "after_loss"))
    assert info.value is err  # the user's own exception, unwrapped
    assert str(info.value) == "my own error"
    assert any("'raise_at'" in n and "'after_loss'" in n for n in info.value.__notes__)
    assert len(info.value.__notes__) == 1
    assert not hasattr(learn, "raise_at") and all(type(c).__name__ != "RaiseAt" for c in learn.cbs)
    assert all(p.grad is None for p in learn.model.parameters())  # no half-done gradients
    assert learn.pred is None and learn.xb == ()
    with learn.no_logging():
        learn.fit(1)  # the learner still works
    assert len(learn.recorder.values) == 1


def test_exception_in_model_propagates_unchanged():
    class Broken(nn.Linear):
        def forward(self, x):
            raise Boom("forward failed")

    x, y, vx, vy = linear_data()
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy), Broken(3, 1), nn.MSELoss())
    with learn.no_logging(), pytest.raises(Boom, match="forward failed"):
        learn.fit(1)


def test_keyboard_interrupt_in_callback_is_noted_and_cleaned_up():
    learn = small_learner()
    with learn.no_logging(), pytest.raises(KeyboardInterrupt) as info:
        learn.fit(2, cbs=RaiseAt(KeyboardInterrupt(), "before_batch", skip=1))
    assert any("before_batch" in n for n in info.value.__notes__)
    assert not hasattr(learn, "raise_at")
    assert len(learn.recorder.losses) == 1  # the history so far is kept


def test_loop_matches_hand_written_seven_steps_exactly():
    x, y, vx, vy = linear_data(n=50, n_valid=20)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    ref = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    ref.load_state_dict(model.state_dict())
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=8, seed=3)
    learn = Learner(dls, model, nn.MSELoss(), opt_func=SGD, lr=0.05)
    with learn.no_logging():
        learn.fit(3)

    order = DataLoaders.from_tensors(x, y, vx, vy, bs=8, seed=3).train  # same generator, same batches
    for _ in range(3):
        for xb, yb in order:
            loss = nn.functional.mse_loss(ref(xb), yb)
            loss.backward()
            with torch.no_grad():
                for p in ref.parameters():
                    p.add_(p.grad, alpha=-0.05)
                    p.grad = None
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_training_reduces_loss_and_reaches_accuracy():
    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy)
    with learn.no_logging():
        learn.fit(5)
    acc = learn.recorder.column("accuracy")
    assert acc[-1] > 0.9
    assert learn.recorder.values[-1][0] < learn.recorder.values[0][0]


def test_optimizer_created_once_and_kept_across_fits():
    learn = small_learner()
    with learn.no_logging():
        learn.fit(1)
        opt = learn.opt
        learn.fit(1, lr=0.01)
        assert learn.opt is opt and opt.hypers[0]["lr"] == 0.01
        learn.fit(1, reset_opt=True)
    assert learn.opt is not opt and learn.opt.hypers[0]["lr"] == learn.lr


def test_wd_sets_weight_decay_hyper():
    learn = small_learner(wd=0.1)
    with learn.no_logging():
        learn.fit(1)
        assert learn.opt.hypers[0]["wd"] == 0.1
        learn.fit(1, wd=0.0)
    assert learn.opt.hypers[0]["wd"] == 0.0


def test_fit_zero_epochs_runs_only_fit_events():
    log = run_with(Callback(), n_epoch=0)
    assert log.events == ["before_fit", "after_fit"]


def test_callback_can_change_the_batch_and_loss():
    class ZeroInputs(Callback):
        def before_batch(self):
            self.learn.xb = (torch.zeros_like(self.xb[0]),)

    class ScaleLoss(Callback):
        def after_loss(self):
            self.learn.loss_grad = self.loss_grad * 0

    learn = small_learner()
    before = [p.clone() for p in learn.model.parameters()]
    with learn.no_logging():
        learn.fit(1, cbs=[ScaleLoss()])
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))

    seen = []

    class Spy(Callback):
        order = 10

        def after_pred(self):
            seen.append(self.xb[0].abs().sum().item())

    with learn.no_logging():
        learn.fit(1, cbs=[ZeroInputs(), Spy()])
    assert seen and all(s == 0 for s in seen)


def test_callbacks_run_in_order_with_ties_in_insertion_order():
    calls = []

    def make(label, order):
        cls = type(f"Cb{label}", (Callback,), {"order": order, "before_fit": lambda self: calls.append(label)})
        return cls()

    learn = small_learner()
    with learn.no_logging():
        learn.fit(0, cbs=[make("c", 5), make("a", -5), make("b1", 0), make("b2", 0)])
    assert calls == ["a", "b1", "b2", "c"]


def test_add_remove_and_context_managers():
    learn = small_learner()

    class Extra(Callback):
        pass

    cb = learn.add_cb(Extra)
    assert learn.extra is cb and cb.learn is learn and cb in learn.cbs
    learn.remove_cb(Extra)
    assert not hasattr(learn, "extra") and cb not in learn.cbs
    with learn.added_cbs([Extra()]):
        assert hasattr(learn, "extra")
    assert not hasattr(learn, "extra")
    with learn.removed_cbs(learn.recorder):
        assert not hasattr(learn, "recorder")
    assert hasattr(learn, "recorder")
    learn.add_cbs([Extra(), Extra()])
    learn.remove_cbs([Extra])
    assert not any(isinstance(c, Extra) for c in learn.cbs)


def test_callback_cannot_hide_learner_attribute():
    class Model(Callback):
        pass

    with pytest.raises(ValueError, match="cbs"):
        small_learner().add_cb(Model())


def test_validate_and_get_preds():
    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy)
    loss, acc = learn.validate()
    with torch.no_grad():
        out = learn.model(vx)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, vy).item(), abs=1e-6)
    assert acc == pytest.approx(accuracy(out, vy).item(), abs=1e-7)
    preds, targs = learn.get_preds()
    assert torch.allclose(preds, out, atol=1e-6) and torch.equal(targs, vy)
    probs, _ = learn.get_preds(act=lambda p: p.softmax(-1))
    assert torch.allclose(probs.sum(-1), torch.ones(len(vy)))
    assert learn.recorder.values == []  # validation does not add to the training history


@pytest.mark.parametrize("kwargs, arg", [
    (dict(model="not a module"), "model"),
    (dict(loss_func="mse"), "loss_func"),
    (dict(loss_func=None), "loss_func"),
    (dict(metrics=[42]), "metrics"),
    (dict(opt_func=3), "opt_func"),
    (dict(lr=-1.0), "lr"),
    (dict(dls=(1, 2)), "dls"),
    (dict(cbs=[object()]), "cbs"),
    (dict(metrics=[accuracy, accuracy]), "metrics"),
])
def test_bad_learner_arguments_raise_clear_errors(kwargs, arg):
    x, y, vx, vy = linear_data()
    args = dict(dls=DataLoaders.from_tensors(x, y, vx, vy), model=nn.Linear(3, 1), loss_func=nn.MSELoss())
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError), match=arg):
        Learner(**args)


@pytest.mark.parametrize("n_epoch", [-1, 1.5, "2", True])
def test_bad_n_epoch(n_epoch):
    learn = small_learner()
    before = [p.clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match="n_epoch"):
        learn.fit(n_epoch)
    assert learn.opt is None and all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))


def test_batches_follow_the_model_device():
    seen = []

    class Where(Callback):
        def before_batch(self):
            seen.append((self.xb[0].device, self.yb[0].device))

    learn = small_learner()
    with learn.no_logging():
        learn.fit(1, cbs=Where())
    dev = next(learn.model.parameters()).device
    assert seen and all(a == dev and b == dev for a, b in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_gets_cuda_batches_from_cpu_loaders():
    learn = small_learner(metrics=[])
    learn.model.cuda()
    with learn.no_logging():
        learn.fit(2)
    assert learn.recorder.values[-1][0] is not None
    assert next(learn.model.parameters()).is_cuda
    preds, _ = learn.get_preds()
    assert preds.device.type == "cpu"


def test_cancel_backward_on_one_batch_epoch_changes_nothing():
    learn = regression_learner(n=16, n_valid=16, bs=16)  # one training batch
    before = [p.clone() for p in learn.model.parameters()]
    with learn.no_logging():
        learn.fit(1, cbs=RaiseAt(CancelBackwardException(), "before_backward"))
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))


def test_callback_added_between_fits_runs():
    learn = small_learner()
    with learn.no_logging():
        learn.fit(1)
        log = learn.add_cb(LogEvents())
        learn.fit(1)
    assert log.events.count("after_step") == 2
    learn.remove_cb(log)
    with learn.no_logging():
        learn.fit(1)
    assert log.events.count("after_step") == 2


def test_callback_removed_by_another_during_an_event_does_not_run():
    ran = []

    class Victim(Callback):
        order = 5

        def before_fit(self):
            ran.append("victim")

    class Remover(Callback):
        def before_fit(self):
            self.learn.remove_cb(Victim)

    learn = small_learner()
    learn.add_cbs([Remover(), Victim()])
    with learn.no_logging():
        learn.fit(0)
    assert ran == []


def test_no_per_batch_host_sync(monkeypatch):
    """With the bar off, the loop never asks the device for a value per batch."""
    learn = regression_learner(n=320, n_valid=32, bs=16, metrics=[])  # 20 training batches an epoch
    calls = []
    for name in ("item", "tolist", "cpu", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _orig=original, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    with learn.no_bar():
        learn.fit(2)
    monkeypatch.undo()
    assert len(learn.recorder.losses) == 40
    assert len(calls) <= 4 * 2, calls  # a few per epoch (the table's numbers), none per batch


def test_validate_called_by_a_callback_mid_fit_leaves_the_fit_alone():
    x, y, vx, vy = class_data()
    other = DataLoaders.from_tensors(vx, vy, bs=16).train
    seen = []

    class Peek(Callback):
        def after_batch(self):
            if self.training and self.iter == 0:
                seen.append(self.learn.validate(dl=other))

    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 3))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy)
    torch.manual_seed(0)
    ref_model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 3))
    ref = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0), ref_model, nn.CrossEntropyLoss(),
                  lr=0.1, metrics=accuracy)
    torch.manual_seed(1)
    with learn.no_logging():
        learn.fit(2, cbs=Peek())
    torch.manual_seed(1)
    with ref.no_logging():
        ref.fit(2)
    assert len(seen) == 2 and all(len(v) == 2 for v in seen)
    assert learn.recorder.values == ref.recorder.values  # same losses, same validation numbers
    assert len(learn.recorder.losses) == len(ref.recorder.losses)
    for a, b in zip(learn.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)


def test_removed_cbs_puts_callbacks_back_in_place():
    class Late(Callback):
        order = 60

    learn = small_learner()
    learn.add_cb(Late())
    order = [type(c).__name__ for c in learn.cbs]
    assert order == ["TrainEvalCallback", "Recorder", "ProgressCallback", "Late"]
    learn.validate()
    learn.get_preds()
    with learn.no_logging():
        pass
    assert [type(c).__name__ for c in learn.cbs] == order


def test_passing_an_existing_or_same_named_callback_to_fit():
    from minilearn import Recorder

    learn = small_learner()
    own = learn.recorder
    with learn.no_logging():
        learn.fit(1, cbs=own)             # already there: stays after the fit
        assert learn.recorder is own and own in learn.cbs
        extra = Recorder()
        learn.fit(1, cbs=extra)           # a second Recorder for one fit
        assert learn.recorder is own       # the attribute goes back to the one that stays
        learn.fit(1)
    assert len(own.values) == 1 and len(extra.values) == 1


def test_cbs_is_read_only():
    learn = small_learner()
    with pytest.raises(AttributeError):
        learn.cbs.append(Callback())


def test_two_inputs_with_n_inp():
    class TwoIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 1), nn.Linear(2, 1)

        def forward(self, x1, x2):
            return self.a(x1) + self.b(x2)

    g = torch.Generator().manual_seed(0)
    x1, x2, y = torch.randn(40, 3, generator=g), torch.randn(40, 2, generator=g), torch.randn(40, 1, generator=g)
    from minilearn import DataLoader

    dls = DataLoaders(DataLoader((x1, x2, y), bs=8, shuffle=True, seed=0), DataLoader((x1, x2, y), bs=8))
    dls.n_inp = 2
    learn = Learner(dls, TwoIn(), nn.MSELoss())
    with learn.no_logging():
        learn.fit(1)
    assert learn.recorder.values[0][1] is not None
    preds, targs = learn.get_preds()
    assert preds.shape == (40, 1) and torch.equal(targs, y)


def test_unlabelled_batches_give_predictions_without_loss():
    x = torch.randn(20, 3)
    from minilearn import DataLoader

    learn = small_learner()
    preds, targs = learn.get_preds(dl=DataLoader(x, bs=8))
    with torch.no_grad():
        assert torch.allclose(preds, learn.model(x))
    assert targs is None


def test_validate_fires_only_the_validation_events():
    learn = small_learner()
    log = LogEvents()
    learn.validate(cbs=log)
    assert log.events == ["before_validate"] + VALID_BATCH + ["after_validate"]
    assert log.learn is None and log not in learn.cbs


def test_loop_state_is_declared_once_with_its_defaults_and_scopes():
    from minilearn.learner import LOOP_STATE

    learn = regression_learner()
    # a new learner holds every name at its declared default
    for name, (default, scope) in LOOP_STATE.items():
        assert scope in ("fit", "pass", "batch")
        assert getattr(learn, name) == default, name
    with learn.no_logging():
        learn.fit(2)
    # a fit keeps where training stands, but drops the batch in hand
    assert learn.epoch == 1 and learn.n_epoch == 2 and learn.train_iter == 8
    for name, (default, scope) in LOOP_STATE.items():
        if scope == "batch":
            assert getattr(learn, name) == default, name


def test_kept_state_puts_back_the_scopes_asked_for_even_after_an_error():
    learn = regression_learner()
    learn.epoch, learn.iter, learn.pred = 5, 3, torch.ones(1)
    with pytest.raises(RuntimeError, match="inside"), learn.kept_state("pass"):
        learn.epoch, learn.iter, learn.pred = 9, 9, None
        raise RuntimeError("inside")
    assert learn.iter == 3            # "pass" put back
    assert learn.epoch == 9           # "fit" was not asked for
    assert learn.pred is None         # nor "batch"
    with learn.kept_state():
        learn.epoch, learn.pred = 0, torch.zeros(1)
    assert learn.epoch == 9 and learn.pred is None
    with pytest.raises(ValueError, match="scopes: expected 'fit', 'pass' or 'batch', got \\['pas'\\]"):
        with learn.kept_state("pas"):
            pass


def test_callbacks_sit_out_the_side_runs_their_class_names():
    events = []

    class KeepsRecord(Callback):
        sits_out = ("lr_find", "validate")

        def before_fit(self):
            events.append("fit")

        def before_validate(self):
            events.append("validate")

    class Everywhere(Callback):
        def before_validate(self):
            events.append("everywhere")

    learn = regression_learner(n=160, cbs=[KeepsRecord(), Everywhere()])
    with learn.no_logging():
        learn.validate()
        learn.get_preds()
        learn.lr_find(num_it=10, show_plot=False, suggest_funcs=())
    assert events == ["everywhere", "everywhere"]  # lr_find skips validation; KeepsRecord never ran
    assert [type(cb).__name__ for cb in learn.cbs].count("KeepsRecord") == 1  # and it is back afterwards


def test_start_epoch_is_checked():
    learn = class_learner()
    with pytest.raises(ValueError, match="start_epoch"):
        learn.fit(2, start_epoch=3)


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


def test_the_learner_reads_what_it_lacks_from_its_model():
    learn = small_learner()
    assert learn.weight is learn.model.weight and list(learn.parameters()) == list(learn.model.parameters())
    with pytest.raises(AttributeError, match="'Learner' object has no attribute 'nope', nor has its model"):
        learn.nope
    with pytest.raises(AttributeError):
        learn._private
    import copy
    assert copy.deepcopy(learn).model is not learn.model  # no recursion through the delegation


def test_to_fp16_to_bf16_and_to_fp32_add_and_remove_mixed_precision():
    from minilearn import MixedPrecision

    learn = small_learner()
    assert learn.to_bf16() is learn and learn.mixed_precision.dtype == torch.bfloat16
    learn.to_fp16()
    assert [type(cb) for cb in learn.cbs].count(MixedPrecision) == 1 and learn.mixed_precision.dtype == torch.float16
    learn.to_fp32()
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)
    learn.to_bf16()
    with learn.no_logging():
        learn.fit(1)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_an_lr_bound_in_a_partial_opt_func_becomes_the_learners_lr():
    from functools import partial

    x, y, vx, vy = linear_data(n=32, n_valid=16)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16), nn.Linear(3, 1), nn.MSELoss(),
                    opt_func=partial(SGD, lr=0.03, mom=0.9))
    with learn.no_logging():
        learn.fit(1)
    assert learn.lr == 0.03 and learn.opt.hypers[0]["lr"] == 0.03 and learn.opt.hypers[0]["mom"] == 0.9


def test_the_logged_loss_is_not_changed_by_a_penalty_added_to_loss_grad():
    class Penalty(Callback):  # fastbook chapter 16's regularisers add to loss_grad after the loss
        def after_loss(self):
            self.learn.loss_grad = self.learn.loss_grad + 100.0

    class InPlacePenalty(Callback):  # fastai's RNNRegularizer writes it in place
        def after_loss(self):
            self.learn.loss_grad += 100.0

    plain, penalised, in_place = small_learner(), small_learner(cbs=Penalty()), small_learner(cbs=InPlacePenalty())
    with plain.no_logging(), penalised.no_logging(), in_place.no_logging():
        plain.fit(1, lr=0.0)
        penalised.fit(1, lr=0.0)  # lr 0: the penalty changes no weight, only what backward sees
        in_place.fit(1, lr=0.0)
    assert penalised.recorder.losses == plain.recorder.losses == in_place.recorder.losses


def test_parameters_frozen_by_hand_before_the_first_fit():
    x, y, vx, vy = class_data()
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    for p in model[:2].parameters():
        p.requires_grad_(False)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16), model, nn.CrossEntropyLoss())
    before = [p.clone() for p in model[:2].parameters()]
    with learn.no_logging():
        learn.fit(1)  # the frozen BatchNorm's parameters are not the optimiser's, so not excluded from wd either
    assert all(torch.equal(a, b) for a, b in zip(before, model[:2].parameters()))


def classifier(vocab=None, **kwargs):
    """A 4 -> 3 linear classifier on `class_data` with fastai's flat cross-entropy (it decodes)."""
    from minilearn import CrossEntropyLossFlat

    x, y, vx, vy = class_data()
    torch.manual_seed(0)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0, vocab=vocab)
    return Learner(dls, nn.Linear(4, 3), CrossEntropyLossFlat(), lr=0.1, **kwargs), (x, y, vx, vy)


def test_get_preds_the_fastai_way():
    learn, (x, y, vx, vy) = classifier()
    with learn.no_logging():
        learn.fit(1)
    with torch.no_grad():
        logits = learn.model(vx)
    probs, targs = learn.get_preds()  # the loss's activation: softmax
    assert torch.allclose(probs, logits.softmax(-1), atol=1e-6) and torch.equal(targs, vy)
    inp, probs2, targs2, decoded, losses = learn.get_preds(with_input=True, with_decoded=True, with_loss=True)
    assert torch.equal(inp, vx) and torch.equal(probs2, probs) and torch.equal(targs2, vy)
    assert torch.equal(decoded, probs.argmax(-1))
    assert torch.allclose(losses, nn.functional.cross_entropy(logits, vy, reduction="none"), atol=1e-6)
    assert learn.loss_func.reduction == "mean"  # put back after with_loss
    raw, _ = learn.get_preds(act=lambda p: p)
    assert torch.allclose(raw, logits, atol=1e-6)
    # ds_idx=0: the shuffled training loader, in dataset order
    train_probs, train_targs = learn.get_preds(ds_idx=0)
    assert torch.equal(train_targs, y) and train_probs.shape == (len(x), 3)
    assert learn.validate(ds_idx=0)[0] == pytest.approx(nn.functional.cross_entropy(learn.model(x), y).item(), rel=1e-5)
    # a loader given first is the loader, as before ds_idx came first
    assert learn.validate(learn.dls.valid) == learn.validate()
    with pytest.raises(ValueError, match="ds_idx: the DataLoaders have no loader 2"):
        learn.get_preds(ds_idx=2)
    # new inputs without labels
    preds, targs = learn.get_preds(dl=learn.dls.test_dl(vx[:5]))
    assert targs is None and torch.allclose(preds, probs[:5])


def test_loss_not_reduced_and_its_error_for_a_plain_function():
    learn, _ = classifier()
    with learn.loss_not_reduced():
        assert learn.loss_func.reduction == "none"
    assert learn.loss_func.reduction == "mean"
    x, y, vx, vy = linear_data(n=32, n_valid=16)
    plain = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16), nn.Linear(3, 1), lambda p, t: ((p - t) ** 2).mean())
    with pytest.raises(TypeError, match="loss_func: function has no `reduction`"):
        with plain.loss_not_reduced():
            pass


def test_predict_decodes_with_a_vocab_and_gives_the_raw_output_without():
    learn, (x, y, vx, vy) = classifier(vocab=["a", "b", "c"])
    with learn.no_logging():
        learn.fit(2)
    name, index, probs = learn.predict(vx[0])
    with torch.no_grad():
        expected = learn.model(vx[:1])[0].softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-6) and int(index) == int(expected.argmax())
    assert name == ["a", "b", "c"][int(index)]
    names, _, _ = learn.predict(vx[:4])
    assert len(names) == 4
    plain, _ = classifier()
    out = plain.predict(vx[0])
    assert isinstance(out, torch.Tensor) and out.shape == (3,)


def test_calling_the_learner_with_a_list_of_events_and_one_batch_by_hand():
    log = LogEvents()
    learn = small_learner(cbs=log)
    log.events.clear()
    learn(["after_create", "before_epoch"])
    assert log.events == ["after_create", "before_epoch"]
    learn.training, learn.device, learn.n_iter = True, torch.device("cpu"), 1
    learn.create_opt()
    log.events.clear()
    learn.one_batch(0, learn.dls.one_batch())
    assert log.events[0] == "before_batch" and log.events[-1] == "after_batch" and learn.iter == 0
    assert learn.loss is not None


def test_x_and_y_are_the_batchs_input_and_target():
    seen = []

    class Look(Callback):
        def after_pred(self):
            seen.append((self.x, self.y))

    learn = small_learner(cbs=Look())
    with learn.no_logging():
        learn.fit(1)
    x, y = seen[0]
    assert x.shape == (16, 3) and y.shape == (16, 1)
    learn.xb, learn.yb = (torch.zeros(1), torch.ones(1)), ()
    assert isinstance(learn.x, tuple) and len(learn.x) == 2 and learn.y == ()


def test_in_jupyter_a_traceback_shows_the_users_frames_not_the_loops():
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import torch\nfrom torch import nn\nfrom minilearn import DataLoaders, Learner\n"
        "class Broken(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(3, 1)\n"
        "    def forward(self, x):\n        raise ValueError('my model broke')\n"
        "x = torch.randn(32, 3); y = torch.randn(32, 1)\n"
        "learn = Learner(DataLoaders.from_tensors(x, y, bs=8), Broken(), nn.MSELoss())\n"
        "learn.fit(1)")]
    client = NotebookClient(nb, timeout=120, kernel_name="python3")
    with pytest.raises(CellExecutionError):
        client.execute()
    (error,) = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))  # without the colours
    assert "my model broke" in text and "raise ValueError('my model broke')" in text  # the user's frame
    assert "minilearn: raised at epoch 0, training batch 0" in text  # and the note
    for hidden in ("_with_events", "_all_batches", "_do_epoch", "_do_fit", "def fit("):
        assert hidden not in text, hidden
    assert "_do_one_batch" in text  # the step that called the model stays


def test_reprs_say_what_the_objects_hold():
    from minilearn import DataLoaders, accuracy

    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    learn = Learner(DataLoaders.from_tensors(x, y, x[:10], y[:10], bs=8), nn.Linear(3, 2), nn.CrossEntropyLoss(),
                    metrics=accuracy)
    text = repr(learn)
    for part in ("model=Linear with 8 parameters (8 trainable)", "loss=CrossEntropyLoss", "metrics=['accuracy']",
                 "data=train 40 / valid 10 items, bs 8", "opt=made at the first fit", "not trained yet"):
        assert part in text, part
    assert repr(learn.recorder) == "Recorder(nothing recorded yet; beta 0.98)"
    assert repr(learn.metrics) == "[AvgMetric('accuracy')]"
    with learn.no_logging():
        learn.fit(2)
    assert "2 epoch(s) recorded, last row {'epoch': 1," in repr(learn) and "opt=Adam(1 group(s)" in repr(learn)
    assert repr(learn.recorder).startswith("Recorder(2 epoch(s), 10 training batch(es); last row {'epoch': 1,")


def test_a_torch_dataloader_as_dls_says_how_to_wrap_it():
    from torch.utils.data import DataLoader as TorchDataLoader, TensorDataset

    dl = TorchDataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)))
    for dls in (dl, (dl, dl)):
        with pytest.raises(TypeError, match=r"dls: .*torch DataLoader.*DataLoaders\(train_dl, valid_dl\)"):
            Learner(dls, nn.Linear(3, 1), nn.MSELoss())


def test_fit_and_fit_one_cycle_document_every_argument():
    import inspect

    for method in (Learner.fit, Learner.fit_one_cycle):
        doc = inspect.getdoc(method)
        for name in inspect.signature(method).parameters:
            if name not in ("self", "n_epoch"):
                assert f"`{name}" in doc, (method.__name__, name)


def test_a_fit_inside_a_fit_is_refused_and_a_failed_fit_puts_the_modes_back():
    from minilearn import Callback
    from synthetic import small_learner

    class Nested(Callback):
        def after_epoch(self):
            self.learn.fit(1)

    learn = small_learner()
    with pytest.raises(RuntimeError, match="already fitting"), learn.no_logging():
        learn.fit(2, cbs=Nested())
    with learn.no_logging():
        learn.fit(1)  # and the learner goes on
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    learn = small_learner()
    learn.model = model
    model.eval()
    model[1].train()  # a mix, as a user may leave it

    class Boom(Callback):
        def after_pred(self):
            if self.training and self.iter == 1:
                raise ValueError("boom")

    with pytest.raises(ValueError), learn.no_logging():
        learn.fit(1, cbs=Boom())
    assert [m.training for m in model.modules()] == [False, False, True, False]


def test_a_callback_runs_in_one_learner_and_cannot_hide_the_learners_attributes():
    from minilearn import Callback
    from synthetic import small_learner

    class Counter(Callback):
        pass

    cb, first, second = Counter(), small_learner(), small_learner()
    first.add_cb(cb)
    with pytest.raises(ValueError, match="belongs to another Learner"):
        second.add_cb(cb)
    first.remove_cb(cb)
    second.add_cb(cb)  # free again: fine
    assert cb.learn is second

    class OptCallback(Callback):  # would be learn.opt, the optimiser's place (None before the first fit)
        pass

    with pytest.raises(ValueError, match=r"named 'opt' would hide the Learner's attribute"):
        small_learner().add_cb(OptCallback())


def test_a_validate_inside_a_fit_has_its_own_metric_state_and_leaves_the_fits_cleanup_alone(tmp_path):
    from minilearn import CSVLogger, Callback, DataLoaders, accuracy
    from synthetic import class_data

    x, y, vx, vy = class_data(n=90, n_valid=45)

    def learner():  # each its own loaders: the same batches in the same order
        torch.manual_seed(0)
        dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
        return Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy, path=tmp_path)

    class ValidateOnTrain(Callback):
        busy = False

        def after_validate(self):  # before the Recorder reads the epoch's accuracy
            if not self.busy:  # (the side pass runs this event too)
                self.busy = True
                self.seen = self.learn.validate(dl=self.dls.train)
                self.busy = False

    plain, probed = learner(), learner()
    with plain.no_logging():
        plain.fit(2)
    with probed.no_logging():
        probed.fit(2, cbs=ValidateOnTrain())
    assert probed.recorder.values == plain.recorder.values  # the table's valid accuracy is still the valid set's

    class FailingProbe(Callback):
        def after_epoch(self):
            with pytest.raises(ValueError, match="a broken side pass"):
                self.learn.validate(cbs=Boom())

    class Boom(Callback):
        def before_batch(self):
            raise ValueError("a broken side pass")

    learn = learner()
    logger = CSVLogger()
    with learn.no_logging():
        learn.fit(3, cbs=[logger, FailingProbe()])
    assert len(logger.read_rows()) == 3  # the logger was not closed by the failed side pass

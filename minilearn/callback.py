"""Callback, the event list and the Cancel*Exception family: the vocabulary of the training loop.

Event names, their order and the cancel semantics are fastai's, so a fastai callback ports by
changing its imports. A cancel exception raised during `<x>` runs `after_cancel_<x>` and then
`after_<x>`, and the loop goes on at the next level up.
"""

from __future__ import annotations

import difflib
import itertools
import re
import types
import warnings

from typing import Callable

import torch
from fastcore.basics import camel2snake
from fastcore.foundation import L

from minilearn.checks import check_callable

# The shape of a fit, one row per event: (nesting depth, event, phase). Batch events appear twice,
# for training (phase True) and validation (phase False); an `after_cancel_<x>` runs only when
# a Cancel<X>Exception was raised in `<x>`, right before `after_<x>`.
LOOP_LAYOUT = (
    (0, "before_fit", None),
    (1, "before_epoch", None),
    (2, "before_train", None),
    (3, "before_batch", True), (3, "after_pred", True), (3, "after_loss", True),
    (3, "before_backward", True), (3, "after_cancel_backward", True), (3, "after_backward", True),
    (3, "before_step", True), (3, "after_cancel_step", True), (3, "after_step", True),
    (3, "after_cancel_batch", True), (3, "after_batch", True),
    (2, "after_cancel_train", None), (2, "after_train", None),
    (2, "before_validate", None),
    (3, "before_batch", False), (3, "after_pred", False), (3, "after_loss", False),
    (3, "after_cancel_batch", False), (3, "after_batch", False),
    (2, "after_cancel_validate", None), (2, "after_validate", None),
    (1, "after_cancel_epoch", None), (1, "after_epoch", None),
    (0, "after_cancel_fit", None), (0, "after_fit", None),
)

# Every event, in the order a fit meets them; `after_create` runs once, when the Learner is made.
EVENTS = ("after_create",) + tuple(dict.fromkeys(event for _, event, _ in LOOP_LAYOUT))



class event:
    """Every event's name as an attribute (`event.after_batch == "after_batch"`), for tab
    completion and to catch a misspelt name at once (fastai's `event`)."""


for _name in EVENTS:
    setattr(event, _name, _name)
del _name

# Events inside the batch loop: `run_train` / `run_valid` decide whether a callback sees them.
BATCH_EVENTS = frozenset(event for depth, event, _ in LOOP_LAYOUT if depth == 3)


class CancelBatchException(Exception):
    """Skip the rest of this batch: runs `after_cancel_batch`, then `after_batch`."""


class CancelBackwardException(Exception):
    """Skip the backward pass: runs `after_cancel_backward`, then `after_backward`."""


class CancelStepException(Exception):
    """Skip the optimiser step: runs `after_cancel_step`, then `after_step`."""


class CancelTrainException(Exception):
    """Skip the rest of the training phase: runs `after_cancel_train`, then `after_train`."""


class CancelValidException(Exception):
    """Skip the rest of validation: runs `after_cancel_validate`, then `after_validate`."""


class CancelEpochException(Exception):
    """Skip the rest of this epoch: runs `after_cancel_epoch`, then `after_epoch`."""


class CancelFitException(Exception):
    """Stop training: runs `after_cancel_fit`, then `after_fit`."""


CANCEL_EXCEPTIONS = (
    CancelBatchException, CancelBackwardException, CancelStepException, CancelTrainException,
    CancelValidException, CancelEpochException, CancelFitException,
)

# Learner state a callback may read as `self.<name>` (fastai callbacks are written that way).
# Reads only: a write must say `self.learn.<name> = ...`, so where state changes is visible.
LEARNER_STATE = frozenset({
    "model", "opt", "dls", "dl", "loss_func", "metrics", "pred", "loss", "loss_grad", "xb", "yb",
    "epoch", "iter", "n_epoch", "n_iter", "pct_train", "train_iter", "training", "smooth_loss",
    "lr", "wd", "cbs", "path", "model_dir", "device", "recorder",
})


def add_note(e: BaseException, note: str) -> None:
    """`e.add_note(note)`, also on Python 3.10 (where the traceback does not print notes)."""
    if hasattr(e, "add_note"):
        e.add_note(note)
    else:
        e.__notes__ = [*getattr(e, "__notes__", []), note]


def note_once(e: BaseException, note: str) -> None:
    """Add `note` to the exception unless minilearn already noted where it arose."""
    if not any(n.startswith("minilearn: ") for n in getattr(e, "__notes__", [])):
        add_note(e, note)


def where_in_loop(learn) -> str:
    """Where in the loop an error arose, with what the model was given (for the error's note)."""
    def describe(ts):
        return ", ".join(f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"
                         if isinstance(t, torch.Tensor) else type(t).__name__ for t in ts) or "nothing"
    param = next(learn.model.parameters(), None)
    model = f"{str(param.dtype).replace('torch.', '')} on {param.device}" if param is not None else "no parameters"
    phase = "training" if learn.training else "validation"
    pred = learn.pred
    pred = f"; pred: {describe(pred if isinstance(pred, (tuple, list)) else (pred,))}" if pred is not None else ""
    return (f"minilearn: raised at epoch {learn.epoch}, {phase} batch {learn.iter}; inputs: {describe(learn.xb)}; "
            f"targets: {describe(learn.yb)}{pred}; model parameters: {model}")


def misspelt_events(cb) -> list[tuple[str, str]]:
    """`(method, event)` for each method of `cb`'s own classes that looks like a misspelt event
    (`after_batchh`, `before_fitt`, `afterbatch`): a method no event calls, whose name is one or
    two letters from an event's. Methods of `Callback` itself are not checked."""
    found = []
    for klass in type(cb).__mro__:
        if klass is Callback or klass is object:
            break
        for name, value in vars(klass).items():
            if name.startswith("_") or name in EVENTS or not callable(value):
                continue
            close = difflib.get_close_matches(name, EVENTS, n=1, cutoff=0.85)
            if close:
                found.append((name, close[0]))
    return found


def callback_name(cls: type) -> str:
    """The attribute a callback is reachable at: `Recorder` -> `recorder`, `FooCallback` -> `foo`."""
    name = re.sub(r"Callback$", "", cls.__name__) or cls.__name__
    return camel2snake(name)


class Callback:
    """Base class for callbacks: implement any event as a method taking no argument.

    A callback runs at the events it defines, in ascending `order` among all callbacks (ties
    keep the order they were added in). `run_train=False` / `run_valid=False` keep it out of
    the batch events of that phase. `run_after` / `run_before` (a callback class, or a list of
    them) place it after / before those callbacks whatever their `order`. It reads any attribute
    of its learner as `self.<name>` (`self.pred`, `self.recorder`, ...) and writes the learner's
    state as `self.learn.<name> = ...`; `cb("after_batch")` runs one event by hand.
    """

    order: int = 0
    run_train: bool = True
    run_valid: bool = True
    # The learner's side runs this callback stays out of: "lr_find" (the LR finder's short fit)
    # and "validate" (a stand-alone `validate` / `get_preds`). Callbacks that keep a run's record
    # (the Recorder, the table, trackers, loggers) sit out the side runs that are not the run.
    sits_out: tuple[str, ...] = ()
    run_after = None   # a Callback class (or a list of them) this one must run after
    run_before = None  # ... or before
    learn = None

    @property
    def name(self) -> str:
        """The attribute of the learner this callback is reachable at."""
        return callback_name(type(self))

    def __getattr__(self, name: str):
        # The one delegation of a callback, called only when normal lookup fails: a public name
        # the callback lacks is read from its learner (its state, other callbacks by name, what
        # another callback set with `self.learn.foo = ...`, and through the learner its model),
        # as fastai's callbacks read it. Private and dunder names are never forwarded.
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        learn = self.__dict__.get("learn") or type(self).learn
        if learn is None:
            raise AttributeError(f"{type(self).__name__}.{name}: no such attribute, and the callback is not "
                                 f"attached to a Learner to read it from")
        try:
            return getattr(learn, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__}.{name}: neither the callback nor its Learner "
                                 f"has an attribute {name!r}") from None

    def __setattr__(self, name: str, value) -> None:
        # Catch `self.pred = ...` in an event: it would shadow the learner's state, not change it.
        if name in LEARNER_STATE and name not in self.__dict__ and self.__dict__.get("learn") is not None:
            raise AttributeError(
                f"{type(self).__name__}: `self.{name} = ...` would not change the learner; "
                f"write `self.learn.{name} = ...`")
        super().__setattr__(name, value)

    def __init__(self, **events):
        # fastai's Callback(before_fit=f, ...): each f(cb) becomes that event's method on this callback
        for name, f in events.items():
            if name not in EVENTS:
                raise ValueError(f"{name}: not an event; the events are {list(EVENTS)}")
            check_callable(name, f, "a function f(callback)")
            object.__setattr__(self, name, types.MethodType(f, self))

    def __call__(self, name: str):
        """Run this callback's method `name` by hand (fastai's debugging idiom): an event only if
        the callback runs in the learner's current phase; nothing if it has no such method."""
        method = event_method(self, name)
        training = getattr(self.__dict__.get("learn") or type(self).learn, "training", True)
        if method is None or (name in EVENTS and not self.runs_at(name, training)):
            return None
        return method()

    # -- the state protocol: what a backup (`BackupCallback`) keeps of this callback, so that a run
    # killed and started again continues exactly. Plain data and tensors only (the file is read
    # with `weights_only=True`); nothing by default, for callbacks that hold no run state.
    def state_dict(self) -> dict:
        """This callback's run state (history, best value, position, ...) as plain data and tensors."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Put back what `state_dict()` returned (called after the callback's own `before_fit`)."""

    def runs_at(self, event: str, training: bool) -> bool:
        """Whether this callback runs at `event` in the current phase (train or valid)."""
        if event not in BATCH_EVENTS:
            return True
        return self.run_train if training else self.run_valid

    def __repr__(self) -> str:
        return type(self).__name__


# Numbers callbacks as they are first added to a learner: ties in `order` keep this order.
_ADD_SEQ = itertools.count()


class CallbackList(L):
    """A learner's callbacks, in the order they run: a fastcore `L` (indexing, `map`, `filter`,
    ... as fastai users have it) that refuses changes, which go through `add_cb` / `remove_cb`
    so that the order and the `learn.<name>` attributes stay right."""

    def _refuse(self, *args, **kwargs):
        raise AttributeError("learn.cbs is read-only: change it with learn.add_cb / learn.remove_cb")

    append = extend = insert = remove = pop = clear = __setitem__ = __delitem__ = __iadd__ = _refuse

    def _new(self, items, *args, **kwargs) -> L:
        return L(items, *args, **kwargs)  # what map / filter / slicing give is a plain L


def sorted_cbs(cbs) -> CallbackList:
    """`cbs` in the order they run: ascending `order`, ties in the order they were first added,
    except that a callback with `run_after` / `run_before` goes after / before the callbacks of
    those classes (a topological order; the `order` rule decides among the ready ones)."""
    for cb in cbs:
        if getattr(cb, "_added_seq", None) is None:
            cb._added_seq = next(_ADD_SEQ)
    ready_first = sorted(cbs, key=lambda c: (c.order, c._added_seq))
    after: dict[int, set[int]] = {id(c): set() for c in ready_first}  # id(cb) -> ids it must follow
    for c in ready_first:
        for other in ready_first:
            if other is not c and (_is_one_of(other, c.run_after) or _is_one_of(c, other.run_before)):
                after[id(c)].add(id(other))
    out: list = []
    while len(out) < len(ready_first):
        placed = {id(c) for c in out}
        nxt = next((c for c in ready_first if id(c) not in placed and after[id(c)] <= placed), None)
        if nxt is None:
            stuck = [type(c).__name__ for c in ready_first if id(c) not in placed]
            raise ValueError(f"cbs: run_after / run_before make a cycle among {stuck}")
        out.append(nxt)
    return CallbackList(out)


def _is_one_of(cb, classes) -> bool:
    """Whether `cb` is an instance of `classes` (a class, a list of classes, or None)."""
    if classes is None:
        return False
    return isinstance(cb, tuple(classes) if isinstance(classes, (list, tuple)) else classes)


def cleanup_fits(cbs) -> None:
    """Each callback's `cleanup_fit`: what must be released after a fit or a pass, even one that
    raised. A cleanup that fails is reported as a warning, never hiding the error that ended the fit."""
    for cb in cbs:
        cleanup = event_method(cb, "cleanup_fit")
        if cleanup is not None:
            try:
                cleanup()
            except Exception as e:
                warnings.warn(f"{type(cb).__name__}.cleanup_fit raised {e!r}", RuntimeWarning, stacklevel=3)


def event_method(cb, name: str):
    """`cb`'s own method `name` (an event, `cleanup_fit`), bound, or None: looked up on the
    callback alone, never read through to its learner."""
    method = cb.__dict__.get(name)
    if method is None and callable(getattr(type(cb), name, None)):
        method = getattr(cb, name)
    return method if callable(method) else None


def print_training_loop(cbs) -> None:
    """Print the events of a fit, indented by nesting, with the callbacks of `cbs` that run at each."""
    for depth, event, training in LOOP_LAYOUT:
        names = [type(cb).__name__ for cb in cbs if event_method(cb, event) is not None
                 and cb.runs_at(event, training if training is not None else True)]
        label = f"{'  ' * depth}{event}" + (" (train)" if training else " (valid)" if training is False else "")
        print(f"{label:<36}: {', '.join(names)}" if names else label)


def before_batch_cb(f: Callable) -> "Callback":
    """A callback from `f(cb, xb, yb) -> (xb, yb)`, which changes each batch before the model sees
    it (fastai's decorator)."""
    def before_batch(self):
        self.learn.xb, self.learn.yb = f(self, self.xb, self.yb)
    return Callback(before_batch=before_batch)


class TrainEvalCallback(Callback):
    """Built in: switches the model between train and eval mode and counts training progress;
    a model with a `reset()` method is reset at the start of each fit (fastai's rule).

    It runs first (order -10), so every other callback sees `training`, `pct_train` and
    `train_iter` already up to date, as in fastai.
    """

    order = -10
    run_valid = False

    def before_fit(self) -> None:
        if callable(getattr(self.learn.model, "reset", None)):
            self.learn.model.reset()  # a stateful model (an RNN's hidden state) starts each fit afresh, as fastai's
        # a resumed fit (start_epoch > 0) counts the skipped epochs as done
        start = self.learn.start_epoch
        self.learn.train_iter = start * len(self.learn.dls.train)
        self.learn.pct_train = start / max(self.learn.n_epoch, 1)

    def before_train(self) -> None:
        self.learn.pct_train = self.learn.epoch / max(self.learn.n_epoch, 1)
        self.learn.model.train()
        self.learn.training = True

    def after_batch(self) -> None:
        self.learn.pct_train += 1.0 / (self.learn.n_iter * self.learn.n_epoch)
        self.learn.train_iter += 1

    def before_validate(self) -> None:
        self.learn.model.eval()
        self.learn.training = False

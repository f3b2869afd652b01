"""Learner: fastbook chapter 4's seven steps, with fastai's callback events around each of them.

    1. init      the model's parameters (made by the model), the optimiser (made on first fit)
    2. predict   pred = model(*xb)
    3. loss      loss = loss_func(pred, *yb)
    4. gradient  loss.backward()
    5. step      opt.step(); opt.zero_grad()
    6. repeat    for every batch of every epoch
    7. stop      after n_epoch epochs, or when a callback raises CancelFitException

The loop is the block of methods from `fit` to `_do_one_batch`; the rest is plumbing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from minilearn.callback import (
    BATCH_EVENTS, CANCEL_EXCEPTIONS, Callback, CancelBackwardException, CancelBatchException,
    CancelEpochException, CancelFitException, CancelStepException, CancelTrainException,
    CancelValidException, GatherPredsCallback, TrainEvalCallback,
)
from minilearn.callbacks.progress import ProgressCallback
from minilearn.callbacks.recorder import Recorder
from minilearn.data import DataLoader, to_device
from minilearn.metrics import as_metric
from minilearn.optim import SGD


class Learner:
    """Trains `model` on `dls` by minimising `loss_func`, with callbacks around every step.

    `opt_func(params, lr=...)` makes the optimiser: one of ours (`SGD`, ...) or anything with
    the same interface. `splitter(model)` gives the parameter groups (default: one group).
    `metrics`: functions `f(pred, targ)` or objects with update/compute/reset, shown per epoch.
    """

    def __init__(self, dls, model: nn.Module, loss_func: Callable | None = None, opt_func: Callable = SGD,
                 lr: float = 1e-3, splitter: Callable | None = None, cbs=None, metrics=None,
                 path: str | Path = ".", model_dir: str | Path = "models", wd: float | None = None,
                 default_cbs: bool = True):
        _check_args(dls, model, loss_func, opt_func, lr, splitter)
        self.dls, self.model, self.loss_func, self.opt_func = dls, model, loss_func, opt_func
        self.lr, self.wd, self.splitter = lr, wd, splitter
        self.metrics = [as_metric(m) for m in _as_list(metrics)]
        _check_unique([m.name for m in self.metrics], "metrics")
        self.path, self.model_dir = Path(path), Path(model_dir)
        self.opt = None
        self.cbs: list[Callback] = []
        self._handlers: dict[str, list] = {}
        self.epoch, self.n_epoch, self.iter, self.n_iter, self.train_iter = 0, 1, 0, 0, 0
        self.pct_train, self.training, self.smooth_loss = 0.0, False, None
        self.dl, self.xb, self.yb, self.pred, self.loss, self.loss_grad = None, (), (), None, None, None
        self.device = None
        if default_cbs:
            self.add_cbs([TrainEvalCallback(), Recorder(), ProgressCallback()])
        self.add_cbs(cbs)
        self("after_create")

    # ------------------------------------------------------------------ the loop
    def fit(self, n_epoch: int, lr: float | None = None, wd: float | None = None, cbs=None,
            reset_opt: bool = False) -> None:
        """Train for `n_epoch` epochs at learning rate `lr` (default: the Learner's `lr`)."""
        if not isinstance(n_epoch, int) or isinstance(n_epoch, bool) or n_epoch < 0:
            raise ValueError(f"n_epoch: expected an int >= 0, got {n_epoch!r}")
        with self.added_cbs(cbs):
            if reset_opt or self.opt is None:
                self.create_opt()                                  # 1. init (the optimiser)
            wd = self.wd if wd is None else wd
            if wd is not None:
                self.opt.set_hypers(wd=wd)
            self.opt.set_hypers(lr=self.lr if lr is None else lr)
            self.n_epoch = n_epoch
            self._to_device()
            try:
                self._with_events(self._do_fit, "fit", CancelFitException)
            finally:
                self._end_cleanup()

    def _do_fit(self) -> None:
        for self.epoch in range(self.n_epoch):                     # 6. repeat (epochs)
            self._with_events(self._do_epoch, "epoch", CancelEpochException)
        # 7. stop: the epochs ran out, or a CancelFitException ended `_with_events` above.

    def _do_epoch(self) -> None:
        self.dl = self.dls.train
        self._with_events(self._all_batches, "train", CancelTrainException)
        if self.dls.valid is not None:
            self._do_validate(self.dls.valid)

    def _do_validate(self, dl) -> None:
        self.dl = dl
        with torch.no_grad():
            self._with_events(self._all_batches, "validate", CancelValidException)

    def _all_batches(self) -> None:
        self.n_iter = len(self.dl)
        for self.iter, batch in enumerate(self.dl):                # 6. repeat (batches)
            batch = to_device(batch, self.device)
            self.xb, self.yb = batch[:1], batch[1:]
            self.pred = self.loss = self.loss_grad = None          # nothing stale if a batch is cancelled
            self._with_events(self._do_one_batch, "batch", CancelBatchException)

    def _do_one_batch(self) -> None:
        self.pred = self.model(*self.xb)                           # 2. predict
        self("after_pred")
        self.loss_grad = self.loss_func(self.pred, *self.yb)       # 3. loss
        self.loss = self.loss_grad.detach()
        self("after_loss")
        if not self.training:
            return
        self._with_events(self._backward, "backward", CancelBackwardException)
        self._with_events(self._step, "step", CancelStepException)
        self.opt.zero_grad()

    def _backward(self) -> None:
        self.loss_grad.backward()                                  # 4. gradient

    def _step(self) -> None:
        self.opt.step()                                            # 5. step

    def _with_events(self, f: Callable, name: str, cancel: type[Exception]) -> None:
        """Run `before_<name>`, f, `after_<name>`; a `cancel` exception runs `after_cancel_<name>`."""
        try:
            self(f"before_{name}")
            f()
        except cancel:
            self(f"after_cancel_{name}")
        self(f"after_{name}")

    # ------------------------------------------------------------------ events
    def __call__(self, event: str) -> None:
        """Run `event` on every callback that has it, in order."""
        handlers = self._handlers.get(event)
        if handlers is None:
            handlers = self._handlers[event] = [
                (cb, getattr(cb, event)) for cb in self.cbs if callable(getattr(cb, event, None))]
        batch_event = event in BATCH_EVENTS
        for cb, method in handlers:
            if batch_event and not (cb.run_train if self.training else cb.run_valid):
                continue
            try:
                method()
            except CANCEL_EXCEPTIONS:
                raise
            except BaseException as e:
                _note_once(e, f"minilearn: raised in callback {cb.name!r} ({type(cb).__name__}) at event {event!r}")
                raise

    def _to_device(self) -> None:
        """Put the model on the loaders' device if they name one; batches follow the model."""
        dls_device = getattr(self.dls, "device", None)
        if dls_device is not None:
            self.model.to(dls_device)
        param = next(self.model.parameters(), None)
        self.device = param.device if param is not None else torch.device(dls_device or "cpu")

    def _end_cleanup(self) -> None:
        """After a fit, normal or not: no half-done gradients, no batch kept alive."""
        if self.opt is not None:
            self.opt.zero_grad()
        self.dl, self.xb, self.yb, self.pred, self.loss, self.loss_grad = None, (), (), None, None, None

    # ------------------------------------------------------------------ optimiser
    def create_opt(self) -> None:
        """Make the optimiser over the splitter's parameter groups (or all trainable parameters)."""
        params = self.splitter(self.model) if self.splitter is not None else \
            [p for p in self.model.parameters() if p.requires_grad]
        self.opt = self.opt_func(params, lr=self.lr)

    # ------------------------------------------------------------------ callbacks
    def add_cb(self, cb: Callback | type) -> Callback:
        """Add a callback (an instance, or a class to instantiate); reachable as `learn.<cb.name>`."""
        if isinstance(cb, type) and issubclass(cb, Callback):
            cb = cb()
        if not isinstance(cb, Callback):
            raise TypeError(f"cbs: expected Callback instances or classes, got {type(cb).__name__}")
        existing = getattr(self, cb.name, None)
        if existing is not None and not isinstance(existing, Callback):
            raise ValueError(f"cbs: a callback named {cb.name!r} would hide the Learner's attribute of that name")
        cb.learn = self
        setattr(self, cb.name, cb)
        self.cbs = sorted(self.cbs + [cb], key=lambda c: c.order)  # stable: ties keep insertion order
        self._handlers.clear()
        return cb

    def add_cbs(self, cbs) -> None:
        for cb in _as_list(cbs):
            self.add_cb(cb)

    def remove_cb(self, cb: Callback | type) -> None:
        """Remove a callback, or every callback of a class."""
        targets = [c for c in self.cbs if (isinstance(c, cb) if isinstance(cb, type) else c is cb)]
        for c in targets:
            self.cbs.remove(c)
            if getattr(self, c.name, None) is c:
                delattr(self, c.name)
            c.learn = None
        self._handlers.clear()

    def remove_cbs(self, cbs) -> None:
        for cb in _as_list(cbs):
            self.remove_cb(cb)

    @contextlib.contextmanager
    def added_cbs(self, cbs):
        """Callbacks present only inside the `with` block, removed even if it raises."""
        cbs = [cb() if isinstance(cb, type) else cb for cb in _as_list(cbs)]
        self.add_cbs(cbs)
        try:
            yield self
        finally:
            self.remove_cbs(cbs)

    @contextlib.contextmanager
    def removed_cbs(self, cbs):
        """Callbacks absent inside the `with` block, put back afterwards."""
        cbs = [c for cb in _as_list(cbs) for c in self.cbs if (isinstance(c, cb) if isinstance(cb, type) else c is cb)]
        self.remove_cbs(cbs)
        try:
            yield self
        finally:
            self.add_cbs(cbs)

    @contextlib.contextmanager
    def no_bar(self):
        """Keep the metric table but draw no progress bar."""
        progress = getattr(self, "progress", None)
        old = progress.show_bar if progress is not None else None
        if progress is not None:
            progress.show_bar = False
        try:
            yield self
        finally:
            if progress is not None:
                progress.show_bar = old

    def no_logging(self):
        """Neither table nor bar (the recorder still records)."""
        return self.removed_cbs([ProgressCallback])

    def show_training_loop(self) -> None:
        """Print the events of a fit, indented by nesting, with the callbacks that run at each."""
        for depth, event in _LOOP_LAYOUT:
            names = [type(cb).__name__ for cb in self.cbs if callable(getattr(cb, event, None))]
            label = f"{'  ' * depth}{event}"
            print(f"{label:<34}: {', '.join(names)}" if names else label)

    # ------------------------------------------------------------------ inference
    def validate(self, dl=None, cbs=None) -> list[float | None]:
        """Loss and metrics over `dl` (default: the validation loader): `[valid_loss, *metrics]`."""
        recorder = getattr(self, "recorder", None)
        if recorder is None:
            raise RuntimeError("validate needs the Recorder callback (it computes the loss and metrics)")
        with self.added_cbs(cbs), self.no_logging():
            self._run_validation(self._valid_dl(dl))
        return recorder.last_valid

    def get_preds(self, dl=None, act: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and targets over `dl` (default: the validation loader), on the CPU."""
        gather = GatherPredsCallback()
        with self.added_cbs([gather]), self.no_logging():
            self._run_validation(self._valid_dl(dl))
        preds, targs = gather.result()
        return (act(preds) if act is not None else preds), targs

    def _run_validation(self, dl) -> None:
        self._to_device()
        try:
            self._do_validate(dl)
        finally:
            self._end_cleanup()

    def _valid_dl(self, dl):
        if dl is None:
            if self.dls.valid is None:
                raise ValueError("dl: the DataLoaders have no validation set; pass a DataLoader")
            return self.dls.valid
        if isinstance(dl, torch.utils.data.DataLoader):
            return DataLoader(dl)
        if not isinstance(dl, DataLoader):
            raise TypeError(f"dl: expected a minilearn or torch DataLoader, got {type(dl).__name__}")
        return dl

    def __repr__(self) -> str:
        return f"Learner(model={type(self.model).__name__}, opt={self.opt!r}, cbs={self.cbs})"


# The nesting of the events, for show_training_loop.
_LOOP_LAYOUT = [
    (0, "before_fit"), (1, "before_epoch"), (2, "before_train"), (3, "before_batch"), (3, "after_pred"),
    (3, "after_loss"), (3, "before_backward"), (3, "after_cancel_backward"), (3, "after_backward"),
    (3, "before_step"), (3, "after_cancel_step"), (3, "after_step"), (3, "after_cancel_batch"),
    (3, "after_batch"), (2, "after_cancel_train"), (2, "after_train"), (2, "before_validate"),
    (3, "before_batch"), (3, "after_pred"), (3, "after_loss"), (3, "after_cancel_batch"), (3, "after_batch"),
    (2, "after_cancel_validate"), (2, "after_validate"), (1, "after_cancel_epoch"), (1, "after_epoch"),
    (0, "after_cancel_fit"), (0, "after_fit"),
]


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _note_once(e: BaseException, note: str) -> None:
    """Add `note` to the exception unless minilearn already noted where it arose."""
    notes = getattr(e, "__notes__", [])
    if any(n.startswith("minilearn: ") for n in notes):
        return
    if hasattr(e, "add_note"):
        e.add_note(note)
    else:  # Python 3.10: keep the note where 3.11's traceback would show it
        e.__notes__ = [*notes, note]


def _check_unique(names: Iterable[str], arg: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{arg}: two metrics are named {n!r}; metrics are looked up by name, give one a `name`")
        seen.add(n)


def _check_args(dls, model, loss_func, opt_func, lr, splitter) -> None:
    """Clear errors for bad arguments, before any work is done."""
    if not hasattr(dls, "train") or not hasattr(dls, "valid"):
        raise TypeError(f"dls: expected a DataLoaders (with .train and .valid), got {type(dls).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if loss_func is None or not callable(loss_func):
        raise TypeError(f"loss_func: expected a callable loss_func(pred, targ) -> tensor, got {loss_func!r}")
    if not callable(opt_func):
        raise TypeError(f"opt_func: expected a callable opt_func(params, lr=...), got {opt_func!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
        raise ValueError(f"lr: expected a number >= 0, got {lr!r}")
    if splitter is not None and not callable(splitter):
        raise TypeError(f"splitter: expected a callable splitter(model) -> parameter groups, got {splitter!r}")

"""Learner: fastbook chapter 4's seven steps, with fastai's callback events around each of them.

    1. init      the model's parameters (made by the model), the optimiser (made on first fit)
    2. predict   pred = model(*xb)
    3. loss      loss = loss_func(pred, *yb)
    4. gradient  loss.backward()
    5. step      opt.step(); opt.zero_grad()
    6. repeat    for every batch of every epoch
    7. stop      after n_epoch epochs, or when a callback raises CancelFitException

The loop is the block of methods from `fit` to `_do_one_batch`; then come event dispatch, the
loop's state, the optimiser, callbacks and validation. Every other feature lives in the module of
its concern, beside its callback, and is reached through a short method here that calls it:
schedules (`minilearn.callbacks.schedule`), the LR finder (`callbacks.lr_find`), checkpoints
(`minilearn.checkpoint`), export (`minilearn.export`), several processes (`callbacks.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader as TorchDataLoader

from minilearn import checkpoint, data_files, export
from minilearn.callback import (
    BATCH_EVENTS, CANCEL_EXCEPTIONS, Callback, CancelBackwardException, CancelBatchException, CancelEpochException,
    CancelFitException, CancelStepException, CancelTrainException, CancelValidException,
    CallbackList, TrainEvalCallback, cleanup_fits, event_method, misspelt_events, note_once, print_training_loop, sorted_cbs,
    where_in_loop,
)
from minilearn.callbacks import hooks, lr_find as lr_finder, preds, progress, schedule, training
from minilearn.callbacks.distributed import DEFAULT_TIMEOUT, distrib_ctx
from minilearn.callbacks.progress import ProgressCallback
from minilearn.callbacks.recorder import Recorder
from minilearn.checks import as_list, check_bool, check_callable, check_int, check_lr, check_number
from minilearn.data import inputs_of, to_device
from minilearn.losses import not_reduced
from minilearn.metrics import as_metrics
from minilearn.optim import Adam, norm_bias_params
from minilearn.optim_torch import OptimWrapper, make_optimizer
from minilearn.torch_basics import kept_modes

# The loop's state, declared once: each attribute, its value when no fit has run, and its scope,
# which says what puts it back:
#   "fit"    where training stands: put back after lr_find;
#   "pass"   where a pass over a loader stands: put back after validate / get_preds (which may run
#            in the middle of a fit);
#   "batch"  the batch in hand: put back after validate / get_preds, and dropped at the end of
#            every fit, so that no tensor of it is kept alive.
LOOP_STATE: dict[str, tuple[object, str]] = {
    "epoch": (0, "fit"), "n_epoch": (1, "fit"), "start_epoch": (0, "fit"), "train_iter": (0, "fit"),
    "pct_train": (0.0, "fit"), "_smooth_loss": (None, "fit"), "resume_iter": (0, "fit"),
    "training": (False, "pass"), "iter": (0, "pass"), "n_iter": (0, "pass"), "device": (None, "pass"),
    "n_inp": (1, "pass"), "_batch_on_device": (None, "pass"),
    "dl": (None, "batch"), "xb": ((), "batch"), "yb": ((), "batch"), "pred": (None, "batch"),
    "loss": (None, "batch"), "loss_grad": (None, "batch"),
}


class Learner:
    """Trains `model` on `dls` by minimising `loss_func`, with callbacks around every step.

    `opt_func(params, lr=...)` makes the optimiser: one of ours (`Adam`, the default as in
    fastai, `SGD`, ...), a `torch.optim` class, or a function returning a torch optimiser
    (wrapped in `OptimWrapper` so schedules work on it). `splitter(model)` gives the parameter
    groups (default: one group). `metrics`: functions `f(pred, targ)` or objects with
    update/compute/reset, shown per epoch. As fastai: `wd_bn_bias=False` keeps weight decay off
    norm layers and biases (for our optimisers), `train_bn=True` keeps norm layers training
    when the rest is frozen.
    """

    def __init__(self, dls, model: nn.Module, loss_func: Callable | None = None, opt_func: Callable = Adam,
                 lr: float = 1e-3, splitter: Callable | None = None, cbs=None, metrics=None,
                 path: str | Path = ".", model_dir: str | Path = "models", wd: float | None = None,
                 moms: tuple[float, float, float] = (0.95, 0.85, 0.95), wd_bn_bias: bool = False,
                 train_bn: bool = True, default_cbs: bool = True):
        _check_args(dls, model, loss_func, opt_func, lr, splitter)
        for name, flag in (("default_cbs", default_cbs), ("wd_bn_bias", wd_bn_bias), ("train_bn", train_bn)):
            check_bool(name, flag)
        self.dls, self.model, self.loss_func, self.opt_func = dls, model, loss_func, opt_func
        self.lr, self.wd, self.splitter, self.moms = lr, wd, splitter, moms
        self.wd_bn_bias, self.train_bn = wd_bn_bias, train_bn
        self.metrics = as_metrics(metrics)
        self.path, self.model_dir = Path(path), Path(model_dir)
        self.opt, self.logger = None, print  # logger: where the Recorder writes rows without a progress table
        self.restored = None  # what the last `load` put back ({"opt": bool, "rng": bool}), for resumed fits
        self._fitting = False
        self.cbs = CallbackList()  # read-only: change it with add_cb / remove_cb
        self._handlers: dict[str, list] = {}
        self._reset_state()
        if default_cbs:
            self.add_cbs([TrainEvalCallback(), Recorder(), ProgressCallback()])
        self.add_cbs(cbs)
        self("after_create")

    # ------------------------------------------------------------------ the loop
    def fit(self, n_epoch: int, lr: float | None = None, wd: float | None = None, cbs=None,
            reset_opt: bool = False, start_epoch: int = 0) -> None:
        """Train for `n_epoch` epochs at a constant learning rate.

        - `lr`: a number, one number per parameter group (a list or numpy array), or a `slice`
          (`slice(hi)`: hi/10 for every group but the last; `slice(lo, hi)`: spread
          geometrically from the first group to the last); default: the Learner's `lr`.
        - `wd`: weight decay for this fit and after it (default: the Learner's `wd`, else the
          optimiser's own default).
        - `cbs`: callbacks for this fit only, removed afterwards (one or a list).
        - `reset_opt`: start from a fresh optimiser (its running averages forgotten).
        - `start_epoch=k` resumes a run at epoch k (after `load(..., with_rng=True)`): epochs
          before k are skipped, and schedules continue where they were.
        """
        __tracebackhide__ = True  # in IPython tracebacks the loop's own frames (all marked so) are left out
        check_int("n_epoch", n_epoch, low=0)
        check_int("start_epoch", start_epoch, low=0, high=n_epoch)
        check_lr(lr)
        check_bool("reset_opt", reset_opt)
        if start_epoch:
            checkpoint.warn_if_inexact_resume(self, start_epoch)
        if hasattr(self.dls, "check_alike"):
            self.dls.check_alike()  # a validation set of another shape fails now, not after an epoch
        with self._one_fit(), self.added_cbs(cbs):
            if reset_opt or self.opt is None:
                self.create_opt()                                  # 1. init (the optimiser)
            wd = self.wd if wd is None else wd
            if wd is not None:
                self.opt.set_hypers(wd=wd)
            self.opt.set_hypers(lr=self.lr if lr is None else lr)
            self.n_epoch, self.start_epoch = n_epoch, start_epoch
            self._to_device()
            try:
                self._with_events(self._do_fit, "fit", CancelFitException)
            finally:
                self._end_cleanup()

    @contextlib.contextmanager
    def _one_fit(self):
        """One fit at a time (a callback calling fit is refused); a failed fit puts the model's
        train/eval modes back as it found them."""
        __tracebackhide__ = True
        if self._fitting:
            raise RuntimeError("fit: the learner is already fitting (fit called from a callback?); a callback "
                               "may call validate() or get_preds() mid-fit, not fit()")
        modes = [m.training for m in self.model.modules()]
        self._fitting = True
        try:
            yield
        except BaseException:
            for m, mode in zip(self.model.modules(), modes):
                m.training = mode
            raise
        finally:
            self._fitting = False

    def _do_fit(self) -> None:
        __tracebackhide__ = True
        for self.epoch in range(self.start_epoch, self.n_epoch):   # 6. repeat (epochs)
            self._with_events(self._do_epoch, "epoch", CancelEpochException)
        # 7. stop: the epochs ran out, or a CancelFitException ended `_with_events` above.

    def _do_epoch(self) -> None:
        __tracebackhide__ = True
        self.dl = self.dls.train
        self._with_events(self._all_batches, "train", CancelTrainException)
        if self.dls.valid is not None:
            self._do_validate(self.dls.valid)

    def _do_validate(self, dl) -> None:
        __tracebackhide__ = True
        self.dl = dl
        with torch.no_grad():
            self._with_events(self._all_batches, "validate", CancelValidException)

    def _all_batches(self) -> None:
        __tracebackhide__ = True
        self.n_iter, self._batch_on_device = len(self.dl), None
        first = self.resume_iter if self.training else 0  # a run resumed mid-epoch (BackupCallback) starts later
        batches = self.dl.batches_from(first) if first else self.dl
        for i, batch in enumerate(batches, first):                 # 6. repeat (batches)
            try:
                self.one_batch(i, batch)
            except BaseException as e:
                note_once(e, where_in_loop(self))
                raise

    def one_batch(self, i: int, batch: tuple) -> None:
        """Batch `i` through the steps, with its events (fastai's name: a callback may call it)."""
        __tracebackhide__ = True
        self.iter = i
        self.xb, self.yb = self._split(batch)
        self.pred = self.loss = self.loss_grad = None              # nothing stale if a batch is cancelled
        self._with_events(self._do_one_batch, "batch", CancelBatchException)

    def _do_one_batch(self) -> None:
        self.pred = self.model(*self.xb)                           # 2. predict
        self("after_pred")
        if self.yb:                                                # (unlabelled batches: no loss)
            self.loss_grad = self.loss_func(self.pred, *self.yb)   # 3. loss
            self.loss = self.loss_grad.detach().clone()  # a copy: an in-place penalty on loss_grad stays out of it
        self("after_loss")
        if not self.training or not self.yb:
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
        __tracebackhide__ = True
        before, after_cancel, after = _STAGE_EVENTS[name]  # names made once, not per batch
        try:
            self(before)
            f()
        except cancel:
            self(after_cancel)
        self(after)

    # ------------------------------------------------------------------ events
    def __call__(self, event) -> None:
        """Run `event` (or each of a list of events) on every callback that has it, in order."""
        __tracebackhide__ = True
        if not isinstance(event, str):
            for e in event:
                self(e)
            return
        handlers = self._handlers.get(event)
        if handlers is None:
            handlers = self._handlers[event] = [
                (cb, method) for cb in self.cbs if (method := event_method(cb, event)) is not None]
        if not handlers:
            return
        batch_event = event in BATCH_EVENTS
        for cb, method in handlers:
            # the rule of Callback.runs_at, inlined (this runs ~10 times a batch); skip a callback
            # that an earlier one removed during this event
            if (batch_event and not (cb.run_train if self.training else cb.run_valid)) or cb.learn is not self:
                continue
            try:
                method()
            except CANCEL_EXCEPTIONS:
                raise
            except BaseException as e:
                note_once(e, f"minilearn: raised in callback {cb.name!r} ({type(cb).__name__}) at event {event!r}")
                raise

    def _to_device(self) -> None:
        """Put the model on the loaders' device if they name one; batches follow the model."""
        dls_device = getattr(self.dls, "device", None)
        if dls_device is not None:
            self.model.to(dls_device)
        param = next(self.model.parameters(), None)
        self.device = param.device if param is not None else torch.device(dls_device or "cpu")
        self.n_inp = getattr(self.dls, "n_inp", None)  # None: fastai's rule on the pass's first batch

    def _split(self, batch) -> tuple[tuple, tuple]:
        """The batch on the model's device, as (inputs, targets): the first `n_inp` are inputs."""
        if self._batch_on_device is None:  # a loader's batches all live in one place: look once a pass
            self._batch_on_device = all(isinstance(t, torch.Tensor) and t.device == self.device for t in batch)
        if not self._batch_on_device:
            batch = to_device(batch, self.device)
        if self.n_inp is None:
            self.n_inp = inputs_of(len(batch))
        return tuple(batch[:self.n_inp]), tuple(batch[self.n_inp:])

    def _end_cleanup(self) -> None:
        """After a fit, normal or not: no half-done gradients, no batch kept alive, and each
        callback's `cleanup_fit` (for what must be released even when a fit raised)."""
        if self.opt is not None:
            self.opt.zero_grad()
        self._reset_state("batch")
        cleanup_fits(self.cbs)

    @property
    def x(self):
        """The batch's input (the tuple of inputs when there are several), as fastai's `learn.x`."""
        return self.xb[0] if len(self.xb) == 1 else self.xb

    @property
    def y(self):
        """The batch's target (the tuple of targets when there are several), as fastai's `learn.y`."""
        return self.yb[0] if len(self.yb) == 1 else self.yb

    @property
    def smooth_loss(self) -> torch.Tensor | None:
        """fastai's smoothed training loss so far: the Recorder's (read on demand, so the loop never
        waits for it), or what a callback set while the Recorder is away (the LR finder's)."""
        recorder = getattr(self, "recorder", None)
        return recorder.smooth_loss.value if recorder is not None else self._smooth_loss

    @smooth_loss.setter
    def smooth_loss(self, value) -> None:
        self._smooth_loss = value

    # ------------------------------------------------------------------ the loop's state
    def _reset_state(self, *scopes: str) -> None:
        """Set the loop's state of these scopes (all by default) to its values before any fit."""
        for name in _state_names(scopes):
            setattr(self, name, LOOP_STATE[name][0])

    @contextlib.contextmanager
    def kept_state(self, *scopes: str):
        """Inside the block the loop may run; on leaving, error or not, its state of these scopes
        ("fit", "pass", "batch"; all by default; see `LOOP_STATE`) is put back as it was."""
        saved = {name: getattr(self, name) for name in _state_names(scopes)}
        try:
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    # ------------------------------------------------------------------ optimiser
    def create_opt(self) -> None:
        """Make the optimiser over the splitter's parameter groups (or all trainable parameters)."""
        if isinstance(self.opt_func, functools.partial) and "lr" in self.opt_func.keywords:
            self.lr = self.opt_func.keywords["lr"]  # fastai adopts an lr bound in the opt_func
        params = self.splitter(self.model) if self.splitter is not None else \
            [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.opt_func, params, self.lr)
        if not self.wd_bn_bias and not isinstance(self.opt, OptimWrapper):
            held = {id(p) for g in self.opt.param_lists for p in g}  # a parameter frozen by hand is not
            self.opt.exclude_from_wd([p for p in norm_bias_params(self.model) if id(p) in held])

    def freeze_to(self, n: int) -> None:
        """Train only the parameter groups from `n` on (negative `n` counts from the end)."""
        if self.opt is None:
            self.create_opt()
        keep = norm_bias_params(self.model, with_bias=False) if self.train_bn else ()
        self.opt.freeze_to(n, keep_trainable=keep)
        self.opt.clear_state()

    def freeze(self) -> None:
        """Train only the last parameter group (a pretrained body stays as it is)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train every parameter group."""
        self.freeze_to(0)

    # ------------------------------------------------------------------ features in their own modules
    def fit_one_cycle(self, n_epoch: int, lr_max=None, div: float = 25.0, div_final: float = 1e5,
                      pct_start: float = 0.25, wd: float | None = None, moms=None, cbs=None,
                      reset_opt: bool = False, start_epoch: int = 0) -> None:
        """fastai's one-cycle policy: lr warms up from lr_max/div to lr_max over `pct_start` of the
        batches, then anneals to lr_max/div_final, both along cosines; momentum moves the opposite
        way, between `moms` (default: the Learner's, fastai's (0.95, 0.85, 0.95)).

        - `lr_max`: a number, one per parameter group (list or numpy array), or a `slice` (as in
          `fit`); default: the Learner's `lr`.
        - `div`, `div_final`: the starting and final learning rates as fractions of `lr_max`.
        - `wd`, `cbs`, `reset_opt`, `start_epoch`: as in `fit`.
        """
        schedule.fit_one_cycle(self, n_epoch, lr_max, div, div_final, pct_start, wd, moms, cbs, reset_opt, start_epoch)

    def fit_flat_cos(self, n_epoch: int, lr=None, div_final: float = 1e5, pct_start: float = 0.75,
                     wd: float | None = None, cbs=None, reset_opt: bool = False, start_epoch: int = 0) -> None:
        """Constant lr for `pct_start` of training, then a cosine down to lr/div_final."""
        schedule.fit_flat_cos(self, n_epoch, lr, div_final, pct_start, wd, cbs, reset_opt, start_epoch)

    def fit_sgdr(self, n_cycles: int, cycle_len: int, lr_max=None, cycle_mult: int = 2, wd: float | None = None,
                 cbs=None, reset_opt: bool = False, start_epoch: int = 0) -> None:
        """Warm restarts: `n_cycles` cosines from lr_max to 0, each `cycle_mult` times longer."""
        schedule.fit_sgdr(self, n_cycles, cycle_len, lr_max, cycle_mult, wd, cbs, reset_opt, start_epoch)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
                  pct_start: float = 0.3, div: float = 5.0, **kwargs) -> None:
        """fastai's transfer learning: `freeze_epochs` of the last group alone, then `epochs` of the
        whole model with discriminative learning rates, both one-cycle (see `schedule.fine_tune`)."""
        schedule.fine_tune(self, epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, **kwargs)

    def lr_find(self, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True,
                show_plot: bool = True, suggest_funcs=(lr_finder.valley,), plot_path: str | Path | None = None):
        """Train briefly with an exponentially rising lr and suggest one from the loss curve. It leaves
        no trace (weights, optimiser, Recorder, RNGs and shuffling are put back), so `lr_find()` then
        `fit()` gives the numbers of `fit()` alone. The curve is in `learn.lr_finder`; `show_plot`
        shows it in a notebook, `plot_path` saves it as an image, `learn.plot_lr_find()` draws it."""
        return lr_finder.lr_find(self, start_lr, end_lr, num_it, stop_div, show_plot, suggest_funcs, plot_path)

    def plot_lr_find(self, skip_end: int = 5):
        """The last lr_find's loss against learning rate (log axis) with its suggestions; a Figure."""
        from minilearn.plotting import show_once

        return show_once(lr_finder.plot_learner_lr_find(self, skip_end))

    def save(self, name: str | Path, with_opt: bool = True) -> Path:
        """Save the weights, optimiser state, epoch and RNG states to `path/model_dir/<name>.pth`,
        atomically: a crash or kill in the middle leaves the previous file as it was."""
        return checkpoint.save_learner(self, name, with_opt)

    def load(self, name: str | Path, with_opt: bool = True, with_rng: bool = False, device=None,
             strict: bool = True) -> "Learner":
        """Load what `save` wrote, checked in full before anything changes (only tensors and plain
        data are unpickled); returns the Learner. `with_rng` also puts back the RNGs and the epoch,
        to resume a run exactly; `device` moves the model there afterwards. A learner without an
        optimiser gets one (fastai's), fresh when `with_opt=False` or the file holds no state."""
        checkpoint.load_learner_state(self, name, with_opt, with_rng, device, strict)
        return self

    def checkpoint_path(self, name: str | Path) -> Path:
        """Where `save(name)` writes: `path/model_dir/<name>.pth` (an absolute name is kept)."""
        return checkpoint.checkpoint_path(self, name)

    def rng_state(self) -> dict:
        """The random number generators: torch's (CPU and CUDA), Python's, and each loader's."""
        return checkpoint.rng_state(self.dls.loaders)

    def set_rng_state(self, state: dict) -> None:
        """Put back what `rng_state()` returned."""
        checkpoint.set_rng_state(state, self.dls.loaders)

    def export(self, fname: str | Path = "export.pth") -> Path:
        """Write the model for inference to `path/fname`, in a file that cannot run code when
        loaded; `minilearn.load_learner(fname)` reads it back (the format: `minilearn.export`)."""
        return export.export_learner(self, fname)

    def predict(self, x: "torch.Tensor | str | Path"):
        """fastai's `(decoded, index, probabilities)` for one item when the loss decodes and the
        DataLoaders have a vocab (see `export.decoded_prediction`); else the model's output for one
        item (no batch dimension) or a batch, on the CPU. An image file's path is read as the
        validation set reads its files (DataLoaders from files)."""
        if isinstance(x, (str, os.PathLike)):
            x = data_files.item_from_file(self.dls, x)
        self._to_device()
        out = export.predict(self.model, x, export.item_ndim(self), self.device)
        return export.decoded_prediction(out, self.loss_func, getattr(self.dls, "vocab", None))

    def show_results(self, ds_idx: int = 1, max_n: int = 9, nrows: int | None = None, ncols: int | None = None,
                     figsize=None, **kwargs):
        """A grid of images from `dls[ds_idx]`, each titled with its target over the prediction
        (green when they agree, red when not); a Figure (see `minilearn.data_files.show_results`)."""
        return data_files.show_results(self, ds_idx, max_n, nrows, ncols, figsize, **kwargs)

    def to_fp16(self) -> "Learner":
        """Train in mixed precision with float16 (a `MixedPrecision` callback, loss-scaled on CUDA)."""
        return training.set_precision(self, torch.float16)

    def to_bf16(self) -> "Learner":
        """Train in mixed precision with bfloat16 (a `MixedPrecision` callback)."""
        return training.set_precision(self, torch.bfloat16)

    def to_fp32(self) -> "Learner":
        """Train in full precision again (the `MixedPrecision` callback removed)."""
        return training.set_precision(self, None)

    def distrib_ctx(self, sync_loss: bool = True, backend: str | None = None, timeout=DEFAULT_TIMEOUT,
                    **ddp_kwargs):
        """A context manager: inside it, train on every process torchrun started, with DDP; in a
        single process it changes nothing (see `minilearn.callbacks.distributed`)."""
        return distrib_ctx(self, sync_loss=sync_loss, backend=backend, timeout=timeout, **ddp_kwargs)

    # ------------------------------------------------------------------ callbacks
    def add_cb(self, cb: Callback | type) -> Callback:
        """Add a callback (an instance, or a class to instantiate); reachable as `learn.<cb.name>`.

        Callbacks run in ascending `order`; ties keep the order they were first added in. Adding
        one that is already there does nothing.
        """
        if isinstance(cb, type) and issubclass(cb, Callback):
            cb = cb()
        if not isinstance(cb, Callback):
            raise TypeError(f"cbs: expected Callback instances or classes, got {type(cb).__name__}")
        if cb in self.cbs:
            return cb
        other = getattr(cb, "learn", None)
        if isinstance(other, Learner) and other is not self and cb in other.cbs:
            raise ValueError(f"cbs: callback {cb.name!r} ({type(cb).__name__}) belongs to another Learner; a callback "
                             "runs in one learner at a time: remove it there, or give this one a new instance")
        own = cb.name in self.__dict__ or hasattr(type(self), cb.name)  # the learner's own attributes, not its model's
        if own and not isinstance(self.__dict__.get(cb.name), Callback):
            raise ValueError(f"cbs: a callback named {cb.name!r} would hide the Learner's attribute of that name "
                             f"(learn.{cb.name}); rename its class")
        for method, event_name in misspelt_events(cb):
            warnings.warn(f"callback {cb.name!r} ({type(cb).__name__}): no event is called {method!r}, so it never "
                          f"runs; did you mean {event_name!r}?", stacklevel=3)
        cb.learn = self
        setattr(self, cb.name, cb)
        self.cbs = sorted_cbs([*self.cbs, cb])
        self._handlers.clear()
        return cb

    def add_cbs(self, cbs: Iterable[Callback | type] | Callback | type | None) -> None:
        """Add each of `cbs` (see `add_cb`)."""
        for cb in as_list(cbs):
            self.add_cb(cb)

    def remove_cb(self, cb: Callback | type) -> None:
        """Remove a callback, or every callback of a class."""
        for c in self._matching(cb):
            self.cbs = CallbackList(x for x in self.cbs if x is not c)
            if getattr(self, c.name, None) is c:
                # another callback of the same name takes the attribute back, else it goes
                others = [x for x in self.cbs if x.name == c.name]
                if others:
                    setattr(self, c.name, others[-1])
                else:
                    delattr(self, c.name)
            c.learn = None
        self._handlers.clear()

    def remove_cbs(self, cbs: Iterable[Callback | type] | Callback | type | None) -> None:
        """Remove each of `cbs` (see `remove_cb`)."""
        for cb in as_list(cbs):
            self.remove_cb(cb)

    @contextlib.contextmanager
    def added_cbs(self, cbs: Iterable[Callback | type] | Callback | type | None):
        """Callbacks present only inside the `with` block, removed even if it raises."""
        cbs = [cb() if isinstance(cb, type) else cb for cb in as_list(cbs)]
        new = [cb for cb in cbs if cb not in self.cbs]  # one already there stays after the block
        self.add_cbs(new)
        try:
            yield self
        finally:
            self.remove_cbs(new)

    @contextlib.contextmanager
    def removed_cbs(self, cbs: Iterable[Callback | type] | Callback | type | None):
        """Callbacks absent inside the `with` block, put back afterwards where they were."""
        cbs = [c for cb in as_list(cbs) for c in self._matching(cb)]
        self.remove_cbs(cbs)
        try:
            yield self
        finally:
            self.add_cbs(cbs)

    def ordered_cbs(self, event: str) -> list[Callback]:
        """The callbacks that have `event`, in the order they run it (fastai's `ordered_cbs`)."""
        return [cb for cb in self.cbs if event_method(cb, event) is not None]

    def _matching(self, cb: Callback | type) -> list[Callback]:
        """The callbacks `cb` names: every one of a class, or that very instance."""
        return [c for c in self.cbs if (isinstance(c, cb) if isinstance(cb, type) else c is cb)]

    def no_bar(self):
        """Keep the metric table but draw no progress bar: a context manager."""
        return progress.no_bar(self)

    @contextlib.contextmanager
    def no_logging(self):
        """Neither table nor bar nor rows through `learn.logger` (the recorder still records)."""
        old, self.logger = self.logger, _log_nothing
        try:
            with self.removed_cbs([ProgressCallback]):
                yield self
        finally:
            self.logger = old

    def summary(self) -> "hooks.Summary":
        """fastai's table of the model's layers (type, output shape, parameters, trainable) for one
        batch, with the totals, optimiser, loss and callbacks; model and RNGs are left as they were."""
        return hooks.summary(self)

    def show_training_loop(self) -> None:
        """Print the events of a fit, indented by nesting, with the callbacks that run at each."""
        print_training_loop(self.cbs)

    # ------------------------------------------------------------------ inference
    def validate(self, ds_idx: int = 1, dl=None, cbs=None) -> list[float | None]:
        """Loss and metrics over `dl` (default: `dls[ds_idx]`, the validation loader):
        `[valid_loss, *metrics]`.

        It runs only the validation events (`before_validate` ... `after_validate`, not the fit's
        or epoch's), with a Recorder of its own, and leaves the learner as it was, so a callback
        may call it in the middle of a fit. (A loader given first is taken as `dl`.)
        """
        recorder = Recorder(add_time=False)
        fit_metrics = self.metrics
        self.metrics = [copy.deepcopy(m) for m in fit_metrics]  # its own state: a fit it runs in keeps its own
        try:
            self.side_pass(preds.pass_loader(self, ds_idx, dl), [recorder] + as_list(cbs))
        finally:
            self.metrics = fit_metrics
        return recorder.last_valid

    def get_preds(self, ds_idx: int = 1, dl=None, with_input: bool = False, with_decoded: bool = False,
                  with_loss: bool = False, act: Callable | None = None, inner: bool = False, reorder: bool = True,
                  cbs=None) -> tuple:
        """Predictions over `dl` (default: `dls[ds_idx]`, in dataset order) as fastai's tuple
        `(inputs, preds, targets, decoded, losses)`, the optional ones only when asked, on the CPU.

        `act` (default: the loss's `activation`, if it has one) is applied to the predictions;
        `with_decoded` adds the loss's `decodes` of them, `with_loss` each item's loss. `inner` is
        accepted for fastai's code: a pass here never disturbs a fit it runs in.
        """
        return preds.get_preds(self, ds_idx, dl, with_input, with_decoded, with_loss, act, reorder, cbs)

    def loss_not_reduced(self):
        """A context manager: inside it the loss gives one value per item (`reduction` 'none')."""
        return not_reduced(self.loss_func)

    def side_pass(self, dl, cbs: list) -> None:
        """One validation pass over `dl` with `cbs` added and the callbacks that sit it out removed;
        the learner's state (mode, batch, counters) is put back, error or not."""
        with self.removed_cbs([cb for cb in self.cbs if "validate" in cb.sits_out]), self.added_cbs(cbs), \
                self.kept_state("pass", "batch"), kept_modes(self.model):
            try:
                self._to_device()
                self._do_validate(dl)
            except BaseException:
                # alone, every callback cleans up as after a failed fit; inside a fit only the pass's
                # own do (the fit's callbacks, its logger and hooks, carry on)
                cleanup_fits(self.cbs if not self._fitting else cbs)
                raise

    def __getattr__(self, name: str):
        # The one delegation of a Learner, called only when normal lookup fails: a public name it
        # lacks is read from its model (`learn.fc1`, `learn.parameters()`), as fastai's Learner does.
        model = self.__dict__.get("model")
        if name.startswith("_") or model is None:
            raise AttributeError(f"'Learner' object has no attribute {name!r}")
        try:
            return getattr(model, name)
        except AttributeError:
            raise AttributeError(f"'Learner' object has no attribute {name!r}, nor has its model "
                                 f"({type(model).__name__})") from None

    def __repr__(self) -> str:
        """What the learner trains and with what: the model and its size, the loss, metrics, data,
        optimiser, and how far training has got."""
        n = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        loss = getattr(self.loss_func, "__name__", None) or type(self.loss_func).__name__
        sizes = [f"{name} {getattr(dl, 'n', '?')}" for name, dl in
                 zip(("train", "valid", "dls[2]", "dls[3]"), getattr(self.dls, "loaders", []))]
        bs = getattr(getattr(self.dls, "train", None), "bs", None)
        rec = getattr(self, "recorder", None)
        history = f"{len(rec.values)} epoch(s) recorded, last row {rec.history[-1]}" if rec is not None and \
            rec.history else "not trained yet"
        opt = repr(self.opt) if self.opt is not None else "made at the first fit"
        return (f"Learner(model={type(self.model).__name__} with {n:,} parameters ({trainable:,} trainable), "
                f"loss={loss}, metrics={[m.name for m in self.metrics]}, data={' / '.join(sizes)} items, bs {bs}, "
                f"opt={opt}, "
                f"callbacks={[cb.name for cb in self.cbs]}; {history})")


def _log_nothing(*args, **kwargs) -> None:
    """The logger inside `no_logging`."""


def _state_names(scopes: tuple[str, ...]) -> list[str]:
    """The names in LOOP_STATE of these scopes (all when none is given)."""
    unknown = [sc for sc in scopes if sc not in ("fit", "pass", "batch")]
    if unknown:
        raise ValueError(f"scopes: expected 'fit', 'pass' or 'batch', got {unknown}")
    return [name for name, (_, scope) in LOOP_STATE.items() if not scopes or scope in scopes]


# The events around each stage of the loop: (before, after_cancel, after).
_STAGE_EVENTS = {stage: (f"before_{stage}", f"after_cancel_{stage}", f"after_{stage}")
                 for stage in ("fit", "epoch", "train", "validate", "batch", "backward", "step")}


def _check_args(dls, model, loss_func, opt_func, lr, splitter) -> None:
    """Clear errors for bad arguments, before any work is done."""
    if isinstance(dls, TorchDataLoader) or (isinstance(dls, (list, tuple)) and dls
                                            and all(isinstance(d, TorchDataLoader) for d in dls)):
        raise TypeError("dls: expected a DataLoaders, got torch DataLoader(s); wrap them: "
                        "Learner(DataLoaders(train_dl, valid_dl), model, loss_func) (minilearn's DataLoaders "
                        "takes torch's loaders as they are)")
    if not hasattr(dls, "train") or not hasattr(dls, "valid"):
        raise TypeError(f"dls: expected a DataLoaders (with .train and .valid), got {type(dls).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if loss_func is None or not callable(loss_func):
        raise TypeError(f"loss_func: expected a callable loss_func(pred, targ) -> tensor, got {loss_func!r}")
    check_callable("opt_func", opt_func, "a callable opt_func(params, lr=...)")
    check_number("lr", lr, low=0)
    if splitter is not None:
        check_callable("splitter", splitter, "a callable splitter(model) -> parameter groups")

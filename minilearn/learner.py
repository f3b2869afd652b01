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
import itertools
import random
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from minilearn.callback import (
    BATCH_EVENTS, CANCEL_EXCEPTIONS, LOOP_LAYOUT, Callback, add_note, CancelBackwardException, CancelBatchException,
    CancelEpochException, CancelFitException, CancelStepException, CancelTrainException,
    CancelValidException, GatherPredsCallback, TrainEvalCallback,
)
from minilearn.callbacks.distributed import DEFAULT_TIMEOUT, distrib_barrier, distrib_ctx, is_rank0
from minilearn.callbacks.logger import CSVLogger
from minilearn.callbacks.progress import ProgressCallback
from minilearn.callbacks.recorder import Recorder
from minilearn.callbacks.tracker import TrackerCallback
from minilearn.callbacks.schedule import (
    LRFinder, ParamScheduler, SchedCos, combine_scheds, combined_cos, plot_lr_find, suggest, valley,
)
from minilearn.data import DataLoader, to_device
from minilearn.export import export_model, predict
from minilearn.files import check_weights_fit, load_checkpoint, save_checkpoint
from minilearn.metrics import as_metric
from minilearn.optim import Adam, OptimWrapper, norm_bias_params


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
        self.dls, self.model, self.loss_func, self.opt_func = dls, model, loss_func, opt_func
        self.lr, self.wd, self.splitter, self.moms = lr, wd, splitter, moms
        self.wd_bn_bias, self.train_bn = wd_bn_bias, train_bn
        self.metrics = [as_metric(m) for m in _as_list(metrics)]
        _check_unique([m.name for m in self.metrics], "metrics")
        self.path, self.model_dir = Path(path), Path(model_dir)
        self.opt = None
        self.cbs: tuple[Callback, ...] = ()  # read-only: change it with add_cb / remove_cb
        self._handlers: dict[str, list] = {}
        self.epoch, self.n_epoch, self.iter, self.n_iter, self.train_iter = 0, 1, 0, 0, 0
        self.pct_train, self.training, self._smooth_loss = 0.0, False, None
        self.dl, self.xb, self.yb, self.pred, self.loss, self.loss_grad = None, (), (), None, None, None
        self.device, self.n_inp, self.start_epoch, self._batch_on_device = None, 1, 0, None
        if default_cbs:
            self.add_cbs([TrainEvalCallback(), Recorder(), ProgressCallback()])
        self.add_cbs(cbs)
        self("after_create")

    # ------------------------------------------------------------------ the loop
    def fit(self, n_epoch: int, lr: float | None = None, wd: float | None = None, cbs=None,
            reset_opt: bool = False, start_epoch: int = 0) -> None:
        """Train for `n_epoch` epochs at learning rate `lr` (default: the Learner's `lr`).

        `start_epoch=k` resumes a run at epoch k (after `load(..., with_rng=True)`): epochs
        before k are skipped, and schedules continue where they were.
        """
        if not isinstance(n_epoch, int) or isinstance(n_epoch, bool) or n_epoch < 0:
            raise ValueError(f"n_epoch: expected an int >= 0, got {n_epoch!r}")
        if not isinstance(start_epoch, int) or isinstance(start_epoch, bool) or not 0 <= start_epoch <= n_epoch:
            raise ValueError(f"start_epoch: expected an int from 0 to n_epoch ({n_epoch}), got {start_epoch!r}")
        _check_lr(lr)
        with self.added_cbs(cbs):
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

    def _do_fit(self) -> None:
        for self.epoch in range(self.start_epoch, self.n_epoch):   # 6. repeat (epochs)
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
        self.n_iter, self._batch_on_device = len(self.dl), None
        for self.iter, batch in enumerate(self.dl):                # 6. repeat (batches)
            self.xb, self.yb = self._split(batch)
            self.pred = self.loss = self.loss_grad = None          # nothing stale if a batch is cancelled
            try:
                self._with_events(self._do_one_batch, "batch", CancelBatchException)
            except BaseException as e:
                _note_once(e, self._where())
                raise

    def _do_one_batch(self) -> None:
        self.pred = self.model(*self.xb)                           # 2. predict
        self("after_pred")
        if self.yb:                                                # (unlabelled batches: no loss)
            self.loss_grad = self.loss_func(self.pred, *self.yb)   # 3. loss
            self.loss = self.loss_grad.detach()
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
        before, after_cancel, after = _STAGE_EVENTS[name]  # names made once, not per batch
        try:
            self(before)
            f()
        except cancel:
            self(after_cancel)
        self(after)

    # ------------------------------------------------------------------ events
    def __call__(self, event: str) -> None:
        """Run `event` on every callback that has it, in order."""
        handlers = self._handlers.get(event)
        if handlers is None:
            handlers = self._handlers[event] = [
                (cb, getattr(cb, event)) for cb in self.cbs if callable(getattr(cb, event, None))]
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
                _note_once(e, f"minilearn: raised in callback {cb.name!r} ({type(cb).__name__}) at event {event!r}")
                raise

    def _to_device(self) -> None:
        """Put the model on the loaders' device if they name one; batches follow the model."""
        dls_device = getattr(self.dls, "device", None)
        if dls_device is not None:
            self.model.to(dls_device)
        param = next(self.model.parameters(), None)
        self.device = param.device if param is not None else torch.device(dls_device or "cpu")
        self.n_inp = getattr(self.dls, "n_inp", 1)

    def _split(self, batch) -> tuple[tuple, tuple]:
        """The batch on the model's device, as (inputs, targets): the first `n_inp` are inputs."""
        if self._batch_on_device is None:  # a loader's batches all live in one place: look once a pass
            self._batch_on_device = all(isinstance(t, torch.Tensor) and t.device == self.device for t in batch)
        if not self._batch_on_device:
            batch = to_device(batch, self.device)
        return tuple(batch[:self.n_inp]), tuple(batch[self.n_inp:])

    def _where(self) -> str:
        """Where in the loop an error arose, with what the model was given (for its note)."""
        def describe(ts):
            return ", ".join(f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"
                             if isinstance(t, torch.Tensor) else type(t).__name__ for t in ts) or "nothing"
        param = next(self.model.parameters(), None)
        model = f"{str(param.dtype).replace('torch.', '')} on {param.device}" if param is not None else "no parameters"
        phase = "training" if self.training else "validation"
        return (f"minilearn: raised at epoch {self.epoch}, {phase} batch {self.iter}; inputs: {describe(self.xb)}; "
                f"targets: {describe(self.yb)}; model parameters: {model}")

    def _end_cleanup(self) -> None:
        """After a fit, normal or not: no half-done gradients, no batch kept alive, and each
        callback's `cleanup_fit` (for what must be released even when a fit raised)."""
        if self.opt is not None:
            self.opt.zero_grad()
        self.dl, self.xb, self.yb, self.pred, self.loss, self.loss_grad = None, (), (), None, None, None
        self._cleanup_callbacks()

    def _cleanup_callbacks(self) -> None:
        """Each callback's `cleanup_fit`: what must be released even when a fit or pass raised."""
        for cb in self.cbs:
            cleanup = getattr(cb, "cleanup_fit", None)
            if callable(cleanup):
                try:
                    cleanup()
                except Exception as e:  # never hide the error that ended the fit
                    warnings.warn(f"{type(cb).__name__}.cleanup_fit raised {e!r}", RuntimeWarning, stacklevel=2)

    @property
    def smooth_loss(self) -> torch.Tensor | None:
        """fastai's smoothed training loss so far: the Recorder's (read on demand, so the loop never
        waits for it), or what a callback set while the Recorder is away (the LR finder's)."""
        recorder = getattr(self, "recorder", None)
        return recorder.smooth_loss() if recorder is not None else self._smooth_loss

    @smooth_loss.setter
    def smooth_loss(self, value) -> None:
        self._smooth_loss = value

    # ------------------------------------------------------------------ optimiser
    def create_opt(self) -> None:
        """Make the optimiser over the splitter's parameter groups (or all trainable parameters)."""
        params = self.splitter(self.model) if self.splitter is not None else \
            [p for p in self.model.parameters() if p.requires_grad]
        if _is_torch_optimizer_class(self.opt_func):
            self.opt = OptimWrapper(params, opt=self.opt_func, lr=self.lr)
        else:
            opt = self.opt_func(params, lr=self.lr)
            self.opt = OptimWrapper(opt) if isinstance(opt, torch.optim.Optimizer) else opt
        if not self.wd_bn_bias and not isinstance(self.opt, OptimWrapper):
            self.opt.exclude_from_wd(norm_bias_params(self.model))

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

    # ------------------------------------------------------------------ schedules
    def _lrs_after_setting(self, lr) -> list[float]:
        """Set the optimiser's lr (a number, list or slice) and read back one value per group."""
        _check_lr(lr)
        if self.opt is None:
            self.create_opt()
        self.opt.set_hyper("lr", self.lr if lr is None else lr)
        lrs = [h["lr"] for h in self.opt.hypers]
        return lrs if len(lrs) > 1 else lrs[0]

    def fit_one_cycle(self, n_epoch: int, lr_max=None, div: float = 25.0, div_final: float = 1e5,
                      pct_start: float = 0.25, wd: float | None = None, moms=None, cbs=None,
                      reset_opt: bool = False, start_epoch: int = 0) -> None:
        """fastai's one-cycle policy: lr warms up from lr_max/div to lr_max over `pct_start`, then
        anneals to lr_max/div_final, both along cosines; momentum moves the opposite way."""
        if reset_opt:
            self.opt = None
        lr_max = self._lrs_after_setting(lr_max)
        div_lr = _elementwise_div(lr_max, div)
        scheds = {"lr": combined_cos(pct_start, div_lr, lr_max, _elementwise_div(lr_max, div_final)),
                  "mom": combined_cos(pct_start, *(self.moms if moms is None else moms))}
        self.fit(n_epoch, wd=wd, cbs=[ParamScheduler(scheds)] + _as_list(cbs), start_epoch=start_epoch)

    def fit_flat_cos(self, n_epoch: int, lr=None, div_final: float = 1e5, pct_start: float = 0.75,
                     wd: float | None = None, cbs=None, reset_opt: bool = False, start_epoch: int = 0) -> None:
        """Constant lr for `pct_start` of training, then a cosine down to lr/div_final."""
        if reset_opt:
            self.opt = None
        lr = self._lrs_after_setting(lr)
        scheds = {"lr": combined_cos(pct_start, lr, lr, _elementwise_div(lr, div_final))}
        self.fit(n_epoch, wd=wd, cbs=[ParamScheduler(scheds)] + _as_list(cbs), start_epoch=start_epoch)

    def fit_sgdr(self, n_cycles: int, cycle_len: int, lr_max=None, cycle_mult: int = 2, wd: float | None = None,
                 cbs=None, reset_opt: bool = False, start_epoch: int = 0) -> None:
        """Warm restarts: `n_cycles` cosines from lr_max to 0, each `cycle_mult` times longer."""
        if not isinstance(n_cycles, int) or n_cycles < 1 or not isinstance(cycle_len, int) or cycle_len < 1:
            raise ValueError(f"n_cycles, cycle_len: expected ints >= 1, got {n_cycles!r}, {cycle_len!r}")
        if reset_opt:
            self.opt = None
        lr_max = self._lrs_after_setting(lr_max)
        lengths = [cycle_len * cycle_mult**i for i in range(n_cycles)]
        n_epoch = sum(lengths)
        scheds = {"lr": combine_scheds([n / n_epoch for n in lengths], [SchedCos(lr_max, 0.0) for _ in lengths])}
        self.fit(n_epoch, wd=wd, cbs=[ParamScheduler(scheds)] + _as_list(cbs), start_epoch=start_epoch)

    # ------------------------------------------------------------------ lr finder
    def lr_find(self, start_lr=1e-7, end_lr=10, num_it: int = 100, stop_div: bool = True,
                show_plot: bool = True, suggest_funcs=(valley,), plot_path: str | Path | None = None):
        """Train briefly with an exponentially rising lr and suggest one from the loss curve.

        It leaves no trace: the weights, the optimiser (and its state), the Recorder, the random
        number generators and the loaders' shuffling are restored afterwards, so `lr_find()`
        followed by `fit()` gives the numbers of `fit()` alone. The curve is kept in
        `learn.lr_finder` (lrs, losses); `learn.plot_lr_find()` draws it. `show_plot` displays
        the plot in a notebook; `plot_path` saves it as an image (for scripts and terminals).
        """
        finder = LRFinder(start_lr, end_lr, num_it, stop_div)
        funcs = tuple(suggest_funcs) if isinstance(suggest_funcs, (list, tuple)) else (suggest_funcs,)
        n_epoch = finder.num_it // len(self.dls.train) + 1
        saved = self._snapshot()
        try:
            # the table, the history, the CSV log and early stopping / best-model saving sit this out
            with self.removed_cbs([Recorder, ProgressCallback, TrackerCallback, CSVLogger]):
                self.fit(n_epoch, cbs=finder)
        finally:
            self._restore(saved)
        self.lr_finder = finder
        if funcs:
            finder.suggestions, finder.points = suggest(finder.lrs, finder.losses, finder.num_it, funcs)
        if show_plot or plot_path is not None:
            fig = self.plot_lr_find()
            if plot_path is not None and is_rank0():
                from minilearn.plotting import save_figure
                save_figure(fig, plot_path)
            if show_plot and "IPython" in sys.modules:
                from minilearn.callbacks.progress import in_notebook
                if in_notebook():
                    from IPython.display import display
                    display(fig)
        return finder.suggestions

    def plot_lr_find(self, skip_end: int = 5):
        """The last lr_find's loss against learning rate (log axis) with its suggestions; a Figure."""
        finder = getattr(self, "lr_finder", None)
        if finder is None:
            raise RuntimeError("plot_lr_find: run learn.lr_find() first")
        names = finder.suggestions._fields if finder.suggestions is not None else ()
        return plot_lr_find(finder.lrs, finder.losses, finder.points, names, skip_end)

    def _snapshot(self) -> dict:
        """Everything lr_find may change: weights, optimiser, RNGs, loaders' generators, mode."""
        np_rng = sys.modules["numpy"].random.get_state() if "numpy" in sys.modules else None
        return {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            "modes": [m.training for m in self.model.modules()],
            "opt": self.opt.state_dict() if self.opt is not None else None,
            "rng": self.rng_state(), "np_rng": np_rng,
            "state": {k: getattr(self, k) for k in ("epoch", "n_epoch", "train_iter", "pct_train", "_smooth_loss")},
        }

    def _restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        for m, mode in zip(self.model.modules(), saved["modes"]):
            m.training = mode
        if saved["opt"] is None:
            self.opt = None
        else:
            self.opt.load_state_dict(saved["opt"])
        self.set_rng_state(saved["rng"])
        if saved["np_rng"] is not None:
            sys.modules["numpy"].random.set_state(saved["np_rng"])
        for k, v in saved["state"].items():
            setattr(self, k, v)

    def rng_state(self) -> dict:
        """The random number generators: torch's (CPU and CUDA), Python's, and each loader's."""
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if cuda else [],
            "python": random.getstate(),
            "loaders": [dl.generator.get_state() if getattr(dl, "generator", None) is not None else None
                        for dl in self.dls.loaders],
        }

    def set_rng_state(self, state: dict) -> None:
        """Put back what `rng_state()` returned."""
        torch.set_rng_state(state["torch"].cpu())
        # CUDA generators only where the same number of GPUs is there (a GPU run resumed on a CPU
        # keeps the CPU state, the one its data order and dropout on the CPU depend on)
        if state["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        random.setstate(state["python"])
        for dl, s in zip(self.dls.loaders, state["loaders"]):
            if s is not None:
                dl.generator.set_state(s.cpu())

    # ------------------------------------------------------------------ saving
    def save(self, name: str | Path, with_opt: bool = True) -> Path:
        """Save the weights, optimiser state, epoch and RNG states to `path/model_dir/<name>.pth`.

        The write is atomic: a crash or kill in the middle leaves the previous file as it was.
        """
        path = self.checkpoint_path(name)
        if not is_rank0():  # under torch.distributed only rank 0 writes (every rank holds the same weights)
            distrib_barrier()
            return path
        state = {"model": self.model.state_dict(), "epoch": self.epoch, "rng": self.rng_state()}
        if with_opt and self.opt is not None:
            state["opt"] = self.opt.state_dict()
        save_checkpoint(state, path)
        distrib_barrier()  # every process may load it next (a no-op in a single process)
        return path

    def load(self, name: str | Path, with_opt: bool = True, with_rng: bool = False, device=None,
             strict: bool = True) -> "Learner":
        """Load what `save` wrote (checked in full before anything changes); returns the Learner.

        Only tensors and plain data are unpickled (`weights_only=True`). `with_rng` also puts
        back the random number generators and the epoch, to resume a run exactly. The file is
        read onto the CPU and copied into the parameters where they are; `device` then moves
        the model there.
        """
        path = self.checkpoint_path(name)
        ckpt = load_checkpoint(path, map_location="cpu")
        saved = ckpt.get("model")
        if not isinstance(saved, dict):
            raise ValueError(f"checkpoint {path}: no model weights in it")
        check_weights_fit(self.model, saved, path, strict)
        if with_opt and "opt" in ckpt:
            if self.opt is None:
                self.create_opt()
            self.opt.load_state_dict(ckpt["opt"])  # checks its own structure before changing anything
        self.model.load_state_dict(saved, strict=strict)
        if with_rng and "rng" in ckpt:
            self.set_rng_state(ckpt["rng"])
            self.epoch = ckpt.get("epoch", self.epoch)
        if device is not None:
            self.model.to(device)
        return self

    def export(self, fname: str | Path = "export.pth") -> Path:
        """Write the model for inference to `path/fname` in a file that cannot run code when loaded.

        `minilearn.load_learner(fname)` reads it back (see `minilearn.export` for the format).
        """
        fname = Path(fname)
        path = fname if fname.is_absolute() else self.path / fname
        if is_rank0():
            export_model(self.model, path, item_ndim=self._item_ndim())
        distrib_barrier()
        return path

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for one item (no batch dimension) or a batch, on the CPU."""
        self._to_device()
        return predict(self.model, x, self._item_ndim(), self.device)

    def _item_ndim(self) -> int:
        """Dimensions of one input item (to tell an item from a batch), looked up once per loader."""
        dl = self.dls.train
        if getattr(self, "_item_ndim_of", (None, 0))[0] is not dl:
            self._item_ndim_of = (dl, dl.one_batch()[0].ndim - 1)
        return self._item_ndim_of[1]

    # ------------------------------------------------------------------ several processes
    def distrib_ctx(self, sync_loss: bool = True, backend: str | None = None, timeout=DEFAULT_TIMEOUT,
                    **ddp_kwargs):
        """A context manager: inside it, train on every process torchrun started, with DDP.

        Run as a single process it changes nothing. See `minilearn.callbacks.distributed`.
        """
        return distrib_ctx(self, sync_loss=sync_loss, backend=backend, timeout=timeout, **ddp_kwargs)

    def checkpoint_path(self, name: str | Path) -> Path:
        """Where `save(name)` writes: `path/model_dir/<name>.pth` (an absolute name is kept)."""
        name = Path(name)
        name = name if name.suffix else name.with_suffix(".pth")
        return name if name.is_absolute() else self.path / self.model_dir / name

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
        existing = getattr(self, cb.name, None)
        if existing is not None and not isinstance(existing, Callback):
            raise ValueError(f"cbs: a callback named {cb.name!r} would hide the Learner's attribute of that name")
        if getattr(cb, "_added_seq", None) is None:
            cb._added_seq = next(_ADD_SEQ)
        cb.learn = self
        setattr(self, cb.name, cb)
        self.cbs = tuple(sorted(self.cbs + (cb,), key=lambda c: (c.order, c._added_seq)))
        self._handlers.clear()
        return cb

    def add_cbs(self, cbs: Iterable[Callback | type] | Callback | type | None) -> None:
        """Add each of `cbs` (see `add_cb`)."""
        for cb in _as_list(cbs):
            self.add_cb(cb)

    def remove_cb(self, cb: Callback | type) -> None:
        """Remove a callback, or every callback of a class."""
        targets = [c for c in self.cbs if (isinstance(c, cb) if isinstance(cb, type) else c is cb)]
        for c in targets:
            self.cbs = tuple(x for x in self.cbs if x is not c)
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
        for cb in _as_list(cbs):
            self.remove_cb(cb)

    @contextlib.contextmanager
    def added_cbs(self, cbs: Iterable[Callback | type] | Callback | type | None):
        """Callbacks present only inside the `with` block, removed even if it raises."""
        cbs = [cb() if isinstance(cb, type) else cb for cb in _as_list(cbs)]
        new = [cb for cb in cbs if cb not in self.cbs]  # one already there stays after the block
        self.add_cbs(new)
        try:
            yield self
        finally:
            self.remove_cbs(new)

    @contextlib.contextmanager
    def removed_cbs(self, cbs: Iterable[Callback | type] | Callback | type | None):
        """Callbacks absent inside the `with` block, put back afterwards where they were."""
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
        """Neither table nor bar (the recorder still records): a context manager."""
        return self.removed_cbs([ProgressCallback])

    def show_training_loop(self) -> None:
        """Print the events of a fit, indented by nesting, with the callbacks that run at each."""
        for depth, event, training in LOOP_LAYOUT:
            names = [type(cb).__name__ for cb in self.cbs if callable(getattr(cb, event, None))
                     and cb.runs_at(event, training if training is not None else True)]
            label = f"{'  ' * depth}{event}" + (" (train)" if training else " (valid)" if training is False else "")
            print(f"{label:<36}: {', '.join(names)}" if names else label)

    # ------------------------------------------------------------------ inference
    def validate(self, dl=None, cbs=None) -> list[float | None]:
        """Loss and metrics over `dl` (default: the validation loader): `[valid_loss, *metrics]`.

        It runs only the validation events (`before_validate` ... `after_validate`, not the fit's
        or epoch's), with a Recorder of its own, and leaves the learner as it was, so a callback
        may call it in the middle of a fit.
        """
        with self.removed_cbs([Recorder, ProgressCallback]), self.added_cbs([Recorder(add_time=False)] + _as_list(cbs)):
            self._run_validation(self._valid_dl(dl))
            return self.recorder.last_valid

    def get_preds(self, dl=None, act: Callable | None = None, cbs=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and targets over `dl` (default: the validation loader), on the CPU."""
        gather = GatherPredsCallback()
        with self.removed_cbs([Recorder, ProgressCallback]), self.added_cbs([gather] + _as_list(cbs)):
            self._run_validation(self._valid_dl(dl))
        preds, targs = gather.result()
        return (act(preds) if act is not None else preds), targs

    def _run_validation(self, dl) -> None:
        """One validation pass over `dl`; the training state (mode, batch, counters) is put back."""
        saved = {k: getattr(self, k) for k in _PASS_STATE}
        modes = [m.training for m in self.model.modules()]
        try:
            self._to_device()
            self._do_validate(dl)
        except BaseException:
            self._cleanup_callbacks()
            raise
        finally:
            for k, v in saved.items():
                setattr(self, k, v)
            for m, mode in zip(self.model.modules(), modes):
                m.training = mode

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


# The events around each stage of the loop: (before, after_cancel, after).
_STAGE_EVENTS = {stage: (f"before_{stage}", f"after_cancel_{stage}", f"after_{stage}")
                 for stage in ("fit", "epoch", "train", "validate", "batch", "backward", "step")}

# What a validation pass changes and puts back (it may run in the middle of a fit).
_PASS_STATE = ("training", "dl", "iter", "n_iter", "xb", "yb", "pred", "loss", "loss_grad", "device", "n_inp",
               "_batch_on_device")

# Numbers callbacks as they are first added: ties in `order` keep this order.
_ADD_SEQ = itertools.count()

def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _is_torch_optimizer_class(f) -> bool:
    """A torch.optim class, or a functools.partial of one."""
    f = getattr(f, "func", f)
    return isinstance(f, type) and issubclass(f, torch.optim.Optimizer)


def _elementwise_div(x, d: float):
    """x / d for a number or a list of numbers (one per parameter group)."""
    return [v / d for v in x] if isinstance(x, list) else x / d


def _check_lr(lr) -> None:
    """A learning rate: None (the default), a number >= 0, a list (one per group), or a slice."""
    ok = lr is None or isinstance(lr, slice) or (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr >= 0) or (
        isinstance(lr, (list, tuple)) and all(isinstance(v, (int, float)) and v >= 0 for v in lr))
    if not ok:
        raise ValueError(f"lr: expected a number >= 0, a list with one per parameter group, or a slice; got {lr!r}")


def _note_once(e: BaseException, note: str) -> None:
    """Add `note` to the exception unless minilearn already noted where it arose."""
    if not any(n.startswith("minilearn: ") for n in getattr(e, "__notes__", [])):
        add_note(e, note)


def _check_unique(names: Iterable[str], arg: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{arg}: two metrics are named {n!r}; metrics are looked up by name, so name one: "
                             f"AvgMetric(f) takes its function's __name__, StatefulMetric(m, name=...) any name")
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

"""Callbacks that watch a metric across epochs: early stopping and saving the best model.

Semantics are fastai's: the monitored value is compared after each epoch with `comp` (lower is
better for names containing 'loss' or 'error', higher otherwise), and counts as a new best
only when it beats the best by more than `min_delta`. The monitor is found by name.
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Callable

import torch

from minilearn.callback import Callback, CancelFitException
from minilearn.checks import check_bool, check_int, check_number
from minilearn.distributed import is_rank0


class TrackerCallback(Callback):
    """Tracks the best value of `monitor` over epochs; `new_best` tells whether this epoch beat it."""

    order = 60
    sits_out = ("lr_find",)

    def __init__(self, monitor: str = "valid_loss", comp: Callable | None = None, min_delta: float = 0.0,
                 reset_on_fit: bool = True):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor: expected a column name such as 'valid_loss', got {monitor!r}")
        if comp is None:
            comp = operator.lt if ("loss" in monitor or "error" in monitor) else operator.gt
        if not callable(comp):
            raise TypeError(f"comp: expected a comparison such as operator.lt, got {comp!r}")
        self.monitor, self.comp, self.reset_on_fit = monitor, comp, reset_on_fit
        # fastai's rule: for lower-is-better, a new value must be below best - min_delta
        self.min_delta = -min_delta if comp in (operator.lt, operator.le) else min_delta
        self.best: float | None = None
        self.new_best = False

    def before_fit(self) -> None:
        recorder = getattr(self.learn, "recorder", None)
        names = recorder.metric_names[1:] if recorder is not None else []
        if self.monitor not in names or self.monitor == "time":
            raise ValueError(f"monitor: no column {self.monitor!r} to track; the columns are "
                             f"{[n for n in names if n != 'time']}")
        self.idx = names.index(self.monitor)  # its place in recorder.values' rows, found by name
        if self.reset_on_fit or self.best is None:
            self.best = math.inf if self.comp(0, 1) else -math.inf

    def state_dict(self) -> dict:
        """The best value so far (and, in subclasses, what else they count)."""
        return {"best": self.best, "new_best": self.new_best}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.new_best = state["best"], state["new_best"]

    def after_epoch(self) -> None:
        # the epoch's row as the Recorder keeps it (fastai's trackers read it there, so a callback
        # that rewrites recorder.values[-1] is seen)
        value = self.learn.recorder.values[-1][self.idx]
        self.new_best = value is not None and bool(self.comp(value - self.min_delta, self.best))
        if self.new_best:
            self.best = value


class PlateauTracker(TrackerCallback):
    """A tracker that acts once `monitor` has not improved for `patience` epochs in a row: the base
    of EarlyStoppingCallback and ReduceLROnPlateau, which say what to do in `on_plateau`."""

    def __init__(self, monitor: str = "valid_loss", comp: Callable | None = None, min_delta: float = 0.0,
                 patience: int = 1, reset_on_fit: bool = True):
        super().__init__(monitor, comp, min_delta, reset_on_fit)
        self.patience = check_int("patience", patience, low=1)
        self.wait = 0  # epochs since the last new best

    def before_fit(self) -> None:
        self.wait = 0
        super().before_fit()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.wait = state["wait"]

    def after_epoch(self) -> None:
        super().after_epoch()
        self.wait = 0 if self.new_best else self.wait + 1
        if self.wait >= self.patience:
            self.on_plateau()

    def on_plateau(self) -> None:
        raise NotImplementedError


class EarlyStoppingCallback(PlateauTracker):
    """Stops training when `monitor` has not improved for `patience` epochs."""

    order = TrackerCallback.order + 3

    def __init__(self, monitor: str = "valid_loss", comp: Callable | None = None, min_delta: float = 0.0,
                 patience: int = 1, reset_on_fit: bool = True):
        super().__init__(monitor, comp, min_delta, patience, reset_on_fit)
        self.stopped_epoch: int | None = None

    def before_fit(self) -> None:
        self.stopped_epoch = None
        super().before_fit()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.stopped_epoch = state["stopped_epoch"]

    def on_plateau(self) -> None:
        self.stopped_epoch = self.learn.epoch
        if is_rank0():  # one message, not one per process
            print(f"No improvement since epoch {self.learn.epoch - self.wait}: early stopping", flush=True)
        raise CancelFitException()


class SaveModelCallback(TrackerCallback):
    """Saves the model when `monitor` improves (or every epoch), and loads the best at the end.

    `fname` goes under `learn.path/learn.model_dir`; with `every_epoch` the files are
    `<fname>_<epoch>.pth` and nothing is loaded at the end; `at_end` saves once, after the fit.
    `saved_epochs` lists the epochs it saved at. Writes are atomic (see `Learner.save`).
    """

    order = TrackerCallback.order + 1

    def __init__(self, monitor: str = "valid_loss", comp: Callable | None = None, min_delta: float = 0.0,
                 fname: str = "model", every_epoch: bool | int = False, at_end: bool = False,
                 with_opt: bool = False, reset_on_fit: bool = True):
        super().__init__(monitor, comp, min_delta, reset_on_fit)
        if not isinstance(fname, (str, os.PathLike)) or not str(fname).strip():
            raise ValueError(f"fname: expected a file name for the checkpoints, got {fname!r}")
        if not isinstance(every_epoch, bool):  # True, False, or save every n-th epoch
            check_int("every_epoch", every_epoch, low=1)
        for name, flag in (("at_end", at_end), ("with_opt", with_opt)):
            check_bool(name, flag)
        self.fname, self.every_epoch, self.at_end, self.with_opt = fname, every_epoch, at_end, with_opt
        self.last_saved_path = None
        self.saved_epochs: list[int] = []

    def before_fit(self) -> None:
        self.saved_epochs, self.last_saved_path = [], None  # only this fit's saves are loaded back
        super().before_fit()

    def state_dict(self) -> dict:
        """The best value, the epochs saved at and the last file written (loaded back at the end)."""
        last = None if self.last_saved_path is None else str(self.last_saved_path)
        return {**super().state_dict(), "saved_epochs": list(self.saved_epochs), "last_saved_path": last}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.saved_epochs = list(state["saved_epochs"])
        last = state["last_saved_path"]
        self.last_saved_path = None if last is None else Path(last)

    def _save(self, name: str) -> None:
        self.last_saved_path = self.learn.save(name, with_opt=self.with_opt)
        self.saved_epochs.append(self.learn.epoch)

    def after_epoch(self) -> None:
        if self.every_epoch:
            if self.learn.epoch % int(self.every_epoch) == 0:
                self._save(f"{self.fname}_{self.learn.epoch}")
            return
        super().after_epoch()
        if self.new_best:
            if is_rank0():  # one message, not one per process
                print(f"Better model found at epoch {self.learn.epoch} with {self.monitor} value: {self.best}.", flush=True)
            self._save(self.fname)

    def after_fit(self) -> None:
        if self.at_end:
            self._save(self.fname)
        elif not self.every_epoch and self.last_saved_path is not None:
            self.learn.load(self.fname, with_opt=self.with_opt)


class ReduceLROnPlateau(PlateauTracker):
    """Divides the learning rate by `factor` when `monitor` has not improved for `patience` epochs."""

    order = TrackerCallback.order + 2

    def __init__(self, monitor: str = "valid_loss", comp: Callable | None = None, min_delta: float = 0.0,
                 patience: int = 1, factor: float = 10.0, min_lr: float = 0.0, reset_on_fit: bool = True):
        super().__init__(monitor, comp, min_delta, patience, reset_on_fit)
        self.factor = check_number("factor", factor, low=1, low_open=True)  # the lr is divided by it
        self.min_lr = check_number("min_lr", min_lr, low=0)

    def on_plateau(self) -> None:
        opt = self.learn.opt
        old = opt.hypers[-1]["lr"]
        opt.set_hyper("lr", [max(h["lr"] / self.factor, self.min_lr) for h in opt.hypers])
        self.wait = 0
        if opt.hypers[-1]["lr"] < old and is_rank0():  # one message, not one per process
            print(f"Epoch {self.learn.epoch}: reducing lr to {opt.hypers[-1]['lr']}", flush=True)


class TerminateOnNaNCallback(Callback):
    """Stops training at the first training batch whose loss is NaN or infinite, saying where.

    It checks right after the loss, so the bad batch takes no step and the weights stay finite
    (fastai checks after the step). It reads the loss on the host every batch (one
    synchronisation per batch), so it is not on by default. `stopped_at` is (epoch, batch).
    """

    # after DistributedTrainer (11) has averaged the loss, so every process stops together; still
    # before the backward pass and the step
    order = 12
    run_valid = False

    def before_fit(self) -> None:
        self.stopped_at = None

    def state_dict(self) -> dict:
        return {"stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        self.stopped_at = None if state["stopped_at"] is None else tuple(state["stopped_at"])

    def after_loss(self) -> None:
        loss = self.learn.loss
        if loss is not None and not bool(torch.isfinite(loss).all()):
            self.stopped_at = (self.learn.epoch, self.learn.iter)
            if is_rank0():  # one message, not one per process
                print(f"Loss is {float(loss.float().mean())} at epoch {self.learn.epoch}, batch {self.learn.iter}: "
                  f"training stopped", flush=True)
            raise CancelFitException()

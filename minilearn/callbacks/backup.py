"""BackupCallback: one backup of the whole run, so that a run killed at any moment and simply started
again continues as if it had never stopped.

fastai has no such callback; Keras's `BackupAndRestore` and Lightning's `ckpt_path="last"` are the
models. The backup is one file, `learn.path/model_dir/<fname>.pth`, rewritten atomically (see
`checkpoint.atomic_write`) after every epoch, and after every `every_n_batches` training batches
when asked. It holds:

    model     the weights;
    opt       the optimiser's state and hyper-parameters;
    position  the fit it belongs to, the epoch and the batch reached, the loop's counters;
    rng       every random number generator (torch's, CUDA's, Python's, each loader's), per process,
              and for a mid-epoch backup the training loader's as the epoch began (its data order);
    cbs       the `state_dict()` of every callback that keeps run state: the Recorder's history and
              smoothed loss, trackers' best and wait, schedulers' values, a CSVLogger's rows, ...

When a fit starts and a backup of that fit exists, everything is checked (the same model, optimiser,
number of epochs and batches, callbacks, generators) and then put back, and the fit continues from
where the backup was written; when the fit ends (normally or by a CancelFitException such as early
stopping), the backup is removed. A fit that raises, is interrupted or killed leaves it there.

Where things are put back: the weights, optimiser and position as the fit starts, after every
other callback's `before_fit` (which resets their state); the callbacks' states then too, or, for
a backup written mid-epoch, at the start of that epoch's training, after every other callback's
`before_epoch` and `before_train`; the loop then starts that pass at the batch after the backup
(`dl.batches_from(k)`: the pass's order drawn as before, the batches done never fetched, so no
random batch transform runs for them).

Fits are counted (those that ended normally): a script that runs several fits with the same
callback resumes the one that was interrupted (the fits before it run again as they did, neither
writing nor removing that backup), and the same learner fitted again after a failure, as in a
notebook, resumes the failed fit. So keep one BackupCallback in the Learner's callbacks; one
passed to each `fit(cbs=...)` anew counts from zero every time, and two fits of a script would
then need their own `fname`s.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from minilearn import checkpoint
from minilearn.callback import Callback
from minilearn.checks import check_int
from minilearn.data import TorchLoader
from minilearn.distributed import all_gather_object, distrib_barrier, is_rank0, num_distrib, rank_distrib

FORMAT = "minilearn backup 1"


class BackupCallback(Callback):
    """Keeps one full-state backup of the running fit and resumes from it when the fit is run again.

    - `fname`: the file, under `learn.path/learn.model_dir` (`.pth` added): `backup.pth` by default;
    - `every_n_batches`: also write one after every n-th training batch (mid-epoch backups, for
      long epochs); they need minilearn's own loaders, whose order comes from their generator.

    After a fit `resumed_from` is None or `(epoch, batch)`, where the fit picked up (batch None:
    at the start of that epoch). See the module's notes for what a backup holds.
    """

    order = 110  # after every other callback: a backup is written once they all have finished the epoch
    run_valid = False
    sits_out = ("lr_find", "validate")

    def __init__(self, fname: str | os.PathLike = "backup", every_n_batches: int | None = None):
        if not isinstance(fname, (str, os.PathLike)) or not str(fname).strip():
            raise ValueError(f"fname: expected a file name for the backup, got {fname!r}")
        if every_n_batches is not None:
            check_int("every_n_batches", every_n_batches, low=1)
        self.fname, self.every_n_batches = fname, every_n_batches
        # fits this callback has seen end normally: a backup says which fit it belongs to, so a
        # script of several fits resumes the one that failed (and the same learner fitted again
        # after a failure, in a notebook, resumes it too)
        self.fits_done = 0
        self.resumed_from: tuple[int, int | None] | None = None
        self._mid_epoch = None  # a mid-epoch backup being put back: its content, until its epoch starts
        self._epoch_start_gen = None  # the training loader's generator as this epoch began (mid-epoch backups)
        self._passive = False

    @property
    def path(self) -> Path:
        """The backup's file."""
        return checkpoint.checkpoint_path(self.learn, self.fname)

    # -- events
    def before_fit(self) -> None:
        self.fit_index, self.resumed_from, self._mid_epoch = self.fits_done, None, None
        self._passive = False  # True while a later fit's backup waits: this fit leaves it alone
        if self.every_n_batches and not hasattr(self.learn.dls.train, "batches_from"):
            raise ValueError("every_n_batches: mid-epoch backups need a loader that can start a pass at a later batch "
                             "(batches_from), as minilearn's DataLoader can; use epoch-end backups (every_n_batches=None)")
        if self.every_n_batches and isinstance(self.learn.dls.train, TorchLoader):
            raise ValueError("every_n_batches: mid-epoch backups need minilearn's own DataLoader (its order comes "
                             "from its generator); a wrapped torch DataLoader's sampler and workers draw theirs from "
                             "torch's global generator, so use epoch-end backups (every_n_batches=None)")
        if self.every_n_batches and getattr(getattr(self.learn, "recorder", None), "train_metrics", False):
            raise ValueError("every_n_batches: mid-epoch backups do not hold the training metrics' running state; "
                             "use epoch-end backups with Recorder(train_metrics=True)")
        path = self.path
        if not path.exists():
            return
        backup = checkpoint.load_checkpoint(path, map_location="cpu")
        if backup.get("format") != FORMAT:
            raise ValueError(f"backup {path}: not a minilearn backup (no {FORMAT!r} in it); delete it or give "
                             "BackupCallback another fname")
        if backup["fit_index"] > self.fit_index:  # a later fit of this script failed: this one runs as
            self._passive = True                   # before, and neither writes nor removes that backup
            return
        if backup["fit_index"] < self.fit_index:
            return  # left by an earlier fit that was not resumed: this fit's backups replace it
        self._check(backup, path)
        self._restore_training(backup)
        if backup["iter"] is None:  # written at an epoch's end: the next epoch starts afresh
            self.learn.start_epoch = backup["epoch"] + 1
            self._restore_callbacks(backup)
            self._set_rng(backup["rng"])
            self.resumed_from = (backup["epoch"] + 1, None)
        else:  # written mid-epoch: the rest is put back as that epoch starts (before_train)
            self.learn.start_epoch = backup["epoch"]
            self._mid_epoch = backup
            self.resumed_from = (backup["epoch"], backup["iter"] + 1)
        if is_rank0():
            where = f"epoch {self.resumed_from[0]}" + (f", batch {self.resumed_from[1]}" if backup["iter"] is not None
                                                       else "")
            print(f"Resumed from backup {path} at {where}", flush=True)

    def before_train(self) -> None:
        backup = self._mid_epoch
        if backup is not None and self.learn.epoch == backup["epoch"]:
            self._mid_epoch = None
            self._restore_callbacks(backup)
            self.learn.train_iter, self.learn.pct_train = backup["train_iter"], backup["pct_train"]
            # every generator as at the backup, except the training loader's, which goes back to the
            # epoch's start: the loop then draws the pass's order from it and starts after the batches done
            self._set_rng(backup["rng"])
            self.learn.dls.train.generator.set_state(backup["epoch_start_gen"])
            self.learn.resume_iter = backup["iter"] + 1
        if self.every_n_batches:  # (under DDP the same on every rank: DistributedTrainer broadcast it)
            self._epoch_start_gen = self.learn.dls.train.generator.get_state()

    def after_batch(self) -> None:
        if self.every_n_batches and self.learn.train_iter % self.every_n_batches == 0 and not self._passive:
            self._write(self.learn.iter)

    def after_train(self) -> None:
        self.learn.resume_iter = 0

    def after_epoch(self) -> None:
        if not self._passive:
            self._write(None)

    def after_fit(self) -> None:
        # the fit is over (a CancelFitException ends it normally too): nothing to resume any more
        self.fits_done += 1
        if self._passive:
            return
        distrib_barrier()
        if is_rank0():
            self.path.unlink(missing_ok=True)
        distrib_barrier()

    def cleanup_fit(self) -> None:
        self.learn.resume_iter = 0  # a fit that raised: the backup stays, the learner forgets the skip

    # -- writing
    def _write(self, batch: int | None) -> None:
        """The backup of this moment: epoch-end (`batch` None) or after training batch `batch`."""
        learn = self.learn
        rng = self._gathered_rng()  # a collective under torch.distributed: every rank calls it
        states = _callback_states(learn)
        if not is_rank0():
            distrib_barrier()
            return
        backup = {
            "format": FORMAT, "fit_index": self.fit_index, "n_epoch": learn.n_epoch, "n_iter": len(learn.dls.train),
            "world_size": num_distrib(), "epoch": learn.epoch, "iter": batch,
            "train_iter": learn.train_iter, "pct_train": learn.pct_train,
            "model": _plain_model(learn.model).state_dict(), "opt": learn.opt.state_dict(),
            "opt_kind": type(learn.opt).__name__, "rng": rng,
            "epoch_start_gen": self._epoch_start_gen if batch is not None else None,
            "cbs": states,
        }
        checkpoint.save_checkpoint(backup, self.path)
        distrib_barrier()

    def _gathered_rng(self) -> list[dict]:
        """Every process's generators (one process: a list of one)."""
        state = checkpoint.rng_state(self.learn.dls.loaders)
        return all_gather_object(state) if num_distrib() > 1 else [state]

    # -- putting back
    def _check(self, backup: dict, path: Path) -> None:
        """Raise, naming the file, unless the backup fits this fit exactly; nothing is changed yet."""
        learn = self.learn

        def differs(what: str, saved, now) -> None:
            if saved != now:
                raise ValueError(f"backup {path}: it is of a fit with {what} {saved}, this fit has {now}; delete "
                                 "the file to start afresh, or give BackupCallback another fname")
        differs("n_epoch", backup["n_epoch"], learn.n_epoch)
        differs("batches per epoch", backup["n_iter"], len(learn.dls.train))
        differs("processes", backup["world_size"], num_distrib())
        differs("optimiser", backup["opt_kind"], type(learn.opt).__name__)
        differs("stateful callbacks", sorted(backup["cbs"]), sorted(_stateful_callbacks(learn)))
        checkpoint.check_weights_fit(_plain_model(learn.model), backup["model"], path)
        checkpoint.check_opt_state_fits(learn.opt, backup["opt"], path)
        checkpoint.check_rng_state(backup["rng"][rank_distrib()], learn.dls.loaders, path)
        if backup["epoch_start_gen"] is not None:
            try:
                torch.Generator().set_state(backup["epoch_start_gen"])
            except (TypeError, RuntimeError) as e:
                raise ValueError(f"checkpoint {path}: its training loader's generator state is not valid ({e})") from None

    def _restore_training(self, backup: dict) -> None:
        learn = self.learn
        _plain_model(learn.model).load_state_dict(backup["model"])
        learn.opt.load_state_dict(backup["opt"])
        learn.train_iter, learn.pct_train = backup["train_iter"], backup["pct_train"]

    def _restore_callbacks(self, backup: dict) -> None:
        for key, cb in _stateful_callbacks(self.learn).items():
            cb.load_state_dict(backup["cbs"][key])

    def _set_rng(self, per_rank: list[dict]) -> None:
        checkpoint.set_rng_state(per_rank[rank_distrib()], self.learn.dls.loaders)



def _plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The user's model (under DDP, the one inside the wrapper)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _stateful_callbacks(learn) -> dict[str, Callback]:
    """The callbacks that keep run state, keyed by name (`name#1`, ... for a second of a name)."""
    out: dict[str, Callback] = {}
    for cb in learn.cbs:
        if isinstance(cb, BackupCallback) or type(cb).state_dict is Callback.state_dict:
            continue
        key, n = cb.name, 1
        while key in out:
            key, n = f"{cb.name}#{n}", n + 1
        out[key] = cb
    return out


def _callback_states(learn) -> dict[str, dict]:
    """Each stateful callback's `state_dict()`."""
    return {key: cb.state_dict() for key, cb in _stateful_callbacks(learn).items()}

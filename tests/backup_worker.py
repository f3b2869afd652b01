"""A training script that tests/test_backup.py kills (SIGKILL) and simply runs again until it ends.

    python tests/backup_worker.py OUT_DIR [--every-n-batches N] [--kill-at WHAT:N] [--ddp]

It trains a small dropout MLP with Adam and `fit_one_cycle`, with `EarlyStoppingCallback`,
`SaveModelCallback`, `CSVLogger` and a `BackupCallback`, then writes what the run ended with to
`OUT_DIR/result.pth` (rank 0): the weights, the Recorder's table and per-batch losses, the CSV
file's rows and the best model's weights. It prints "fit started" when the fit begins, so that
a test can time a kill into the training rather than into Python's start-up.

`--kill-at WHAT:N` makes the process kill itself (SIGKILL) at the N-th time (from 1) it reaches
WHAT, a fault the test cannot time from outside:
    write-<file>   half-way through writing <file> (history.csv, backup.pth, model.pth): the
                   temporary file holds half the bytes, the rename has not happened;
    <event>        at that event, after every callback but the backup has run it (after_epoch:
                   the CSV row and the best model are written, the backup not yet; after_fit:
                   the best model is loaded, the backup not yet removed; before_batch, ...).
Only the first run of a sequence gets `--kill-at` (the test runs it again without).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from minilearn import (
    BackupCallback, Callback, CrossEntropyLossFlat, CSVLogger, DataLoaders, EarlyStoppingCallback, Learner,
    SaveModelCallback, accuracy, checkpoint, datasets, set_seed,
)
from minilearn.callbacks import logger as logger_module


def killer_of_writes(target: str, nth: int):
    """An atomic_write that, at the nth write of the file named `target`, writes half and dies."""
    real, seen = checkpoint.atomic_write, {"n": 0}

    def atomic_write(path, write):
        if Path(path).name == target:
            seen["n"] += 1
            if seen["n"] == nth:
                def half_then_die(f):
                    buf = io.BytesIO()
                    write(buf)
                    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(path, half_then_die)
        return real(path, write)
    return atomic_write


class KillAt(Callback):
    """Dies (SIGKILL) the nth time `event` runs, after every callback but the backup (order 105)."""

    order = 105

    def __init__(self, event: str, nth: int):
        super().__init__()
        self.count, self.nth = 0, nth
        self.__dict__[event] = self._tick  # the event's method on this instance only

    def _tick(self) -> None:
        self.count += 1
        if self.count == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)


def build(out: Path, every_n_batches: int | None, extra_cbs=()) -> Learner:
    """The same learner every run: data, order, initial weights and callbacks from one seed."""
    set_seed(0)
    x, y = datasets.synthetic_classification(3000, 16, 4, seed=0)
    noisy = torch.rand(len(y), generator=torch.Generator().manual_seed(1)) < 0.3  # a noisy task, to overfit
    y = torch.where(noisy, torch.randint(0, 4, y.shape, generator=torch.Generator().manual_seed(2)), y)
    dls = DataLoaders.from_tensors(x[:2400], y[:2400], x[2400:], y[2400:], bs=16, seed=0)
    model = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 4))
    cbs = [CSVLogger(), SaveModelCallback(), EarlyStoppingCallback(patience=3),
           BackupCallback(every_n_batches=every_n_batches), *extra_cbs]
    return Learner(dls, model, CrossEntropyLossFlat(), metrics=accuracy, path=out, cbs=cbs)


class Started(Callback):
    def before_fit(self) -> None:
        print("fit started", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--every-n-batches", type=int, default=None)
    parser.add_argument("--kill-at", default=None)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--ddp", action="store_true")
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    extra = [Started()]
    if args.kill_at:
        what, nth = args.kill_at.rsplit(":", 1)
        if what.startswith("write-"):
            injected = killer_of_writes(what.removeprefix("write-"), int(nth))
            checkpoint.atomic_write = injected      # the test's fault injection: checkpoints ...
            logger_module.atomic_write = injected   # ... and the CSV log
        else:
            extra.append(KillAt(what, int(nth)))
    learn = build(args.out, args.every_n_batches, extra)
    with learn.no_bar():
        if args.ddp:
            with learn.distrib_ctx():
                learn.fit_one_cycle(args.epochs, args.lr)
        else:
            learn.fit_one_cycle(args.epochs, args.lr)
    if int(os.environ.get("RANK", 0)) == 0:
        csv_rows = (args.out / "history.csv").read_text().splitlines()
        best = checkpoint.load_checkpoint(learn.checkpoint_path("model"))["model"]
        result = {"weights": learn.model.state_dict(), "table": [{k: v for k, v in row.items() if k != "time"}
                                                                  for row in learn.recorder.history],
                  "losses": learn.recorder.losses, "csv": [r.rsplit(",", 1)[0] for r in csv_rows], "best": best,
                  "backup_left": learn.checkpoint_path("backup").exists()}
        torch.save(result, args.out / "result.pth")
        print("done", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

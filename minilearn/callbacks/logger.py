"""CSVLogger: each epoch's row of the table, appended to a CSV file as it is made."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from minilearn.callback import Callback
from minilearn.distributed import is_rank0


class CSVLogger(Callback):
    """Writes the table to `learn.path/fname`, one row per epoch, flushed to disk as it goes.

    Values are written as numbers (full precision, time in seconds), so `read_log()` (a pandas
    DataFrame, as fastai's) and `read_rows()` (dicts, without pandas) give them back as numbers. With `append=False` the file starts afresh at each fit.
    """

    order = 60
    sits_out = ("lr_find",)

    def __init__(self, fname: str | Path = "history.csv", append: bool = False):
        self.fname, self.append = Path(fname), append
        self.file = None
        self.file_path: Path | None = None  # `fname` under the learner's path, known from the first fit

    def before_fit(self) -> None:
        if not is_rank0():  # under torch.distributed one process writes the file
            return
        self.names = self.learn.recorder.metric_names
        self.file_path = self.fname if self.fname.is_absolute() else self.learn.path / self.fname
        self.file_path.parent.mkdir(parents=True, exist_ok=True)
        new = not (self.append and self.file_path.exists() and self.file_path.stat().st_size > 0)
        self.file = open(self.file_path, "a" if self.append else "w", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self._write(self.names)

    def after_epoch(self) -> None:
        if self.file is None:
            return
        log = self.learn.recorder.log
        self._write(["" if log.get(n) is None else log.get(n) for n in self.names])

    def _write(self, row: list) -> None:
        self.writer.writerow(row)
        self.file.flush()
        os.fsync(self.file.fileno())  # a crash loses at most the epoch in progress

    def after_fit(self) -> None:
        self.cleanup_fit()

    def cleanup_fit(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def read_log(self):
        """The rows written so far as a pandas DataFrame, columns named as the table's (fastai's);
        blanks are NaN. Needs pandas (`pip install pandas`); `read_rows()` needs nothing."""
        path = self._written("read_log")
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("read_log: needs pandas (pip install pandas); read_rows() gives the rows "
                              "as dicts without it") from e
        return pd.read_csv(path)

    def read_rows(self) -> list[dict]:
        """The rows written so far, as dicts of floats (ints for `epoch`, None for blanks)."""
        with open(self._written("read_rows"), newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: (None if v == "" else int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]

    def _written(self, caller: str) -> Path:
        if self.file_path is None:
            raise RuntimeError(f"{caller}: nothing written yet; the logger writes during a fit")
        return self.file_path

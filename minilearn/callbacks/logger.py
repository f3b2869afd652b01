"""CSVLogger: the table as a CSV file, rewritten whole (atomically) after each epoch."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from minilearn.callback import Callback
from minilearn.checkpoint import atomic_write
from minilearn.distributed import is_rank0


class CSVLogger(Callback):
    """Writes the table to `learn.path/fname`, one row per finished epoch.

    Values are written as numbers (full precision, time in seconds), so `read_log()` (a pandas
    DataFrame, as fastai's) and `read_rows()` (dicts, without pandas) give them back as numbers.

    The file is crash-consistent: after each epoch it is rewritten whole through a temporary file
    renamed over it, so a crash (or a full disk) leaves the previous complete file, never a cut
    row. With `append=False` a fit starts a new file; with `append=True` it adds to the rows there,
    and a header that differs from this fit's columns is an error, raised before any training
    (never rows under the wrong columns). A fit resumed at `start_epoch=k` (after a crash, from a
    checkpoint) keeps the file's rows of the epochs before k and drops the others, whatever
    `append` says, so that every epoch appears exactly once.
    """

    order = 60
    sits_out = ("lr_find",)

    def __init__(self, fname: str | Path = "history.csv", append: bool = False):
        self.fname, self.append = Path(fname), append
        self.file_path: Path | None = None  # `fname` under the learner's path, known from the first fit
        self.rows: list[list] = []  # the file's rows (without the header): read back as text, or this fit's numbers

    def before_fit(self) -> None:
        if not is_rank0():  # under torch.distributed one process writes the file
            return
        self.names = self.learn.recorder.metric_names
        self.file_path = self.fname if self.fname.is_absolute() else self.learn.path / self.fname
        start = self.learn.start_epoch
        self.rows = []
        if (self.append or start > 0) and self.file_path.exists():
            header, rows = _read_csv(self.file_path)
            if header and header != self.names:
                raise ValueError(f"CSVLogger: {self.file_path} has the columns {header}, this fit writes "
                                 f"{self.names}; give another fname, or append=False for a new file")
            keep_all = self.append and start == 0
            self.rows = [r for r in rows if keep_all or _epoch_of(r) < start]
        self._write()

    def after_epoch(self) -> None:
        if self.file_path is None or not is_rank0():
            return
        log = self.learn.recorder.log
        self.rows.append(["" if log.get(n) is None else log[n] for n in self.names])
        self._write()

    def state_dict(self) -> dict:
        """The rows written so far (the file is rewritten with them when a backup is put back)."""
        return {"rows": [list(r) for r in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [list(r) for r in state["rows"]]
        if self.file_path is not None and is_rank0():
            self._write()

    def _write(self) -> None:
        """The header and every row, to a temporary file renamed over the log (see the class)."""
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(self.names)
        writer.writerows(self.rows)
        data = text.getvalue().encode()
        atomic_write(self.file_path, lambda f: f.write(data))

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


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A log file's header and complete rows (a last line cut short by an older writer is left out)."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    table = list(csv.reader(lines))
    if not table:
        return [], []
    header = table[0]
    return header, [row for row in table[1:] if len(row) == len(header)]


def _epoch_of(row: list[str]) -> int:
    try:
        return int(row[0])
    except (ValueError, IndexError):
        return -1

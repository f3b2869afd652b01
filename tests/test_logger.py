"""CSVLogger: one row of numbers per epoch, appended to on request."""

from __future__ import annotations

import pytest

from minilearn import CSVLogger
from synthetic import class_learner


def test_csv_logger_writes_numbers_and_appends(tmp_path):
    learn = class_learner(tmp_path)
    logger = CSVLogger("logs/history.csv")
    with learn.no_logging():
        learn.fit(2, cbs=logger)
    rows = logger.read_rows()
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["accuracy"] == pytest.approx(learn.recorder.values[1][2])
    assert isinstance(rows[0]["time"], float)
    with learn.no_logging():
        learn.fit(1, cbs=CSVLogger("logs/history.csv", append=True))
    text = (tmp_path / "logs" / "history.csv").read_text().splitlines()
    assert len(text) == 4 and text[0].startswith("epoch,train_loss,valid_loss,accuracy,time")


def test_read_log_is_a_dataframe_of_the_table_as_fastais(tmp_path):
    pd = pytest.importorskip("pandas")
    learn = class_learner(tmp_path)
    logger = CSVLogger()
    with learn.no_logging():
        learn.fit(3, cbs=logger)
    df = logger.read_log()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == learn.recorder.metric_names
    assert df["epoch"].tolist() == [0, 1, 2]
    for row, values in zip(df.itertuples(index=False), learn.recorder.values):
        assert list(row)[1:-1] == pytest.approx(values)
    assert df["time"].tolist() == [r["time"] for r in logger.read_rows()]


def test_read_log_before_any_fit_says_so():
    logger = CSVLogger()
    for read in (logger.read_log, logger.read_rows):
        with pytest.raises(RuntimeError, match="nothing written yet"):
            read()


def _epochs(path):
    return [line.split(",")[0] for line in path.read_text().splitlines()[1:]]


def test_a_crash_and_resume_logs_every_epoch_exactly_once(tmp_path):
    """The row of epoch 2 is written, then the process dies before epoch 2's checkpoint; resumed
    from epoch 1's checkpoint at start_epoch=2, the log holds epochs 0, 1, 2, 3 once each."""
    from minilearn import Callback, SaveModelCallback

    class DieAfterTheRow(Callback):
        order = CSVLogger.order + 0.5  # after the log's row, before SaveModelCallback's save

        def after_epoch(self):
            if self.epoch == 2:
                raise RuntimeError("killed")

    for append in (False, True):
        folder = tmp_path / f"append_{append}"
        learn = class_learner(folder)
        with learn.no_logging(), pytest.raises(RuntimeError, match="killed"):
            learn.fit(4, cbs=[CSVLogger(append=append), SaveModelCallback(every_epoch=True, fname="ep"),
                              DieAfterTheRow()])
        log = folder / "history.csv"
        assert _epochs(log) == ["0", "1", "2"]  # the crashed epoch's row is there...
        resumed = class_learner(folder)
        resumed.load("ep_1", with_rng=True)
        with resumed.no_logging():
            resumed.fit(4, start_epoch=2, cbs=CSVLogger(append=append))
        assert _epochs(log) == ["0", "1", "2", "3"]  # ...and once only after the resume
        reader = CSVLogger()
        reader.file_path = log
        assert reader.read_rows()[3]["valid_loss"] == pytest.approx(resumed.recorder.values[-1][1])


def test_append_with_other_columns_is_an_error_before_training(tmp_path):
    learn = class_learner(tmp_path)
    with learn.no_logging():
        learn.fit(1, cbs=CSVLogger(append=True))
    before = (tmp_path / "history.csv").read_text()
    learn.metrics = []  # the columns change: no accuracy
    with pytest.raises(ValueError, match=r"history.csv has the columns .*accuracy.*this fit writes"), learn.no_logging():
        learn.fit(1, cbs=CSVLogger(append=True))
    assert (tmp_path / "history.csv").read_text() == before and len(learn.recorder.values) == 0
    with learn.no_logging():
        learn.fit(1, cbs=CSVLogger(append=False))  # a new file is fine
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "epoch,train_loss,valid_loss,time"


def test_the_log_is_never_left_with_a_cut_row(tmp_path, monkeypatch):
    """Each write replaces the whole file at once: a write that fails half way (a full disk) leaves
    the previous complete file; a cut last line left by an older writer is dropped on append."""
    from minilearn.callbacks import logger

    learn = class_learner(tmp_path)
    with learn.no_logging():
        learn.fit(2, cbs=CSVLogger())
    log = tmp_path / "history.csv"
    complete = log.read_text()

    def full_disk(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logger, "atomic_write", full_disk)
    with pytest.raises(OSError), learn.no_logging():
        learn.fit(1, cbs=CSVLogger(append=True))
    assert log.read_text() == complete
    monkeypatch.undo()
    log.write_text(complete + "2,0.5,0.4")  # a row cut mid-field, without its line end
    with learn.no_logging():
        learn.fit(1, cbs=CSVLogger(append=True))
    assert _epochs(log) == ["0", "1", "0"] and log.read_bytes().endswith(b"\r\n")

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

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
    rows = logger.read_log()
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["accuracy"] == pytest.approx(learn.recorder.values[1][2])
    assert isinstance(rows[0]["time"], float)
    with learn.no_logging():
        learn.fit(1, cbs=CSVLogger("logs/history.csv", append=True))
    text = (tmp_path / "logs" / "history.csv").read_text().splitlines()
    assert len(text) == 4 and text[0].startswith("epoch,train_loss,valid_loss,accuracy,time")

"""The metric table: fastai's columns, and no bar redraws where output is a file."""

from __future__ import annotations

import re

import torch
from torch import nn

from minilearn import DataLoaders, Learner, accuracy
from minilearn.callbacks.progress import format_time, format_value, html_table, in_notebook
from synthetic import class_data


def make_learner() -> Learner:
    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
    torch.manual_seed(0)
    return Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy)


def test_table_in_a_log_file_is_one_line_per_epoch_without_bar(capsys):
    learn = make_learner()
    learn.fit(3)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert len(lines) == 4
    for i, line in enumerate(lines[1:]):
        cells = line.split()
        assert cells[0] == str(i)
        assert all(re.fullmatch(r"\d+\.\d{6}", c) for c in cells[1:4])
        assert re.fullmatch(r"\d\d:\d\d", cells[4])
    assert "\r" not in out and "\r" not in err and err == ""  # no bar redraws


def test_table_values_match_recorder(capsys):
    learn = make_learner()
    learn.fit(2)
    lines = capsys.readouterr().out.splitlines()
    for line, row in zip(lines[1:], learn.recorder.values):
        assert [float(c) for c in line.split()[1:4]] == [round(v, 6) for v in row]


def test_forced_bar_goes_to_stderr(capsys):
    learn = make_learner()
    learn.progress.show_bar = True
    learn.fit(1)
    out, err = capsys.readouterr()
    assert "train" in err and "valid" in err
    assert len(out.splitlines()) == 2


def test_no_bar_keeps_table(capsys):
    learn = make_learner()
    learn.progress.show_bar = True
    with learn.no_bar():
        learn.fit(1)
    out, err = capsys.readouterr()
    assert err == "" and len(out.splitlines()) == 2
    assert learn.progress.show_bar is True


def test_no_logging_prints_nothing(capsys):
    learn = make_learner()
    with learn.no_logging():
        learn.fit(1)
    assert capsys.readouterr() == ("", "")
    assert hasattr(learn, "progress")


def test_formats():
    assert format_time(5.7) == "00:05"
    assert format_time(125) == "02:05"
    assert format_time(3725) == "1:02:05"
    assert format_value("accuracy", 0.5) == "0.500000"
    assert format_value("epoch", 3) == "3"
    assert format_value("valid_loss", None) == ""
    html = html_table(["epoch", "accuracy"], [["0", "0.500000"]])
    assert "<th>accuracy</th>" in html and "<td>0.500000</td>" in html


def test_not_in_notebook_here():
    assert in_notebook() is False


def test_in_jupyter_the_table_is_html_and_plots_are_png():
    """Run a real kernel: the table is one HTML display, no bar text floods the cell, plots render."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import torch\nfrom torch import nn\nfrom minilearn import DataLoaders, Learner, accuracy\n"
            "x = torch.randn(400, 5); y = (x[:, 0] > 0).long()\n"
            "dls = DataLoaders.from_tensors(x[:300], y[:300], x[300:], y[300:], bs=32, seed=0)\n"
            "learn = Learner(dls, nn.Linear(5, 2), nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy)\n"
            "learn.fit(2)"),
        nbformat.v4.new_code_cell("learn.recorder.plot_loss()"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    fit_out, plot_out = nb.cells[0].outputs, nb.cells[1].outputs
    html = [o for o in fit_out if "text/html" in o.get("data", {})]
    assert len(html) == 1 and "<th>accuracy</th>" in html[0]["data"]["text/html"]
    assert html[0]["data"]["text/html"].count("<tr>") == 2  # updated in place: both epochs, one display
    assert not [o for o in fit_out if o.output_type == "stream" and "%|" in o.get("text", "")]
    assert any("image/png" in o.get("data", {}) for o in plot_out)

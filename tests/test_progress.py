"""The metric table: fastai's columns, and no bar redraws where output is a file."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from minilearn import Callback, DataLoaders, Learner, Recorder, accuracy
from minilearn.callback import BATCH_EVENTS
from minilearn.callbacks.progress import ShowGraphCallback, format_time, format_value, html_table, in_notebook
from synthetic import class_data, finder_learner


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


# ---------------------------------------------------------------- ShowGraphCallback
def line(cb: ShowGraphCallback, label: str):
    """The graph's line called `label`."""
    found = [ln for ln in cb.graph_ax.lines if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in cb.graph_ax.lines]
    return found[0]


class XLimits(Callback):
    """Records the graph's x-limits after each epoch (runs after ShowGraphCallback)."""

    order = 70

    def __init__(self, graph: ShowGraphCallback):
        self.graph, self.seen = graph, []

    def after_epoch(self):
        self.seen.append(tuple(self.graph.graph_ax.get_xlim()))


def test_show_graph_draws_recorded_losses(capsys):
    learn = make_learner()
    graph = ShowGraphCallback()
    limits = XLimits(graph)
    learn.fit(3, cbs=[graph, limits])
    rec = learn.recorder
    assert list(line(graph, "train").get_ydata()) == rec.losses
    assert list(line(graph, "train").get_xdata()) == list(range(len(rec.losses)))
    valid = line(graph, "valid")
    assert list(valid.get_xdata()) == rec.iters == [6, 12, 18]
    assert list(valid.get_ydata()) == [row[1] for row in rec.values] == rec.column("valid_loss")
    planned = 3 * len(learn.dls.train)
    assert limits.seen == [(0, planned)] * 3  # the whole fit from the first epoch on
    low, high = graph.graph_ax.get_ylim()
    assert low == 0 and max(rec.losses + rec.column("valid_loss")) < high
    assert graph.graph_fig._repr_png_()[:4] == b"\x89PNG"


def test_show_graph_runs_after_the_recorder_and_never_per_batch():
    assert ShowGraphCallback.order > Recorder.order
    assert not [e for e in BATCH_EVENTS if hasattr(ShowGraphCallback, e)]


def test_show_graph_sits_out_lr_find_and_validate(capsys):
    learn = finder_learner()
    graph = ShowGraphCallback()
    learn.add_cb(graph)
    learn.fit(1)
    fig, ys = graph.graph_fig, list(line(graph, "train").get_ydata())
    learn.lr_find(show_plot=False)
    learn.validate()
    assert graph.graph_fig is fig
    assert list(line(graph, "train").get_ydata()) == ys
    assert len(line(graph, "valid").get_ydata()) == 1


def test_show_graph_without_validation_set(capsys):
    x, y, _, _ = class_data()
    dls = DataLoaders.from_tensors(x, y, bs=16, seed=0)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), lr=0.1)
    graph = ShowGraphCallback()
    learn.fit(2, cbs=graph)
    assert [ln.get_label() for ln in graph.graph_ax.lines] == ["train"]
    assert list(line(graph, "train").get_ydata()) == learn.recorder.losses


def test_show_graph_needs_a_recorder_and_a_valid_figsize():
    x, y, vx, vy = class_data()
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16), nn.Linear(4, 3), nn.CrossEntropyLoss(),
                    default_cbs=False)
    with pytest.raises(RuntimeError, match="Recorder"):
        learn.fit(1, cbs=ShowGraphCallback())
    with pytest.raises(ValueError, match="figsize"):
        ShowGraphCallback(figsize=(6,))


class FakeHandle:
    def __init__(self):
        self.updates = []

    def update(self, obj):
        self.updates.append(obj)


def test_show_graph_in_a_notebook_updates_one_display(monkeypatch):
    import IPython.display

    from minilearn.callbacks import progress

    calls, handles = [], []

    def fake_display(*objs, **kwargs):
        calls.append((objs, kwargs))
        if kwargs.get("display_id"):
            handles.append(FakeHandle())
            return handles[-1]

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    learn = make_learner()
    learn.remove_cb(learn.progress)  # the table displays too; count the graph's alone
    graph = ShowGraphCallback()
    learn.fit(3, cbs=graph)
    assert len(handles) == 1 and calls == [((), {"display_id": True})]
    assert handles[0].updates == [graph.graph_fig] * 3


def test_show_graph_shows_nothing_in_a_script(monkeypatch, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(a))
    learn = make_learner()
    graph = ShowGraphCallback()
    learn.fit(1, cbs=graph)
    assert shown == [] and graph.graph_out is None and graph.graph_fig is not None


def test_show_graph_in_jupyter_is_one_png_output():
    """A real kernel: the graph is one output, updated in place, beside the table."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import torch\nfrom torch import nn\nfrom minilearn import DataLoaders, Learner\n"
        "from minilearn.callbacks.progress import ShowGraphCallback\n"
        "x = torch.randn(400, 5); y = (x[:, 0] > 0).long()\n"
        "dls = DataLoaders.from_tensors(x[:300], y[:300], x[300:], y[300:], bs=32, seed=0)\n"
        "learn = Learner(dls, nn.Linear(5, 2), nn.CrossEntropyLoss(), lr=0.1)\n"
        "learn.fit(2, cbs=ShowGraphCallback())")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
    assert sum("text/html" in o.get("data", {}) for o in outputs) == 1


def test_show_graph_saves_the_graph_where_asked(tmp_path, capsys):
    learn = make_learner()
    learn.path = tmp_path
    saved = []

    class Watch(Callback):
        order = 70  # after the graph: its file is there after every epoch

        def after_epoch(self):
            saved.append((tmp_path / "plots" / "loss.png").stat().st_mtime_ns)

    learn.fit(2, cbs=[ShowGraphCallback(path="plots/loss.png"), Watch()])
    png = (tmp_path / "plots" / "loss.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(saved) == 2
    absolute = tmp_path / "abs.png"
    learn.fit(1, cbs=ShowGraphCallback(path=absolute))
    assert absolute.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TypeError, match="path"):
        ShowGraphCallback(path=3)

"""The metric table: fastai's columns, and no bar redraws where output is a file."""

from __future__ import annotations

import re
import sys

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
    html = [o["data"]["text/html"] for o in fit_out if "text/html" in o.get("data", {})]
    tables = [h for h in html if "<table" in h]
    bars = [h for h in html if "<progress" in h]
    assert len(tables) == 1 and "<th>accuracy</th>" in tables[0]
    assert tables[0].count("<tr>") == 2  # updated in place: both epochs, one display
    assert len(bars) == 1 and 'value="1" max="1"' in bars[0] and "2 epochs in" in bars[0]  # its final state
    assert len(html) == 2 and not [o for o in fit_out if o.output_type == "stream"]  # nothing else, no bar text
    assert any("image/png" in o.get("data", {}) for o in plot_out)


def test_in_jupyter_the_bar_is_drawn_while_training_without_ipywidgets():
    """What the kernel sends during the fit: a <progress> element, updated in place as batches run
    (no widget package involved), then its final state; the table updated once per epoch."""
    import nbformat
    from nbclient import NotebookClient

    class Recording(NotebookClient):
        def process_message(self, msg, cell, cell_index):
            if msg["msg_type"] in ("display_data", "update_display_data"):
                sent.append((msg["msg_type"], msg["content"]["data"].get("text/html", "")))
            return super().process_message(msg, cell, cell_index)

    sent: list = []
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import sys, torch\nfrom torch import nn\nfrom minilearn import DataLoaders, Learner\n"
        "x = torch.randn(2000, 5); y = (x[:, 0] > 0).long()\n"
        "dls = DataLoaders.from_tensors(x[:1600], y[:1600], x[1600:], y[1600:], bs=8, seed=0)\n"
        "learn = Learner(dls, nn.Linear(5, 2), nn.CrossEntropyLoss(), lr=0.1)\n"
        "learn.progress.refresh_secs = 0  # redraw at every batch\n"
        "learn.fit(2)\nprint('ipywidgets' in sys.modules)")]
    Recording(nb, timeout=120, kernel_name="python3").execute()
    bar_updates = [h for kind, h in sent if kind == "update_display_data" and "<progress" in h]
    assert len(bar_updates) > 10  # drawn while the batches ran
    assert any("epoch 1/2 train" in h for h in bar_updates) and any("epoch 2/2 valid" in h for h in bar_updates)
    assert "2 epochs in" in bar_updates[-1]
    table_updates = [h for kind, h in sent if kind == "update_display_data" and "<table" in h]
    assert len(table_updates) == 2
    assert nb.cells[0].outputs[-1]["text"].strip() == "False"  # no widget module was loaded


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

    def update(self, obj, **kwargs):
        self.updates.append((obj, kwargs))


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
    updates = handles[0].updates
    assert len(updates) == 3 and all(kw == {"raw": True} and obj["image/png"][:4] == b"\x89PNG" for obj, kw in updates)
    assert updates[-1][0]["image/png"] == graph.graph_fig._repr_png_()  # the final graph


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
    assert sum("<table" in o.get("data", {}).get("text/html", "") for o in outputs) == 1


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


# ---------------------------------------------------------------- where the bar goes; stopped fits
def test_the_bar_is_decided_from_stderr_alone_and_never_in_ci(monkeypatch):
    from minilearn.callbacks import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # python train.py > log
    for var in ("CI", "TERM"):
        monkeypatch.delenv(var, raising=False)
    assert progress.terminal_bar()
    for ci in ("true", "1", "yes"):
        monkeypatch.setenv("CI", ci)
        assert not progress.terminal_bar()
    monkeypatch.setenv("CI", "false")
    assert progress.terminal_bar()
    monkeypatch.setenv("TERM", "dumb")
    assert not progress.terminal_bar()
    monkeypatch.delenv("TERM")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not progress.terminal_bar()


def _fit_under_a_pty(tmp_path, env_extra):
    """Run a small fit with stdout to a file and stderr to a pseudo-terminal; (terminal text, file text)."""
    import os
    import pty
    import subprocess

    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nfrom torch import nn\nfrom minilearn import DataLoaders, Learner\n"
        "x = torch.randn(4000, 5); y = (x[:, 0] > 0).long()\n"
        "dls = DataLoaders.from_tensors(x[:3600], y[:3600], x[3600:], y[3600:], bs=4, seed=0)\n"
        "learn = Learner(dls, nn.Linear(5, 2), nn.CrossEntropyLoss(), lr=0.1)\n"
        "learn.progress.refresh_secs = 0\nlearn.fit(2)\n")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TERM")}
    env.update(env_extra)
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=120)
    os.close(master)
    return b"".join(chunks).decode(errors="replace"), (tmp_path / "log").read_text()


def test_with_stdout_redirected_the_bar_stays_on_the_terminal(tmp_path):
    terminal, log = _fit_under_a_pty(tmp_path, {"TERM": "xterm"})
    assert "\r" in terminal and "train" in terminal  # tqdm's frames, on the terminal
    assert len(log.splitlines()) == 3 and "\r" not in log  # the file: the table's header and two rows


def test_under_ci_a_terminal_gets_no_bar(tmp_path):
    terminal, log = _fit_under_a_pty(tmp_path, {"CI": "true", "TERM": "xterm"})
    assert "\r" not in terminal and "it/s" not in terminal
    assert len(log.splitlines()) == 3


class StopAt(Callback):
    def __init__(self, epoch, batch, error):
        self.at, self.error = (epoch, batch), error

    def before_batch(self):
        if self.training and (self.epoch, self.iter) == self.at:
            raise self.error


def test_an_interrupted_fit_says_where_it_stopped_and_the_learner_goes_on(capsys):
    learn = make_learner()
    with pytest.raises(KeyboardInterrupt):
        learn.fit(3, cbs=StopAt(1, 2, KeyboardInterrupt()))
    out = capsys.readouterr().out
    assert "interrupted at epoch 2/3, train batch 3 of 6; the learner is usable" in out
    assert len(out.splitlines()) == 3  # the header, epoch 0's row, the message
    learn.fit(1)
    assert len(learn.recorder.values) == 1


def test_a_fit_that_ends_before_its_first_epoch_says_so(capsys):
    from minilearn import CancelFitException

    learn = make_learner()
    learn.fit(2, cbs=StopAt(0, 2, CancelFitException()))
    assert "the fit ended before its first epoch did (cancelled)" in capsys.readouterr().out
    with pytest.raises(ValueError):
        learn.fit(2, cbs=StopAt(0, 1, ValueError("bad batch")))
    assert "the fit failed at epoch 1/2, train batch 2 of 6, before its first epoch ended (ValueError)" in \
        capsys.readouterr().out

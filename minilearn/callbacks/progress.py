"""ProgressCallback: fastai's metric table, and a progress bar only where it can redraw.

- In a terminal (stderr is one): a tqdm bar over the batches on stderr, the table as text lines
  on stdout, so `python train.py > log` keeps the bar on screen and the log clean.
- In a log file or CI (stderr is not a terminal, `CI` is set, or `TERM=dumb`): one text line per
  epoch, no bar at all.
- In Jupyter: the table as HTML, updated in place each epoch, and above it one bar per fit drawn
  as HTML (a `<progress>` element updated through a display handle, at most every
  `refresh_secs`), which needs no widget package and leaves its final state, not a dead widget,
  in the saved notebook.
- A fit interrupted (Ctrl-C) or failed says where it stopped and that the learner is usable;
  one that ends before its first epoch says so instead of leaving a header alone.

ShowGraphCallback adds fastai's live loss graph: redrawn after each epoch, shown in place in a
notebook, kept as a Figure (and not shown) in a script.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import sys
import time
from pathlib import Path

from minilearn.callback import Callback


def in_notebook() -> bool:
    """True inside a Jupyter kernel. IPython is never imported here just to find out."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def format_time(seconds: float) -> str:
    """Seconds as `mm:ss`, or `h:mm:ss` past an hour (fastai's format)."""
    t = int(seconds)
    h, m, s = t // 3600, (t // 60) % 60, t % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_value(name: str, value) -> str:
    """One cell of the table: epoch as an int, time as mm:ss, floats to 6 places, blanks for None."""
    if value is None:
        return ""
    if name == "time":
        return format_time(value)
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def text_row(cells: list[str], widths: list[int]) -> str:
    """Cells left-aligned in columns two spaces apart."""
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()


def html_table(names: list[str], rows: list[list[str]]) -> str:
    """The table as HTML, in the style of fastai's notebook output."""
    head = "".join(f"<th>{n}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<table border="1" class="dataframe"><thead><tr style="text-align: left;">{head}'
            f"</tr></thead><tbody>{body}</tbody></table>")


def bar_html(done: int, total: int, text: str) -> str:
    """A progress bar as HTML: a `<progress>` element and a line of text beside it."""
    return (f'<div><progress value="{done}" max="{max(total, 1)}" style="width:300px;height:1em;'
            f'vertical-align:middle"></progress>&nbsp;<span>{html.escape(text)}</span></div>')


def terminal_bar() -> bool:
    """Whether a redrawn bar makes sense: stderr is a terminal, not CI, not a dumb terminal."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return sys.stderr.isatty() and not ci and os.environ.get("TERM") != "dumb"


class ProgressCallback(Callback):
    """Shows the metric table after each epoch and, where it can redraw, a bar over the batches.

    `show_bar`: None decides from where output goes (a terminal or a notebook: yes; a file or
    CI: no). `refresh_secs`: how often the bar (and its smoothed loss, a host sync) is redrawn.
    """

    order = 60
    sits_out = ("lr_find", "validate")

    def __init__(self, show_bar: bool | None = None, refresh_secs: float = 0.5):
        self.show_bar = show_bar
        self.refresh_secs = refresh_secs
        self.pbar = None
        self.bar_display = None
        self.notebook, self.bar = False, False  # decided at each fit
        self.phase, self.done, self.total = "", 0, 0  # the pass in progress (a batch run by hand counts too)
        self.rows: list[list[str]] = []
        self.fitting = False  # between before_fit and the fit's end (an event run by hand is not a fit)

    def _bar_wanted(self) -> bool:
        if self.show_bar is not None:
            return self.show_bar
        return self.notebook or terminal_bar()

    def before_fit(self) -> None:
        self._close_bar()  # one left open by an exception in an earlier fit
        self.notebook = in_notebook()
        self.bar = self._bar_wanted()
        self.names = self.learn.recorder.metric_names
        self.rows = []
        self.fitting = True
        self.widths = [max(len(n), 8) for n in self.names]
        self.fit_start = time.perf_counter()
        self.phase, self.done, self.total = "", 0, 0
        if self.notebook:
            from IPython.display import HTML, display

            self.bar_display = display(HTML(bar_html(0, 1, "starting")), display_id=True) if self.bar else None
            self.display = display(HTML(html_table(self.names, [])), display_id=True)
        else:
            self.bar_display = None
            print(text_row(self.names, self.widths), flush=True)

    # -- the bar
    def _open_bar(self, desc: str) -> None:
        self._close_bar()
        self.phase, self.done, self.total = desc, 0, len(self.learn.dl)
        self.phase_start = self.last_refresh = time.perf_counter()
        if not self.bar:
            return
        if self.notebook:
            self._draw_html()
            return
        from tqdm import tqdm

        self.pbar = tqdm(total=self.total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)

    def _draw_html(self, loss: str = "") -> None:
        elapsed = time.perf_counter() - self.phase_start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        text = f"{self.phase} {self.done}/{self.total} [{format_time(elapsed)}<{format_time(eta)}]{loss}"
        from IPython.display import HTML

        self.bar_display.update(HTML(bar_html(self.done, self.total, text)))

    def _close_bar(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None

    def before_train(self) -> None:
        self._open_bar(f"epoch {self.learn.epoch + 1}/{self.learn.n_epoch} train")

    def before_validate(self) -> None:
        self._open_bar(f"epoch {self.learn.epoch + 1}/{self.learn.n_epoch} valid")

    def after_batch(self) -> None:
        self.done += 1
        if not self.bar:
            return
        now = time.perf_counter()
        if now - self.last_refresh < self.refresh_secs:
            if self.pbar is not None:
                self.pbar.update(1)
            return
        self.last_refresh = now
        # Showing the loss costs a host sync: only when the bar is drawn, at most every refresh_secs.
        loss = f" loss {float(self.learn.smooth_loss):.4f}" if self.learn.training and self.learn.smooth_loss is not None else ""
        if self.pbar is not None:
            self.pbar.set_postfix_str(loss.strip(), refresh=False)
            self.pbar.update(1)
        elif self.bar_display is not None:
            self._draw_html(loss)

    def after_train(self) -> None:
        self._close_bar()

    def after_validate(self) -> None:
        self._close_bar()

    # -- the table
    def before_epoch(self) -> None:
        self._show(self._unshown(self.learn.recorder.history))

    def after_epoch(self) -> None:
        history = self.learn.recorder.history
        log = self.learn.recorder.log
        self._show(self._unshown(history[:-1]) + [[format_value(n, log.get(n)) for n in self.names]])

    def _unshown(self, history: list[dict]) -> list[list[str]]:
        """Rows of epochs the Recorder holds that the table has not shown: those a resumed run had
        done before it stopped (BackupCallback puts back the Recorder's history)."""
        return [[format_value(n, h.get(n)) for n in self.names] for h in history[len(self.rows):]]

    def _show(self, new: list[list[str]]) -> None:
        if not new:
            return
        self.rows += new
        if self.notebook:
            from IPython.display import HTML

            self.display.update(HTML(html_table(self.names, self.rows)))
        else:
            for row in new:
                print(text_row(row, self.widths), flush=True)

    def after_fit(self) -> None:
        self._close_bar()
        if not self.fitting:
            return
        self.fitting = False
        epochs = len(self.rows)
        if not epochs:
            self._say("the fit ended before its first epoch did (cancelled), so the table has no row")
        elif self.bar_display is not None:
            from IPython.display import HTML

            took = format_time(time.perf_counter() - self.fit_start)
            self.bar_display.update(HTML(bar_html(1, 1, f"{epochs} epoch{'s' * (epochs != 1)} in {took}")))

    def cleanup_fit(self) -> None:
        self._close_bar()  # also when the fit raised
        error = sys.exc_info()[1]  # the exception on its way out of the fit, if any
        if error is None or not self.fitting:
            return
        self.fitting = False
        phase = self.phase.split()[-1] if self.phase else ""
        learn = self.learn  # the batch in hand (a later callback may have failed after the bar counted it)
        where = (f"epoch {learn.epoch + 1}/{learn.n_epoch}, {phase} batch {learn.iter + 1} of {learn.n_iter}"
                 if phase else "the start of the fit")
        if isinstance(error, KeyboardInterrupt):
            self._say(f"interrupted at {where}; the learner is usable: its weights are those of the last step taken")
        elif not self.rows:
            self._say(f"the fit failed at {where}, before its first epoch ended ({type(error).__name__})")
        else:
            self._say(f"the fit failed at {where} ({type(error).__name__})")

    def _say(self, message: str) -> None:
        """A line under the table (in the notebook, in place of the bar)."""
        if self.bar_display is not None:
            from IPython.display import HTML

            self.bar_display.update(HTML(f"<div>{html.escape(message)}</div>"))
        elif self.notebook:
            from IPython.display import HTML, display

            display(HTML(f"<div>{html.escape(message)}</div>"))
        else:
            print(message, flush=True)


class ShowGraphCallback(Callback):
    """After each epoch, draws the training loss per batch and the validation loss per epoch.

    The curves are the Recorder's: `recorder.losses` (smoothed, at batch 0, 1, ...) and each
    epoch's `valid_loss` at the batch count where that epoch ended (`recorder.iters`), so it runs
    after the Recorder (`order` 65, as fastai's). The x-axis spans the whole planned fit from the
    start (the batches run so far plus the epochs still to come at the last epoch's length); the
    y-axis spans the data, from 0 (or the lowest loss, if negative) to a little above the highest.
    Without a validation loader only the training curve is drawn.

    The graph is `graph_fig` (a Figure, a new one each fit, kept after it). In a notebook it is one
    output, made at `before_fit` and updated in place each epoch; in a script nothing is shown,
    and with `path` the graph is saved there (atomically, after every epoch, so a crash leaves
    the last complete one; a relative path is under `learn.path`).
    Unlike fastai's it needs no progress bar to draw in. It sits out `lr_find` and `validate`, and
    it does nothing per batch: all the work (one copy of the losses, one redraw) is at `after_epoch`.
    """

    order = 65
    sits_out = ("lr_find", "validate")

    def __init__(self, figsize: tuple[float, float] = (6, 4), path=None):
        if not (isinstance(figsize, (tuple, list)) and len(figsize) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in figsize)):
            raise ValueError(f"figsize: expected (width, height) in inches, two positive numbers, got {figsize!r}")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a file name for the graph (e.g. 'loss.png'), got {type(path).__name__}")
        self.figsize = tuple(figsize)
        self.path = path  # where the graph is saved after each epoch (relative: under learn.path)
        self.graph_fig = self.graph_ax = None
        self.graph_out = None  # the notebook's display handle, or None in a script

    def before_fit(self) -> None:
        if getattr(self.learn, "recorder", None) is None:
            raise RuntimeError("ShowGraphCallback: the learner has no Recorder (learn.recorder) to draw "
                               "the losses from; add Recorder() to its callbacks")
        from minilearn.plotting import new_figure

        self.graph_fig, self.graph_ax = new_figure(figsize=self.figsize)
        self.train_line, = self.graph_ax.plot([], [], label="train")
        self.valid_line = None  # made at the first epoch with a validation loss
        self.graph_ax.set_xlabel("iteration")
        self.graph_ax.set_ylabel("loss")
        try:
            planned = (self.learn.n_epoch - self.learn.start_epoch) * len(self.learn.dls.train)
        except TypeError:  # a train loader without a length: the first epoch will tell
            planned = 0
        if planned > 0:
            self.graph_ax.set_xlim(0, planned)
        self.graph_out = None
        if in_notebook():
            from IPython.display import display

            # an empty output now, filled by the first epoch's graph and updated in place after it
            self.graph_out = display(display_id=True)

    def after_epoch(self) -> None:
        rec, ax = self.learn.recorder, self.graph_ax
        losses = rec.losses  # already on the host: the Recorder flushed them at its after_epoch
        self.train_line.set_data(list(range(len(losses))), losses)
        valid = [(i, row["valid_loss"]) for i, row in zip(rec.iters, rec.history)
                 if row.get("valid_loss") is not None]
        if valid and self.valid_line is None:
            # markers, so that one epoch's single point is visible
            self.valid_line, = ax.plot([], [], marker="o", label="valid")
        if self.valid_line is not None:
            self.valid_line.set_data([i for i, _ in valid], [v for _, v in valid])
        ax.legend(loc="upper right")
        ax.set_xlim(0, max(self._planned_iters(rec.iters), 1))
        ys = [y for y in losses + [v for _, v in valid] if math.isfinite(y)]
        if ys:
            low, high = min(0.0, min(ys)), max(ys)
            margin = 0.05 * (high - low) if high > low else 1.0
            ax.set_ylim(low, high + margin)
        if self.graph_out is not None:
            self.graph_out.update({"image/png": self.graph_fig._repr_png_(), "text/plain": "<loss graph>"}, raw=True)
        if self.path is not None:
            from minilearn.plotting import save_figure

            path = Path(self.path)
            save_figure(self.graph_fig, path if path.is_absolute() else self.learn.path / path)

    def _planned_iters(self, iters: list[int]) -> int:
        """The batches of the whole fit: those run so far, plus the epochs to come at the last one's length."""
        done = iters[-1] if iters else 0
        last = iters[-1] - iters[-2] if len(iters) > 1 else done
        return done + (self.learn.n_epoch - self.learn.epoch - 1) * last


@contextlib.contextmanager
def no_bar(learn):
    """`Learner.no_bar`: inside the block the table is shown but no progress bar is drawn."""
    progress = getattr(learn, "progress", None)
    old = progress.show_bar if progress is not None else None
    if progress is not None:
        progress.show_bar = False
    try:
        yield learn
    finally:
        if progress is not None:
            progress.show_bar = old

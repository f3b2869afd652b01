"""Figures for plots. Imported only when a plot is drawn, so `import minilearn` stays fast."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from minilearn.checkpoint import atomic_write


class PlotFigure(Figure):
    """A matplotlib Figure that shows itself in Jupyter as a PNG when it is a cell's value.

    Plain Figures render only after `%matplotlib inline`; this one needs no backend at all.
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4)):
    """A new Figure and its axes, not registered with pyplot (so it is shown once, as a value)."""
    fig = PlotFigure(figsize=figsize)
    axes = fig.subplots(nrows, ncols)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, **kwargs) -> Path:
    """Save `fig` to `path` atomically: a crash never leaves a half-written image behind."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs))

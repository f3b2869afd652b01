"""Figures for plots: matplotlib is imported only when a plot is drawn (import time matters)."""

from __future__ import annotations


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4)):
    """A new matplotlib Figure and its axes, not registered with pyplot.

    Returning the Figure (rather than drawing into pyplot's current one) lets scripts save it
    and notebooks show it once, as the value of the cell.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols)
    return fig, axes

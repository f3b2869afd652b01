"""Figures for plots: a PlotFigure renders itself as a PNG without a matplotlib backend."""

from __future__ import annotations


def test_plot_figure_renders_png_without_a_backend():
    from minilearn.plotting import new_figure

    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"

"""Figures for plots, and show_image / show_images as fastai users call them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from PIL import Image

import minilearn.callbacks.progress as progress
from minilearn.plotting import image_array, new_figure, show_image, show_images


def test_plot_figure_renders_png_without_a_backend():
    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def drawn(ax: Axes) -> np.ndarray:
    """The array of the one image drawn on `ax`."""
    assert len(ax.images) == 1
    return np.asarray(ax.images[0].get_array())


@pytest.mark.parametrize("im, shape", [
    (torch.rand(28, 28), (28, 28)),                                  # fastbook: show_image(three_tensors[1])
    ((torch.rand(28, 28) * 255).to(torch.uint8), (28, 28)),          # ... and the uint8 tensors
    (torch.rand(1, 28, 28), (28, 28)),                               # one channel, channels-first
    (torch.rand(20, 30, 1), (20, 30)),                               # one channel, channels-last
    (torch.rand(3, 20, 30), (20, 30, 3)),                            # RGB channels-first
    (torch.rand(20, 30, 3), (20, 30, 3)),                            # RGB channels-last
    (torch.rand(4, 20, 30), (20, 30, 4)),                            # RGBA
    (torch.rand(28, 28, requires_grad=True), (28, 28)),              # a tensor needing grad
    (torch.rand(3, 8, 8, dtype=torch.bfloat16), (8, 8, 3)),          # no numpy bfloat16
    (np.random.rand(20, 30), (20, 30)),
    (np.random.rand(20, 30, 3), (20, 30, 3)),
    (np.random.rand(3, 20, 30), (20, 30, 3)),                        # unambiguous channels-first array
    (Image.new("L", (30, 20)), (20, 30)),                            # PIL sizes are (width, height)
    (Image.new("RGB", (30, 20)), (20, 30, 3)),
    (Image.new("P", (30, 20)), (20, 30, 3)),                         # a palette is drawn as its colours
    ([[0, 1], [1, 0]], (2, 2)),
])
def test_show_image_accepts_each_kind(im, shape):
    ax = show_image(im)
    assert isinstance(ax, Axes)
    assert drawn(ax).shape == shape
    assert not ax.axison  # no ticks, no frame


def test_show_image_permutes_channels_first_to_last():
    t = torch.rand(3, 5, 7)
    assert np.allclose(drawn(show_image(t)), t.permute(1, 2, 0).numpy())
    assert np.allclose(image_array(t.permute(1, 2, 0)), t.permute(1, 2, 0).numpy())


def test_show_image_grey_uses_greys_colour_images_ignore_it():
    ax = show_image(torch.rand(28, 28))
    assert ax.images[0].get_cmap().name == "Greys"
    assert show_image(torch.rand(28, 28), cmap="viridis").images[0].get_cmap().name == "viridis"
    assert drawn(show_image(torch.rand(3, 4, 4), cmap="Greys")).shape == (4, 4, 3)


def test_show_image_title_figsize_and_kwargs():
    ax = show_image(torch.rand(28, 28), title="a three", vmin=0, vmax=2)
    assert ax.get_title() == "a three"
    assert ax.images[0].get_clim() == (0, 2)
    assert tuple(ax.figure.get_size_inches()) == (1, 1)  # fastai's default: an inch per 32 pixels, at least 1
    assert tuple(show_image(torch.rand(64, 320)).figure.get_size_inches()) == (5, 2)  # (width, height)
    assert tuple(show_image(torch.rand(8, 8), figsize=(3, 2)).figure.get_size_inches()) == (3, 2)


def test_show_image_reuses_the_given_ax_or_ctx():
    fig, (a, b) = new_figure(1, 2)
    assert show_image(torch.rand(4, 4), ax=a) is a
    assert show_image(torch.rand(4, 4), ctx=b, title="b") is b
    assert len(a.images) == 1 and len(b.images) == 1 and b.get_title() == "b"
    assert len(fig.axes) == 2  # nothing new made


@pytest.mark.parametrize("bad, error, words", [
    (torch.rand(2, 1, 28, 28), ValueError, "im: expected an image of shape"),
    (torch.rand(5, 6, 7), ValueError, "(5, 6, 7)"),
    (np.random.rand(5, 6, 7), ValueError, "(5, 6, 7)"),
    (torch.rand(7), ValueError, "(7,)"),
    (torch.rand(0, 3), ValueError, "non-empty"),
    ("three.png", TypeError, "im: expected a torch tensor, numpy array, PIL image"),
    (3, TypeError, "got int"),
    (np.array([["a", "b"], ["c", "d"]]), TypeError, "im: expected an image of numbers"),
    ([[1, 2], [3]], ValueError, "im: expected a rectangular"),
])
def test_show_image_bad_input_names_im(bad, error, words):
    with pytest.raises(error) as e:
        show_image(bad)
    assert words in str(e.value)


def test_show_image_bad_ax_and_figsize():
    fig, (a, b) = new_figure(1, 2)
    with pytest.raises(TypeError, match="ax: expected a matplotlib Axes"):
        show_image(torch.rand(4, 4), ax=fig)
    with pytest.raises(ValueError, match="ax, ctx"):
        show_image(torch.rand(4, 4), ax=a, ctx=b)
    with pytest.raises(ValueError, match="figsize"):
        show_image(torch.rand(4, 4), figsize=(3, -1))


def test_show_images_grid():
    grid = show_images(torch.rand(5, 28, 28), nrows=2, titles=list("abcde"))
    assert grid.shape == (2, 3)
    fig = grid.flat[0].figure
    assert len(fig.axes) == 6
    assert [len(ax.images) for ax in grid.flat] == [1, 1, 1, 1, 1, 0]
    assert [ax.get_title() for ax in grid.flat[:5]] == list("abcde")
    assert tuple(fig.get_size_inches()) == (9, 6)  # 3 inches per image, as fastai's subplots
    one = show_images([torch.rand(3, 8, 8), np.random.rand(8, 8)], cmap="viridis")
    assert one.shape == (1, 2) and drawn(one[0, 1]).shape == (8, 8)
    assert one[0, 1].images[0].get_cmap().name == "viridis"


def test_show_images_bad_input():
    with pytest.raises(ValueError, match="nrows, ncols"):
        show_images([torch.rand(4, 4)] * 5, nrows=2, ncols=2)
    with pytest.raises(ValueError, match="titles: expected 2 titles"):
        show_images([torch.rand(4, 4)] * 2, titles=["a"])
    with pytest.raises(ValueError, match="ims: expected at least one"):
        show_images([])
    with pytest.raises(TypeError, match="ims: expected a sequence"):
        show_images("abc")
    with pytest.raises(ValueError, match=r"ims\[1\]"):  # every image checked before drawing
        show_images([torch.rand(4, 4), torch.rand(5, 6, 7)])
    with pytest.raises(ValueError, match="nrows"):
        show_images([torch.rand(4, 4)], nrows=0)


class FakeDisplay:
    """Stands in for IPython.display.display: records what was displayed."""

    def __init__(self):
        self.shown = []

    def __call__(self, *objs, **kwargs):
        self.shown.append((objs, kwargs))


def test_figures_are_shown_once_in_a_notebook_and_never_in_a_script(monkeypatch):
    import IPython.display

    fake = FakeDisplay()
    monkeypatch.setattr(IPython.display, "display", fake)
    show_image(torch.rand(4, 4))
    show_images([torch.rand(4, 4)] * 2)
    assert fake.shown == []  # a script: nothing on screen

    monkeypatch.setattr(progress, "in_notebook", lambda: True)

    def png_of(fig):
        return ({"image/png": fig._repr_png_(), "text/plain": f"<Figure of {len(fig.axes)} Axes>"},), {"raw": True}

    ax = show_image(torch.rand(4, 4))
    assert fake.shown == [png_of(ax.figure)]
    show_image(torch.rand(4, 4), ax=ax)  # drawing on the user's own axes: theirs to show
    assert len(fake.shown) == 1
    grid = show_images([torch.rand(4, 4)] * 3)
    assert len(fake.shown) == 2 and fake.shown[1] == png_of(grid.flat[0].figure)
    grid.flat[0].figure._ipython_display_()  # the figure as the cell's value afterwards: not shown again
    assert len(fake.shown) == 2


def test_import_minilearn_loads_no_matplotlib_until_show_image_is_asked_for():
    import subprocess
    import sys

    code = ("import sys, minilearn; a = 'matplotlib' in sys.modules; from minilearn import show_image, show_images; "
            "import minilearn.plotting as p; print(a, 'matplotlib' in sys.modules, show_image is p.show_image)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_in_jupyter_every_plot_call_is_shown_once_whatever_follows_it():
    """A real kernel: `plot_loss();`, two plots in one cell, plots in a loop, a plot followed by
    plt.show(), and a plot as the cell's value: one picture per call, never two."""
    import nbformat
    from nbclient import NotebookClient

    setup = ("import torch\nfrom torch import nn\nimport matplotlib.pyplot as plt\n"
             "from minilearn import DataLoaders, Learner\n"
             "x = torch.randn(400, 5); y = (x[:, 0] > 0).long()\n"
             "dls = DataLoaders.from_tensors(x[:300], y[:300], x[300:], y[300:], bs=32, seed=0)\n"
             "learn = Learner(dls, nn.Linear(5, 2), nn.CrossEntropyLoss(), lr=0.1)\n"
             "learn.fit_one_cycle(2)")
    cells = {
        "semicolon": "learn.recorder.plot_loss();",
        "two": "learn.recorder.plot_loss()\nlearn.recorder.plot_sched()",
        "loop": "for skip in (0, 1, 2):\n    learn.recorder.plot_loss(skip_start=skip)",
        "plt_show": "learn.recorder.plot_loss(); plt.show()",
        "value": "learn.recorder.plot_loss()",
        "assigned": "fig = learn.recorder.plot_loss()",
        "shown_again": "fig",  # a later cell: shown again
    }
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(setup)] + [nbformat.v4.new_code_cell(c) for c in cells.values()]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    pngs = {name: sum("image/png" in o.get("data", {}) for o in cell.outputs)
            for name, cell in zip(cells, nb.cells[1:])}
    assert pngs == {"semicolon": 1, "two": 2, "loop": 3, "plt_show": 1, "value": 1, "assigned": 1, "shown_again": 1}

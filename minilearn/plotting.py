"""Figures for plots, and fastai's `show_image` / `show_images`. Imported only when a plot is drawn,
so `import minilearn` stays fast."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from minilearn.checkpoint import atomic_write
from minilearn.checks import check_int, check_number


class PlotFigure(Figure):
    """A matplotlib Figure that shows itself in Jupyter as a PNG, once per cell.

    Plain Figures render only after `%matplotlib inline`; this one needs no backend at all. The
    plot functions show their figure as soon as it is drawn (`show_once`), so every plot call
    appears, whatever follows it in the cell (`plot_loss();`, two plots in a cell, a plot in a
    loop); when the returned figure is then also the cell's value, it is not shown a second
    time. Evaluated again in a later cell, it is shown again.
    """

    shown_in = ()  # the notebook cell (its execution count) it was last shown in; () for never

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

    def _ipython_display_(self) -> None:
        """IPython's hook for a cell's value: the picture, unless this cell already showed it."""
        if self.shown_in != _cell():
            _send(self)


def _cell():
    """The running notebook cell's execution count."""
    from IPython import get_ipython

    shell = get_ipython()
    return getattr(shell, "execution_count", None)


def _send(fig: "PlotFigure") -> None:
    from IPython.display import display

    display({"image/png": fig._repr_png_(), "text/plain": f"<Figure of {len(fig.axes)} Axes>"}, raw=True)
    fig.shown_in = _cell()


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4)):
    """A new Figure and its axes, not registered with pyplot (so it is shown once, as a value)."""
    fig = PlotFigure(figsize=figsize)
    axes = fig.subplots(nrows, ncols)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, **kwargs) -> Path:
    """Save `fig` to `path` atomically: a crash never leaves a half-written image behind. The image
    is cropped to what is drawn (`bbox_inches="tight"`, as the notebook shows it), so axis labels
    are never cut off; `kwargs` go to `savefig`."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    kwargs.setdefault("bbox_inches", "tight")
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs))


def show_once(fig: Figure) -> Figure:
    """Show `fig` as output of the running Jupyter cell, once (see `PlotFigure`); in a script,
    show nothing. Returns `fig`, so a plot function ends with `return show_once(fig)`."""
    # Imported here: the notebook check lives with the progress display, and it never imports
    # IPython just to find out (so a script pays nothing).
    from minilearn.callbacks.progress import in_notebook

    if in_notebook():
        if isinstance(fig, PlotFigure):
            if fig.shown_in != _cell():
                _send(fig)
        else:
            from IPython.display import display

            display(fig)
    return fig


# ---------------------------------------------------------------- images
_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
_PIL_MODES = ("1", "L", "I", "I;16", "F", "RGB", "RGBA")  # the modes numpy reads as imshow takes them
_IMAGE_KINDS = "a torch tensor, numpy array, PIL image or nested list of numbers"
_SHAPES = "(H, W), (1|3|4, H, W) or (H, W, 1|3|4)"


def _is_pil_image(im: Any) -> bool:
    pil = sys.modules.get("PIL.Image")  # a PIL image means PIL is already imported
    return pil is not None and isinstance(im, pil.Image)


def image_array(im: Any, name: str = "im") -> np.ndarray:
    """`im` as an array `imshow` draws: (H, W) for one channel, else (H, W, 3|4) channels-last.

    A torch tensor is read channels-first when its first dimension is 1, 3 or 4 (torch's layout,
    as fastai reads it), else channels-last; a numpy array the other way round (PIL's and
    matplotlib's layout first). A single channel is squeezed to (H, W); bool and half floats are
    widened to float32. Errors name `name` and say what was expected.
    """
    if isinstance(im, torch.Tensor):
        t = im.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16, torch.bool):
            t = t.float()  # numpy has no bfloat16, and imshow wants numbers
        if t.ndim == 3 and t.shape[0] in _CHANNELS:
            t = t.permute(1, 2, 0)
        elif t.ndim == 3 and t.shape[-1] not in _CHANNELS:
            raise ValueError(f"{name}: expected an image tensor of shape {_SHAPES}, got {tuple(im.shape)}")
        if t.is_complex():
            raise TypeError(f"{name}: expected a real-valued image, got a tensor of dtype {im.dtype}")
        arr = t.numpy()
    elif _is_pil_image(im):
        arr = np.asarray(im if im.mode in _PIL_MODES else im.convert("RGBA" if "A" in im.getbands() else "RGB"))
    elif isinstance(im, (np.ndarray, list, tuple)):
        try:
            arr = np.asarray(im)
        except ValueError as e:  # a ragged nested list
            raise ValueError(f"{name}: expected a rectangular image array, got a {type(im).__name__} "
                             f"numpy cannot read as one ({e})") from None
        if arr.ndim == 3 and arr.shape[-1] not in _CHANNELS:
            if arr.shape[0] not in _CHANNELS:
                raise ValueError(f"{name}: expected an image array of shape {_SHAPES}, got {arr.shape}")
            arr = arr.transpose(1, 2, 0)
    else:
        raise TypeError(f"{name}: expected {_IMAGE_KINDS}, got {type(im).__name__}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected an image of numbers, got an array of dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected an image of shape {_SHAPES}, got {arr.shape} "
                         f"(for a batch of images, use show_images)")
    if 0 in arr.shape:
        raise ValueError(f"{name}: expected a non-empty image, got shape {arr.shape}")
    if arr.dtype.kind == "b" or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _inches(pixels: int) -> int:
    """fastai's default image size: an inch per 32 pixels, from 1 to 5 inches."""
    return min(5, max(1, pixels // 32))


def _check_figsize(figsize) -> tuple[float, float] | None:
    if figsize is None:
        return None
    try:
        w, h = figsize
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (w, h))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"figsize: expected (width, height) in inches, two positive numbers, got {figsize!r}")
    return float(w), float(h)


def show_image(im: Any, ax: Axes | None = None, figsize: tuple[float, float] | None = None, title: str | None = None,
               ctx: Axes | None = None, cmap: str | None = None, **kwargs) -> Axes:
    """Draw an image on `ax` (fastai's alias: `ctx`), without ticks, titled `title`; returns the Axes.

    `im`: a torch tensor (H,W), (1|3|4,H,W) channels-first or (H,W,1|3|4), a numpy array, or a PIL
    image (see `image_array`). One channel is drawn with `cmap` 'Greys' unless told (dark ink on
    white, as fastbook shows MNIST digits; fastai's black-and-white image types use it too).
    `kwargs` go to `Axes.imshow` (vmin, vmax, interpolation, alpha, ...).

    Without `ax`, a new Figure of `figsize` (default: an inch per 32 pixels, 1 to 5 inches a side,
    as fastai) holds it, reached as `ax.figure`; in a notebook that figure is shown once as cell
    output, and in a script nothing appears on screen (save `ax.figure` to keep it).
    """
    if ax is not None and ctx is not None and ax is not ctx:
        raise ValueError("ax, ctx: ctx is fastai's other name for ax; give one of them")
    ax = ax if ax is not None else ctx
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax: expected a matplotlib Axes, got {type(ax).__name__}")
    figsize = _check_figsize(figsize)
    arr = image_array(im, "im")
    new = ax is None
    if new:
        figsize = figsize or (_inches(arr.shape[1]), _inches(arr.shape[0]))
        fig, ax = new_figure(figsize=figsize)
    if arr.ndim == 2:
        kwargs["cmap"] = "Greys" if cmap is None else cmap
    elif cmap is not None:
        kwargs["cmap"] = cmap  # imshow ignores it for colour images, as matplotlib does
    ax.imshow(arr, **kwargs)
    if title is not None:
        ax.set_title(title)
    ax.axis("off")
    if new:
        show_once(fig)
    return ax


def show_images(ims, nrows: int = 1, ncols: int | None = None, titles=None, figsize: tuple[float, float] | None = None,
                imsize: float = 3, suptitle: str | None = None, **kwargs) -> np.ndarray:
    """Draw the images `ims` in a grid of `nrows` x `ncols` on one new Figure; returns its Axes.

    `ims`: a sequence of images as `show_image` takes them (a list, or a batch tensor (N, ...)).
    `ncols` defaults to as many as `nrows` rows need; `titles` gives one title per image. The
    Figure is `figsize`, default `imsize` inches per image (fastai's `subplots`), with `suptitle`
    above; grid cells beyond the images are left blank. Other `kwargs` go to `show_image` for
    every image (cmap, vmin, ...), where fastai sends them to `plt.subplots`. Shown once in a
    notebook, as `show_image`; the returned array of Axes has shape (nrows, ncols), and
    `axes.flat[0].figure` is the Figure.

    Unlike fastai, a grid too small for the images, or titles that do not match them one to one,
    is an error rather than images silently left out.
    """
    if isinstance(ims, (str, bytes)) or _is_pil_image(ims):
        raise TypeError(f"ims: expected a sequence of images, got {type(ims).__name__}")
    try:
        ims = list(ims)
    except TypeError:
        raise TypeError(f"ims: expected a sequence of images, got {type(ims).__name__}") from None
    if not ims:
        raise ValueError("ims: expected at least one image, got none")
    nrows = check_int("nrows", nrows, low=1)
    ncols = math.ceil(len(ims) / nrows) if ncols is None else check_int("ncols", ncols, low=1)
    if nrows * ncols < len(ims):
        raise ValueError(f"nrows, ncols: a {nrows}x{ncols} grid has {nrows * ncols} places for {len(ims)} images")
    if titles is None:
        titles = [None] * len(ims)
    elif isinstance(titles, str):
        raise TypeError("titles: expected one title per image (a list), got a str")
    else:
        titles = list(titles)
        if len(titles) != len(ims):
            raise ValueError(f"titles: expected {len(ims)} titles, one per image, got {len(titles)}")
    imsize = check_number("imsize", imsize, low=0, low_open=True)
    arrays = [image_array(im, f"ims[{i}]") for i, im in enumerate(ims)]  # every image checked before drawing
    figsize = _check_figsize(figsize)
    if figsize is None:  # fastai's subplots: a little more height for a suptitle over small images
        height = nrows * imsize + (0.6 if suptitle is not None and imsize <= 2 else 0)
        figsize = (ncols * imsize, height)
    fig, axes = new_figure(nrows, ncols, figsize=figsize)
    grid = np.array(axes, dtype=object).reshape(nrows, ncols)
    for arr, title, ax in zip(arrays, titles, grid.flat):
        show_image(arr, ax=ax, title=title, **kwargs)
    for ax in grid.flat[len(arrays):]:
        ax.axis("off")
    if suptitle is not None:
        fig.suptitle(suptitle)
    show_once(fig)
    return grid

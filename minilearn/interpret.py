"""Interpretation: look at what a trained model gets wrong, as fastai's `fastai.interpret`.

    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_confusion_matrix()        # rows: actual class, columns: predicted class
    interp.most_confused(min_val=2)       # [(actual, predicted, count), ...], largest first
    interp.plot_top_losses(9)             # the items the model is most wrong about

`from_learner` runs one prediction pass (`learn.get_preds` with inputs, decoded predictions and
per-item losses) and keeps its results in memory; every method works from them.

How predictions become classes (`ClassificationInterpretation`):
- the loss's `decodes`, when it gives one class per item (an int or bool tensor):
  `CrossEntropyLossFlat` gives the argmax, `BCEWithLogitsLossFlat` on one output `p > thresh`;
- otherwise from the class probabilities `probs`: the argmax over the last dimension of an
  (N, C) output; for one output per item ((N,) or (N, 1): a binary model such as fastbook's
  3-vs-7 with `mnist_loss`) class 1 when its probability is above 0.5.
- The probabilities are the predictions as `get_preds` gave them when an activation was applied
  (`act`, or the loss's `activation`); otherwise (a plain function such as `mnist_loss`, or
  `nn.CrossEntropyLoss`) the raw outputs are taken as logits: softmax over the last dimension
  of (N, C), sigmoid of a single output. A model that already ends in a softmax or sigmoid
  should say so with `act=` (e.g. `act=lambda x: x`), so nothing is applied twice.

Where this differs from fastai, on purpose:
- One pass, kept in memory: fastai stores only the losses and runs `get_preds` again for each
  confusion matrix, report and plot (and rebuilds a `test_dl` for the items it shows). Here the
  inputs, predictions, targets and losses of the pass are attributes (`interp.inputs`, ...),
  so the methods cost nothing and always agree with each other. The price is memory: the whole
  set's inputs are held (fine for the in-memory tensor data minilearn is made for).
- Losses without a `reduction` (plain functions such as `mnist_loss`) still get per-item
  losses: the loss is called on each item alone. fastai needs a loss it can un-reduce.
- The plots return their Figure (shown once in a notebook, as `minilearn.plotting` does);
  fastai's draw on pyplot's current figure and return None.
- `plot_top_losses` draws image inputs only, titled `prediction/actual / loss / probability`
  as fastai, but the probability is that of the *actual* class (fastai 1's choice: it is the
  number the cross-entropy loss is made of), where fastai 2 shows the largest probability,
  which is the prediction's. Flat vectors of a square number of pixels (MNIST's 784) are drawn
  as square images.
- `plot_confusion_matrix(normalize=True)` shows 0 for a class with no items (fastai divides by
  zero and shows nan).
- `top_losses(items=True)` gives the dataset's items: for tensor data a tuple of the tensors at
  those indices (inputs, targets), for a map-style dataset a list of its items.
- `print_classification_report(**kwargs)` passes `kwargs` on to scikit-learn (`digits`,
  `zero_division`, ...).
- Errors name the argument: `k` larger than the set, a `ds_idx` the DataLoaders lack (a learner
  without validation data), a loader without targets, inputs that are not images.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from minilearn.checks import check_bool, check_int
from minilearn.data import DataLoader, as_loader

__all__ = ["Interpretation", "ClassificationInterpretation"]


def _identity(x):
    """The activation that applies nothing: asks `get_preds` for the raw outputs."""
    return x


def _check_learner(learn: Any) -> None:
    if not hasattr(learn, "get_preds") or not hasattr(learn, "dls"):
        raise TypeError(f"learn: expected a Learner (with .get_preds and .dls), got {type(learn).__name__}")


def _pass_loader(learn, ds_idx: int, dl) -> DataLoader:
    """The loader to interpret: `dl`, else `learn.dls[ds_idx]`, read in order with every item."""
    if dl is None:
        check_int("ds_idx", ds_idx, low=0)
        n = len(learn.dls)
        if ds_idx >= n:
            what = " (there is no validation loader)" if ds_idx == 1 and n == 1 else ""
            raise ValueError(f"ds_idx: learn.dls has no loader {ds_idx}{what}; it holds {n}. Pass ds_idx=0 to "
                             "interpret the training set, or dl= a loader with labels")
        dl = as_loader("ds_idx", learn.dls[ds_idx])
        if dl.torch_loader is None and (dl.shuffle or dl.drop_last):
            dl = dl.new(shuffle=False, drop_last=False)  # every item, in dataset order (fastai's)
        return dl
    dl = as_loader("dl", dl)
    # as `get_preds` reads it: unshuffled, so position i of the results is item i of the data
    return dl.new(shuffle=False) if dl.shuffle and dl.torch_loader is None else dl


def _per_item_losses(loss_func: Callable, raw: torch.Tensor, targs) -> torch.Tensor:
    """One loss per item, by calling a loss that cannot be un-reduced on each item alone."""
    targs = targs if isinstance(targs, tuple) else (targs,)
    with torch.no_grad():
        return torch.stack([loss_func(raw[i:i + 1], *(t[i:i + 1] for t in targs)).float().mean()
                            for i in range(len(raw))])


def _index(x, idx):
    """`x[idx]` for a tensor, each tensor's for a tuple of them (several inputs or targets)."""
    if isinstance(x, tuple):
        return tuple(t[idx] for t in x)
    return x[idx]


def _fmt(v: torch.Tensor) -> str:
    """A short label for one item's value: a number for a scalar, else its shape."""
    if v.numel() != 1:
        return f"{tuple(v.shape)}"
    x = v.item()
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _as_images(inputs) -> torch.Tensor:
    """`inputs` as a batch of images: (N, C, H, W) or (N, H, W); square flat vectors reshaped."""
    if isinstance(inputs, tuple):
        raise TypeError(f"inputs: plot_top_losses draws one image input per item; the batches have "
                        f"{len(inputs)} inputs")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs: expected a tensor of images, got {type(inputs).__name__}")
    if inputs.ndim == 2:  # flat vectors, such as fastbook's MNIST rows of 784 = 28 x 28 pixels
        side = math.isqrt(inputs.shape[1])
        if side * side != inputs.shape[1]:
            raise ValueError(f"inputs: flat vectors of {inputs.shape[1]} values are not square images "
                             f"(784 = 28x28 is); plot_top_losses draws (N, C, H, W), (N, H, W) or "
                             f"(N, side*side) inputs")
        return inputs.reshape(len(inputs), side, side)
    if inputs.ndim == 3 or (inputs.ndim == 4 and inputs.shape[1] in (1, 3, 4)):
        return inputs
    raise ValueError(f"inputs: expected images of shape (N, C, H, W) with 1, 3 or 4 channels, (N, H, W) or "
                     f"(N, side*side) flat vectors, got {tuple(inputs.shape)}")


class Interpretation:
    """The predictions, targets and per-item losses of one pass of a Learner over a loader, to
    find what the model gets most wrong (fastai's `Interpretation`; see the module docstring).

    Build it with `from_learner`. `inputs`, `preds`, `targs`, `decoded` and `losses` are as
    `learn.get_preds(with_input=True, with_decoded=True, with_loss=True)` gives them, item i of
    each being item i of `dl`; `interp[idxs]` gives the five at some positions.
    """

    def __init__(self, learn, dl: DataLoader, inputs, preds: torch.Tensor, targs, decoded, losses: torch.Tensor,
                 act: Callable | None = None):
        if targs is None:
            raise ValueError("dl: its batches have no targets, so there is nothing to compare the predictions "
                             "with; pass a loader with labels (e.g. dls.test_dl((x, y)))")
        if losses is None or len(losses) != len(preds):
            raise ValueError(f"losses: expected one loss per item ({len(preds)}), got "
                             f"{None if losses is None else len(losses)}")
        self.learn, self.dl, self.act = learn, dl, act
        self.inputs, self.preds, self.targs, self.decoded, self.losses = inputs, preds, targs, decoded, losses

    @classmethod
    def from_learner(cls, learn, ds_idx: int = 1, dl=None, act: Callable | None = None):
        """Run `learn` over `dl` (default: `learn.dls[ds_idx]`, the validation set, in order) once
        and keep what the interpretation needs; `act` overrides the loss's activation."""
        _check_learner(learn)
        if act is not None and not callable(act):
            raise TypeError(f"act: expected a callable activation such as torch.sigmoid, got {act!r}")
        dl = _pass_loader(learn, ds_idx, dl)
        loss_func = learn.loss_func
        if hasattr(loss_func, "reduction"):  # get_preds un-reduces the loss itself
            inputs, preds, targs, decoded, losses = learn.get_preds(
                dl=dl, with_input=True, with_decoded=True, with_loss=True, act=act)
        else:  # a plain function (mnist_loss): raw outputs, then the loss item by item
            inputs, raw, targs = learn.get_preds(dl=dl, with_input=True, act=_identity)
            losses = None if targs is None else _per_item_losses(loss_func, raw, targs)
            activation = act if act is not None else getattr(loss_func, "activation", None)
            preds = activation(raw) if activation is not None else raw
            decodes = getattr(loss_func, "decodes", None)
            decoded = decodes(preds) if decodes is not None else preds
        return cls(learn, dl, inputs, preds, targs, decoded, losses, act)

    def __len__(self) -> int:
        """How many items were interpreted."""
        return len(self.losses)

    def __getitem__(self, idxs):
        """`(inputs, preds, targs, decoded, losses)` at positions `idxs` (an int gives a batch of one)."""
        if isinstance(idxs, torch.Tensor):
            idxs = idxs.tolist()
        if isinstance(idxs, int):
            idxs = [idxs]
        return tuple(_index(x, idxs) for x in (self.inputs, self.preds, self.targs, self.decoded, self.losses))

    def top_losses(self, k: int | None = None, largest: bool = True, items: bool = False) -> tuple:
        """The `k` largest (or, `largest=False`, smallest) losses and their positions, as
        `torch.topk` gives them (k=None: all, sorted); `items=True` adds the dataset's items."""
        n = len(self.losses)
        if k is None:
            k = n
        k = check_int("k", k, low=0)
        if k > n:
            raise ValueError(f"k: asked for {k} losses, but the interpretation holds {n} items; "
                             f"pass k <= {n}, or None for all")
        check_bool("largest", largest)
        values, idx = self.losses.topk(k, largest=largest)
        if check_bool("items", items):
            return values, idx, self._items(idx)
        return values, idx

    def _items(self, idx: torch.Tensor):
        """The dataset's items at positions `idx` of the pass."""
        if self.dl.torch_loader is not None and self.dl.shuffle:
            raise ValueError("items: the torch DataLoader shuffles, so positions in the pass are not indices "
                             "of its dataset; build the interpretation from an unshuffled loader")
        ds = self.dl.dataset
        if isinstance(ds, tuple) and all(isinstance(t, torch.Tensor) for t in ds):  # tensor data
            picked = tuple(t[idx.to(t.device)] for t in ds)
            return picked[0] if len(picked) == 1 else picked
        return [ds[i] for i in idx.tolist()]

    def _positions(self, k, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses and positions of `k` (an int: the top k; a range or list: those ranks of the sorted losses)."""
        if isinstance(k, (range, list, tuple)):
            losses, idx = self.top_losses(None, largest)
            ranks = list(k)
            if not ranks:
                raise ValueError("k: expected at least one rank to show, got an empty range")
            bad = [r for r in ranks if isinstance(r, bool) or not isinstance(r, int) or not -len(idx) <= r < len(idx)]
            if bad:
                raise ValueError(f"k: ranks must be ints from 0 to {len(idx) - 1} (there are {len(idx)} items), "
                                 f"got {bad}")
            return losses[ranks], idx[ranks]
        k = check_int("k", k, low=1)
        return self.top_losses(k, largest)

    def _title(self, i: int) -> str:
        """The title of item `i` in `plot_top_losses`: decoded prediction / target / loss."""
        targ = self.targs[0] if isinstance(self.targs, tuple) else self.targs
        return f"{_fmt(self.decoded[i])}/{_fmt(targ[i])} / {self.losses[i].item():.2f}"

    _suptitle = "Prediction/Actual/Loss"

    def plot_top_losses(self, k: int | Sequence[int], largest: bool = True, **kwargs):
        """Draw the inputs of the `k` largest-loss items (or smallest, `largest=False`; a range
        such as `range(7, 16)` picks those ranks) in a grid, each titled with its prediction,
        target and loss; returns the Figure (shown once in a notebook).

        `kwargs`: `nrows`, `ncols` (default: fastai's near-square grid), `figsize`, `imsize`, and
        the rest for each image (`cmap`, `vmin`, ...; see `minilearn.plotting.show_images`).
        """
        losses, idx = self._positions(k, largest)
        images = _as_images(self.inputs)  # checked before anything is drawn
        titles = [self._title(i) for i in idx.tolist()]
        n = len(idx)
        nrows, ncols = kwargs.pop("nrows", None), kwargs.pop("ncols", None)
        if nrows is None:
            nrows = max(1, math.ceil(n / ncols)) if ncols is not None else max(1, math.isqrt(n))
        from minilearn.plotting import show_images  # matplotlib is imported when a plot is drawn

        grid = show_images([images[i] for i in idx.tolist()], nrows=nrows, ncols=ncols, titles=titles,
                           suptitle=self._suptitle, **kwargs)
        return grid.flat[0].figure


class ClassificationInterpretation(Interpretation):
    """An `Interpretation` of a classifier: its confusion matrix, the classes it confuses most,
    scikit-learn's report, and its top losses titled with class names (fastai's).

    `decoded` holds the predicted class of each item and `probs` the class probabilities (N, C)
    (see the module docstring for how they are found); `vocab` the class names, from
    `learn.dls.vocab`, else the class indices `range(n_classes)`.
    """

    def __init__(self, learn, dl: DataLoader, inputs, preds: torch.Tensor, targs, decoded, losses: torch.Tensor,
                 act: Callable | None = None):
        super().__init__(learn, dl, inputs, preds, targs, decoded, losses, act)
        if isinstance(targs, tuple):
            raise ValueError(f"targs: a classification interpretation takes one target per item; the batches "
                             f"have {len(targs)} targets")
        loss_func = getattr(learn, "loss_func", None)
        activated = act is not None or getattr(loss_func, "activation", None) is not None
        self.probs = _class_probabilities(preds, activated)
        self.decoded = _class_predictions(decoded, self.probs)
        self.targs = _class_targets(targs)
        if self.decoded.numel() != self.targs.numel():
            raise ValueError(f"targs: expected one class per prediction, got {self.targs.numel()} targets for "
                             f"{self.decoded.numel()} predicted classes (multi-label models are not supported)")
        vocab = getattr(getattr(learn, "dls", None), "vocab", None)
        top = int(max(self.decoded.max(), self.targs.max())) if len(self.targs) else -1
        if vocab is not None:
            self.vocab = list(vocab)
            if top >= len(self.vocab):
                raise ValueError(f"vocab: learn.dls.vocab names {len(self.vocab)} classes, but the predictions or "
                                 f"targets have class {top}")
        else:
            width = self.probs.shape[-1] if self.probs is not None else 0
            self.vocab = list(range(max(top + 1, width)))

    def _title(self, i: int) -> str:
        """prediction/actual / loss / probability of the actual class, by class name."""
        if self.decoded.shape[0] != len(self.losses) or self.decoded.ndim != 1:
            raise ValueError("decoded: plot_top_losses titles one class per item; these predictions have "
                             f"shape {tuple(self.decoded.shape)}")
        pred, actual = int(self.decoded[i]), int(self.targs[i])
        title = f"{self.vocab[pred]}/{self.vocab[actual]} / {self.losses[i].item():.2f}"
        if self.probs is not None:
            title += f" / {self.probs[i, actual].item():.2f}"
        return title

    @property
    def _suptitle(self) -> str:
        return "Prediction/Actual/Loss/Probability" if self.probs is not None else "Prediction/Actual/Loss"

    def confusion_matrix(self) -> np.ndarray:
        """Counts of (actual, predicted) pairs as an int64 array: row i is actual class i, column j
        predicted class j (fastai's layout), over the classes of `vocab`."""
        n = len(self.vocab)
        t, d = self.targs.reshape(-1), self.decoded.reshape(-1)
        return torch.bincount(t * n + d, minlength=n * n).reshape(n, n).numpy()

    def most_confused(self, min_val: int = 1) -> list[tuple]:
        """The off-diagonal cells of the confusion matrix with at least `min_val` items, as
        `(actual, predicted, count)` by class name, largest count first (ties in row order); the
        diagonal (correct predictions) is never listed."""
        check_int("min_val", min_val)
        cm = self.confusion_matrix()
        np.fill_diagonal(cm, 0)
        cells = [(self.vocab[i], self.vocab[j], int(cm[i, j])) for i, j in zip(*np.nonzero(cm >= min_val))
                 if i != j]
        return sorted(cells, key=lambda c: c[2], reverse=True)

    def plot_confusion_matrix(self, normalize: bool = False, title: str = "Confusion matrix", cmap: str = "Blues",
                              norm_dec: int = 2, plot_txt: bool = True, **kwargs):
        """Draw the confusion matrix, actual classes down and predicted across, each cell's count
        written in it (`plot_txt`), or each row's fractions with `normalize` (`norm_dec`
        decimals); returns the Figure (shown once in a notebook). `kwargs` go to the Figure
        (`figsize`, `dpi`)."""
        check_bool("normalize", normalize)
        check_bool("plot_txt", plot_txt)
        check_int("norm_dec", norm_dec, low=0)
        cm = self.confusion_matrix()
        if normalize:
            totals = cm.sum(axis=1, keepdims=True)
            cm = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)  # a class without items: 0
        from minilearn.plotting import PlotFigure, show_once  # matplotlib is imported when a plot is drawn

        fig = PlotFigure(**kwargs)
        ax = fig.subplots()
        ax.imshow(cm, interpolation="nearest", cmap=cmap)
        ax.set_title(title)
        ticks = np.arange(len(self.vocab))
        names = [str(v) for v in self.vocab]
        ax.set_xticks(ticks, names, rotation=90)
        ax.set_yticks(ticks, names)
        if plot_txt:
            thresh = cm.max() / 2.0
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    text = f"{cm[i, j]:.{norm_dec}f}" if normalize else f"{cm[i, j]}"
                    ax.text(j, i, text, ha="center", va="center", color="white" if cm[i, j] > thresh else "black")
        ax.set_ylim(len(self.vocab) - 0.5, -0.5)
        ax.set_ylabel("Actual")
        ax.set_xlabel("Predicted")
        ax.grid(False)
        fig.tight_layout()
        show_once(fig)
        return fig

    def print_classification_report(self, **kwargs) -> None:
        """Print scikit-learn's `classification_report` (precision, recall, f1 per class) with
        the vocab's names; `kwargs` go to it (`digits`, `zero_division`, ...)."""
        try:
            from sklearn.metrics import classification_report
        except ImportError as e:
            raise ImportError("print_classification_report needs scikit-learn: pip install scikit-learn") from e
        print(classification_report(self.targs.reshape(-1).numpy(), self.decoded.reshape(-1).numpy(),
                                    labels=list(range(len(self.vocab))), target_names=[str(v) for v in self.vocab],
                                    **kwargs))


def _class_probabilities(preds: torch.Tensor, activated: bool) -> torch.Tensor | None:
    """Class probabilities (N, C) of per-item predictions; a single output p gives (1 - p, p).
    Raw outputs (no activation applied) are taken as logits. None for other shapes (segmentation)."""
    if not isinstance(preds, torch.Tensor) or not preds.is_floating_point():
        return None
    preds = preds.float()
    if preds.ndim == 1 or (preds.ndim == 2 and preds.shape[1] == 1):
        p = preds.reshape(-1)
        p = p if activated else torch.sigmoid(p)
        return torch.stack([1 - p, p], dim=1)
    if preds.ndim == 2:
        return preds if activated else F.softmax(preds, dim=-1)
    return None


def _class_predictions(decoded, probs: torch.Tensor | None) -> torch.Tensor:
    """Predicted classes (int64): the loss's decoding when it gave classes, else the argmax of `probs`."""
    if isinstance(decoded, torch.Tensor) and not decoded.is_floating_point() and not decoded.is_complex():
        d = decoded.long()
        return d.reshape(len(d)) if d.ndim > 1 and d[0].numel() == 1 else d  # (N, 1) from one output
    if probs is None:
        raise ValueError("decoded: the loss does not decode predictions to classes and they are not (N, C) or "
                         "single-output scores; use a loss with `decodes` (e.g. CrossEntropyLossFlat)")
    return probs.argmax(dim=-1)


def _class_targets(targs: torch.Tensor) -> torch.Tensor:
    """Targets as int64 class indices; float targets (fastbook's 0./1.) must be whole numbers."""
    if not isinstance(targs, torch.Tensor):
        raise TypeError(f"targs: expected a tensor of class indices, got {type(targs).__name__}")
    if targs.is_floating_point():
        if not torch.equal(targs, targs.round()):
            raise ValueError("targs: expected class indices, got float targets that are not whole numbers "
                             "(soft or regression targets have no confusion matrix)")
    t = targs.long()
    if t.ndim > 1 and t[0].numel() == 1:  # (N, 1) as fastbook's train_y
        t = t.reshape(len(t))
    if len(t) and t.min() < 0:
        raise ValueError(f"targs: expected class indices >= 0, got {int(t.min())}")
    return t

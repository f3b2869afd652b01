"""Side by side with the real fastai: one model, one data order, trained by both, compared.

fastai's `Learner` accepts minilearn's `DataLoaders` as they are, so both frameworks can be
given loaders built the same way (same tensors, same seed): they then see the same batches in
the same order. Each gets its own copy of the same initial weights. fastai is imported only
here, and only when a comparison runs (`pip install minilearn[compare]`).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

from torch import nn

from minilearn.callbacks.progress import format_value, text_row
from minilearn.learner import Learner
from minilearn import optim


@dataclass
class Run:
    """What one framework's training produced, as plain numbers."""

    framework: str
    names: list[str]                 # the columns of `values`: train_loss, valid_loss, metrics
    values: list[list[float]]        # one row per epoch
    lrs: list[float]                 # per training batch
    losses: list[float]              # smoothed training loss per batch
    hps: dict[str, list[float]] = field(default_factory=dict)  # scheduled hyper-parameters per batch

    def column(self, name: str) -> list[float]:
        return [row[self.names.index(name)] for row in self.values]


@dataclass
class Comparison:
    """Two runs of the same training, minilearn's and fastai's."""

    minilearn: Run
    fastai: Run

    def max_diffs(self) -> dict[str, float]:
        """Largest absolute difference per column, and per batch for lrs, losses and schedules."""
        diffs = {name: _max_diff(self.minilearn.column(name), self.fastai.column(name))
                 for name in self.minilearn.names}
        diffs["lr (per batch)"] = _max_diff(self.minilearn.lrs, self.fastai.lrs)
        diffs["smooth loss (per batch)"] = _max_diff(self.minilearn.losses, self.fastai.losses)
        for k in self.minilearn.hps:
            diffs[f"{k} (per batch)"] = _max_diff(self.minilearn.hps[k], self.fastai.hps.get(k, []))
        return diffs

    def table(self) -> str:
        """Both per-epoch tables side by side, then the largest difference in each column."""
        names = self.minilearn.names
        head = ["epoch"] + [f"{n} (ml)" for n in names] + [f"{n} (fastai)" for n in names]
        widths = [max(len(h), 8) for h in head]
        lines = [text_row(head, widths)]
        for epoch, (a, b) in enumerate(zip(self.minilearn.values, self.fastai.values)):
            cells = [str(epoch)] + [format_value(n, v) for n, v in zip(names + names, a + b)]
            lines.append(text_row(cells, widths))
        lines.append("largest difference: " + ", ".join(f"{k} {v:.2e}" for k, v in self.max_diffs().items()))
        return "\n".join(lines)


def _max_diff(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        raise ValueError(f"the runs differ in length: {len(a)} and {len(b)} values")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


# Our optimiser and fastai's, by name (both take params, lr and the same hyper-parameter names).
OPTIMIZERS = ("sgd", "adam", "rmsprop", "radam", "lamb")


def _opt_funcs(name: str) -> tuple[Callable, Callable]:
    import fastai.optimizer as fo

    ours = {"sgd": optim.SGD, "adam": optim.Adam, "rmsprop": optim.RMSProp, "radam": optim.RAdam, "lamb": optim.Lamb}
    theirs = {"sgd": fo.SGD, "adam": fo.Adam, "rmsprop": fo.RMSProp, "radam": fo.RAdam, "lamb": fo.Lamb}
    if name not in ours:
        raise ValueError(f"opt: expected one of {OPTIMIZERS}, got {name!r}")
    return ours[name], theirs[name]


def import_fastai():
    """Import fastai's Learner module quietly, or say how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fastai's import warns about torch.jit
            import fastai.learner
            import fastai.callback.progress  # noqa: F401
            import fastai.callback.schedule  # noqa: F401  (adds fit_one_cycle, lr_find to fastai's Learner)
    except ImportError as e:
        raise ImportError("comparing with fastai needs it installed: pip install 'minilearn[compare]'") from e
    return fastai.learner


def _partial(f: Callable, kwargs: dict) -> Callable:
    return (lambda params, lr, **kw: f(params, lr=lr, **{**kwargs, **kw})) if kwargs else f


def make_learners(make_dls: Callable, model: nn.Module, loss_func: Callable, metrics: Sequence = (),
                  opt: str = "sgd", opt_kwargs: dict | None = None, path=None, **learner_kwargs):
    """A minilearn Learner and a fastai Learner over the same data, each with a copy of `model`.

    `make_dls()` is called once per framework and must build identical loaders (same seed).
    Both are quiet: no progress table or bar.
    """
    fastai_learner = import_fastai()
    from fastai.callback.progress import ProgressCallback as FastaiProgress

    ours, theirs = _opt_funcs(opt)
    opt_kwargs = opt_kwargs or {}
    path = path if path is not None else tempfile.mkdtemp(prefix="minilearn-compare-")
    ml = Learner(make_dls(), copy.deepcopy(model), loss_func, opt_func=_partial(ours, opt_kwargs),
                 metrics=list(metrics), path=path, **learner_kwargs)
    ml.remove_cb(ml.progress)
    ml.logger = lambda *args: None  # without its table the Recorder would print each epoch's row
    fa = fastai_learner.Learner(make_dls(), copy.deepcopy(model), loss_func=loss_func,
                                opt_func=_partial(theirs, opt_kwargs), metrics=list(metrics), path=path,
                                **learner_kwargs)
    fa.remove_cb(FastaiProgress)
    fa.logger = lambda *args: None  # fastai prints the raw epoch lists when its progress is gone
    return ml, fa


def run_of(framework: str, learn) -> Run:
    """What one framework's learner recorded in its last fit, as plain numbers (a `Run`)."""
    rec = learn.recorder
    names = [n for n in rec.metric_names[1:] if n != "time"]
    values = [[float(v) for v in row[:len(names)]] for row in rec.values]
    hps = {k: [float(v) for v in vs] for k, vs in getattr(rec, "hps", {}).items()}
    return Run(framework, names, values, [float(v) for v in rec.lrs], [float(v) for v in rec.losses], hps)


def compare_with_fastai(make_dls: Callable, model: nn.Module, loss_func: Callable, metrics: Sequence = (),
                        n_epoch: int = 1, lr: float = 1e-2, method: str = "fit", opt: str = "sgd",
                        opt_kwargs: dict | None = None, cbs: Callable | None = None, fit_kwargs: dict | None = None,
                        **learner_kwargs) -> Comparison:
    """Train `model` with minilearn and with fastai the same way; return both runs.

    `method` is the Learner method both call (`fit`, `fit_one_cycle`, `fit_flat_cos`, ...) as
    `method(n_epoch, lr, **fit_kwargs)`; `cbs(framework)` may return callbacks for each
    (`framework` is 'minilearn' or 'fastai').
    """
    fit_kwargs = fit_kwargs or {}
    with _scratch_path(learner_kwargs) as path:  # a folder of their own, removed afterwards
        ml, fa = make_learners(make_dls, model, loss_func, metrics, opt, opt_kwargs, path=path, **learner_kwargs)
        getattr(ml, method)(n_epoch, lr, cbs=cbs("minilearn") if cbs else None, **fit_kwargs)
        getattr(fa, method)(n_epoch, lr, cbs=cbs("fastai") if cbs else None, **fit_kwargs)
    return Comparison(run_of("minilearn", ml), run_of("fastai", fa))


def _scratch_path(learner_kwargs: dict):
    """The learners' `path`: the caller's (popped from `learner_kwargs`), or a temporary folder
    that is removed when the comparison ends."""
    path = learner_kwargs.pop("path", None)
    return contextlib.nullcontext(path) if path is not None else tempfile.TemporaryDirectory(prefix="minilearn-compare-")


@dataclass
class LRFindComparison:
    """Both frameworks' LR finder records and valley suggestions."""

    lrs: tuple[list[float], list[float]]
    losses: tuple[list[float], list[float]]
    valley: tuple[float, float]


def compare_lr_find(make_dls: Callable, model: nn.Module, loss_func: Callable, opt: str = "adam",
                    num_it: int = 100, **lr_find_kwargs) -> LRFindComparison:
    """Run lr_find in both frameworks from the same weights and data order."""
    with tempfile.TemporaryDirectory(prefix="minilearn-compare-") as path:
        ml, fa = make_learners(make_dls, model, loss_func, opt=opt, path=path)
        ml_sugg = ml.lr_find(num_it=num_it, show_plot=False, **lr_find_kwargs)
        fa_sugg = fa.lr_find(num_it=num_it, show_plot=False, **lr_find_kwargs)
    return LRFindComparison(
        lrs=(list(ml.lr_finder.lrs), [float(v) for v in fa.recorder.lrs]),
        losses=(list(ml.lr_finder.losses), [float(v) for v in fa.recorder.losses]),
        valley=(float(ml_sugg.valley), float(fa_sugg.valley)),
    )

"""TensorBoardCallback: a fit's losses, hyper-parameters and metrics (optionally the model's graph,
weight histograms and sample predictions) written for TensorBoard through torch's `SummaryWriter`.

    pip install "minilearn[tensorboard]"
    learn.fit_one_cycle(5, 1e-2, cbs=TensorBoardCallback())
    tensorboard --logdir runs

The tags and steps are fastai's (`fastai.callback.tensorboard`), so runs of both frameworks overlay
in one TensorBoard: per training batch `train_loss` (the smoothed loss) and each parameter group's
hyper-parameters as `<name>_<group>` (`lr_0`, `mom_0`, `wd_0`, ...); per epoch `valid_loss` and
each metric under its column name; the figure of predictions as `Sample results`. Every step is
`learn.train_iter` at the time, fastai's: the k-th training batch of a fit is step k (from 1),
and an epoch's numbers sit at the step of its last training batch.

The training loop pays almost nothing: a batch only notes its step, wall time and the
hyper-parameters (plain floats); the smoothed losses, which the Recorder keeps on the device, are
read at the end of the epoch in the Recorder's one host sync and written then, each with the step
and wall time of its batch, so TensorBoard's plots are those of a write per batch.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from minilearn.callback import Callback
from minilearn.callbacks.recorder import Recorder
from minilearn.checks import check_bool, check_int
from minilearn.data import inputs_of, to_device
from minilearn.distributed import is_rank0
from minilearn.torch_basics import kept_modes

INSTALL_HINT = 'pip install "minilearn[tensorboard]"'
PREDS_TAG = "Sample results"  # fastai's tag for the figure of predictions
_CHANNELS = (1, 3, 4)         # grey, RGB, RGBA: what `minilearn.plotting` draws


def summary_writer_class() -> type:
    """torch's `SummaryWriter`, or an ImportError that says how to install tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(f"TensorBoardCallback needs the tensorboard package: {INSTALL_HINT} "
                          f"(importing torch.utils.tensorboard failed: {e})") from e
    return SummaryWriter


class TensorBoardCallback(Callback):
    """Writes a fit for TensorBoard under `log_dir`, with fastai's tags and steps (see the module).

    - `log_dir`: where the event files go; default `learn.path/'runs'/<date_time>`, a new folder
      each fit. A relative `log_dir` is taken under `learn.path` (as `CSVLogger`'s file); an
      explicit one is reused by every fit, each adding an event file (TensorBoard shows them as
      one run, so the steps of a second fit start over beside the first's).
    - `trace_model`: the model's graph (`add_graph`), traced once at the start of the fit on one
      validation batch, under `no_grad` and in eval mode, the model's modes put back after.
    - `log_preds`: each epoch, a figure of the model's predictions on the first `n_preds` items of
      the validation set (the same items every epoch), titled target over prediction, green when
      they agree; for image inputs only: (N, C, H, W) or (N, H, W, C) with 1, 3 or 4 channels, or
      (N, H, W) grey images of at least 8 pixels a side. Other inputs get one warning and no figure.
    - `hist_weights`: each epoch, a histogram of every parameter, tagged `weights/<name>`.
    - `every`: write the per-batch scalars at every `every`-th training step only; epochs are
      always written. Each scalar point costs tensorboard about 40 us to write (a protobuf and a
      pure-Python CRC; fastai pays it too), 1 + the number of hyper-parameters per group per batch
      (4 with SGD, 6 with Adam): a few per cent of a real batch, more on a toy model; `every` divides it.

    It writes on rank 0 only under torch.distributed, sits out `lr_find`, `validate` and
    `get_preds`, runs after the Recorder (whose numbers it writes), flushes the file each epoch and
    closes it at the end of the fit, also when the fit raised (the batches of an epoch cut short
    are written first).

    Differences from fastai's: `trace_model` and `log_preds` are off by default (fastai: on);
    validation batches add no `train_loss` points (fastai's repeat the last one at the epoch's
    step); the epoch's scalars are found by column name (fastai's slice drops the last metric when
    the Recorder has no time column); `hist_weights` and `every` are ours; fastai's `projector` and
    `layer` arguments and its `TensorBoardProjectorCallback` (embeddings for TensorBoard's
    projector) are left out; the graph is traced under mixed precision too (fastai refuses).
    """

    order = Recorder.order + 1  # after the Recorder has this batch's loss and this epoch's row
    run_valid = False           # only training batches give per-batch points
    sits_out = ("lr_find", "validate")

    def __init__(self, log_dir: str | os.PathLike | None = None, trace_model: bool = False,
                 log_preds: bool = False, n_preds: int = 9, hist_weights: bool = False, every: int = 1):
        summary_writer_class()  # a missing package fails here, before any training
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir: expected None, a str or a path, got {type(log_dir).__name__}")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.trace_model = check_bool("trace_model", trace_model)
        self.log_preds = check_bool("log_preds", log_preds)
        self.n_preds = check_int("n_preds", n_preds, low=1)
        self.hist_weights = check_bool("hist_weights", hist_weights)
        self.every = check_int("every", every, low=1)
        self.writer = None    # the SummaryWriter, open from before_fit to the end of the fit on rank 0
        self.run_dir: Path | None = None  # where the last fit wrote
        self._reset()

    def _reset(self) -> None:
        self._pending: list = []  # per noted batch: (index in recorder.losses, step, wall time, hypers)
        self._first = 0           # the index in recorder.losses of this fit's first training batch
        self._seen = 0            # training batches with a loss so far this fit (the Recorder's count)
        self._sample = None       # (inputs, targets) that log_preds draws, chosen at before_fit

    # ------------------------------------------------------------------ events
    def before_fit(self) -> None:
        self._reset()
        if not is_rank0():  # under torch.distributed one process writes
            return
        recorder = getattr(self.learn, "recorder", None)
        if not isinstance(recorder, Recorder):
            raise RuntimeError("TensorBoardCallback: the learner has no Recorder, whose losses and metrics it "
                               "writes; keep the default callbacks (Learner(..., default_cbs=True))")
        self._first = len(recorder.losses)  # nothing is pending yet: the Recorder was just reset
        self.run_dir = self._new_run_dir()
        self.writer = summary_writer_class()(log_dir=str(self.run_dir))
        if self.trace_model or self.log_preds:
            xb, yb = self._peek_batch()
            if self.trace_model:
                self._add_graph(xb)
            if self.log_preds:
                self._sample = self._image_sample(xb, yb)
        self.writer.flush()

    def after_batch(self) -> None:
        # In the training loop: reads no tensor (that would be a host-device sync), only notes
        # where this batch's point goes; `_write_batches` writes it at the end of the epoch.
        if self.writer is None or self.learn.loss is None:  # a batch cancelled before its loss has no point
            return
        self._seen += 1
        step = self.learn.train_iter  # TrainEvalCallback has counted this batch: fastai's step
        if step % self.every == 0:
            # the hyper-parameters as tuples of floats: a copy (the optimiser's dicts change in place)
            # that the garbage collector need not walk
            self._pending.append((self._first + self._seen - 1, step, time.time(),
                                  tuple(tuple(h.items()) for h in self.learn.opt.hypers)))

    def after_epoch(self) -> None:
        if self.writer is None:
            return
        self._write_batches(self.writer)
        step = self.learn.train_iter
        for name, value in self.learn.recorder.log.items():  # valid_loss and every metric, by name
            if name not in ("epoch", "train_loss", "time") and value is not None:
                self.writer.add_scalar(name, value, step)
        if self.hist_weights:
            self._add_histograms(step)
        if self._sample is not None:
            self._add_preds(step)
        self.writer.flush()  # an epoch is on disk when the next begins

    def after_fit(self) -> None:
        self.cleanup_fit()

    def cleanup_fit(self) -> None:
        """Write what is pending and close the file: at the end of every fit, also one that raised."""
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        self._sample = None
        try:
            self._write_batches(writer)  # the batches of an epoch cut short
        finally:
            writer.close()

    # ------------------------------------------------------------------ writing
    def _write_batches(self, writer) -> None:
        """The noted batches' points: the smoothed losses from the Recorder (its one host sync of
        the epoch), the hyper-parameters noted per batch, each at its batch's step and wall time."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        losses = self.learn.recorder.losses
        for index, step, wall, hypers in pending:
            if index < len(losses):
                writer.add_scalar("train_loss", losses[index], step, walltime=wall)
            for group, h in enumerate(hypers):
                for name, value in h:
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        writer.add_scalar(f"{name}_{group}", value, step, walltime=wall)

    def _add_histograms(self, step: int) -> None:
        """One histogram per parameter (a host copy of each: once an epoch)."""
        for name, p in self._bare_model().named_parameters():
            if p.numel() > 0:
                self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), step)

    def _add_graph(self, xb: tuple) -> None:
        model = self._bare_model()
        with torch.no_grad(), kept_modes(model), warnings.catch_warnings():
            # add_graph can only trace with torch.jit.trace, which warns that it is deprecated:
            # nothing the user can act on, so not shown at every fit
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
            model.eval()
            try:
                self.writer.add_graph(model, tuple(xb))
            except Exception as e:
                raise RuntimeError(f"trace_model: torch.jit.trace could not trace {type(model).__name__} on "
                                   f"inputs {_shapes(xb)} ({type(e).__name__}: {e}); pass trace_model=False") from e

    def _add_preds(self, step: int) -> None:
        """The figure of predictions on the sample, in eval mode without gradients, modes put back."""
        x, y = self._sample
        model = self._bare_model()
        with torch.no_grad(), kept_modes(model):
            model.eval()
            out = model(x)
        if not isinstance(out, torch.Tensor):
            self._sample = None
            warnings.warn(f"log_preds: the model returned a {type(out).__name__}, not a tensor; no more "
                          "predictions are logged this fit", UserWarning, stacklevel=2)
            return
        preds = _decoded(out, self.learn.loss_func, y)
        fig = preds_figure(x.cpu(), preds.cpu(), None if y is None else y.cpu(),
                           getattr(self.learn.dls, "vocab", None))
        self.writer.add_figure(PREDS_TAG, fig, step)

    # ------------------------------------------------------------------ helpers
    def _new_run_dir(self) -> Path:
        if self.log_dir is not None:
            return self.log_dir if self.log_dir.is_absolute() else self.learn.path / self.log_dir
        base = self.learn.path / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        run, k = base, 0
        while run.exists():  # two fits in the same second get two runs
            k += 1
            run = base.with_name(f"{base.name}_{k}")
        return run

    def _bare_model(self) -> nn.Module:
        """The learner's model without a DDP wrapper: a forward on rank 0 alone must not wait for
        the other ranks (DDP syncs buffers in its forward)."""
        model = self.learn.model
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    def _peek_batch(self) -> tuple[tuple, tuple]:
        """The first validation batch (the first training one without a validation set) on the
        model's device, as (inputs, targets); the loaders' shuffling is left as it was."""
        dls = self.learn.dls
        dl = dls.valid if dls.valid is not None else dls.train
        batch = to_device(tuple(dl.one_batch()), self.learn.device)
        n_inp = self.learn.n_inp or inputs_of(len(batch))
        return batch[:n_inp], batch[n_inp:]

    def _image_sample(self, xb: tuple, yb: tuple):
        """The first `n_preds` inputs and targets, when the inputs are images; else a warning and None."""
        x = xb[0] if len(xb) == 1 else None
        if x is None or not is_image_batch(x):
            got = _shapes(xb)
            warnings.warn(f"log_preds: the inputs ({got}) are not a batch of images, (N, C, H, W) or "
                          f"(N, H, W, C) with C 1, 3 or 4, or (N, H, W) with H, W >= 8; no predictions "
                          f"are logged (pass log_preds=False to silence this)", UserWarning, stacklevel=2)
            return None
        y = yb[0] if len(yb) == 1 and isinstance(yb[0], torch.Tensor) else None
        n = self.n_preds
        return x[:n], None if y is None else y[:n]


def is_image_batch(x) -> bool:
    """Whether `x` reads as a batch of images `minilearn.plotting` draws (see `log_preds`)."""
    if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.dtype in (torch.uint8, torch.bool)):
        return False
    if x.ndim == 4:
        return (x.shape[1] in _CHANNELS and min(x.shape[2:]) >= 2) or \
               (x.shape[-1] in _CHANNELS and min(x.shape[1:3]) >= 2)
    return x.ndim == 3 and min(x.shape[1:]) >= 8


def _shapes(ts) -> str:
    return ", ".join(f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" if isinstance(t, torch.Tensor)
                     else type(t).__name__ for t in ts) or "none"


def _decoded(out: torch.Tensor, loss_func, targ: torch.Tensor | None) -> torch.Tensor:
    """Model outputs as the targets read: the loss's `activation` and `decodes` when it has them
    (fastai's flat losses), else the arg-max for class-index targets (a plain CrossEntropyLoss)."""
    activation, decodes = getattr(loss_func, "activation", None), getattr(loss_func, "decodes", None)
    if callable(activation) and callable(decodes):
        return decodes(activation(out))
    if targ is not None and not targ.is_floating_point() and out.ndim == targ.ndim + 1:
        return out.argmax(dim=-1)
    return out


def _label(v: torch.Tensor, vocab) -> str | None:
    """One item's target or prediction as text: a class name or index, a number; None otherwise."""
    if v.ndim == 1 and v.dtype == torch.bool and vocab is not None and len(v) == len(vocab):
        return ";".join(str(vocab[i]) for i in torch.nonzero(v).flatten().tolist())  # multi-label
    if v.numel() != 1:
        return None
    if v.is_floating_point():
        return f"{v.item():.3g}"
    i = int(v.item())
    return str(vocab[i]) if vocab is not None and 0 <= i < len(vocab) else str(i)


def _for_display(im: torch.Tensor) -> torch.Tensor:
    """A float image scaled into [0, 1] when it lies outside (normalised inputs), as imshow wants."""
    if not im.is_floating_point():
        return im
    im = im.float()
    lo, hi = im.min(), im.max()
    if (lo < 0 or hi > 1) and hi > lo:
        im = (im - lo) / (hi - lo)
    return im


def preds_figure(x: torch.Tensor, preds: torch.Tensor, targs: torch.Tensor | None = None, vocab=None):
    """A grid of the images `x`, each titled target over prediction (green when equal, red when
    not); a `minilearn.plotting` Figure."""
    import numpy as np

    from minilearn.plotting import new_figure, show_image

    n = len(x)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(2.5 * ncols, 2.8 * nrows))
    grid = np.array(axes, dtype=object).reshape(-1)
    for i, ax in enumerate(grid):
        if i >= n:
            ax.axis("off")
            continue
        pred = _label(preds[i], vocab) if i < len(preds) else None
        targ = None if targs is None else _label(targs[i], vocab)
        title = "\n".join(t for t in (targ, pred) if t is not None) or None
        show_image(_for_display(x[i]), ax=ax, title=title)
        if pred is not None and targ is not None:
            ax.title.set_color("green" if pred == targ else "red")
    return fig

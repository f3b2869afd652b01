"""Callbacks around predictions: Monte-Carlo dropout at inference, and collecting every batch.

`MCDropoutCallback` keeps dropout active while the rest of the model is in eval mode, so that
several `get_preds` passes sample different sub-networks and their spread estimates the model's
uncertainty. `CollectDataCallback` is a debugging aid that keeps what the loop saw at each batch.
`FetchPredsCallback` runs `get_preds` after each validation of a fit. `GatherPredsCallback` and
`get_preds(learn, ...)` are what `Learner.get_preds` runs.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from fastcore.foundation import L
from torch import nn

from minilearn.callback import Callback
from minilearn.checks import as_list, check_int
from minilearn.data import as_loader
from minilearn.distributed import all_gather_cat, all_gather_object
from minilearn.losses import not_reduced


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` whose class name contains "dropout" (any case), as fastai finds them:
    torch's Dropout, Dropout1d/2d/3d, AlphaDropout, ... and custom ones such as fastai's RNNDropout."""
    return [m for m in model.modules() if "dropout" in type(m).__name__.lower()]


class MCDropoutCallback(Callback):
    """Monte-Carlo dropout: during validation passes (`validate`, `get_preds` and a fit's own),
    dropout layers stay in train mode while every other layer is in eval mode.

    Each `learn.get_preds(cbs=MCDropoutCallback())` then gives a different sample of predictions;
    stack several to estimate the model's uncertainty. After the pass dropout is back in eval mode.
    """

    order = 0  # after TrainEvalCallback (-10), whose before_validate puts the whole model in eval mode

    def before_validate(self) -> None:
        for m in dropout_modules(self.learn.model):
            m.train()

    def after_validate(self) -> None:
        for m in dropout_modules(self.learn.model):
            m.eval()


def _detached(obj):
    """`obj` with each tensor in it detached and on the CPU (tuples and lists kept; None stays)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detached(o) for o in obj)
    return obj


class CollectDataCallback(Callback):
    """Keeps `(xb, yb, pred, loss)` of every batch, training and validation, in `self.data`, as fastai's:
    a debugging aid for seeing exactly what the loop saw.

    Each item is detached and on the CPU; `xb` and `yb` are the learner's tuples, and `pred` /
    `loss` are None for a batch cancelled before them (`loss` for unlabelled data too). `data` is
    emptied at the start of each fit; a `validate` / `get_preds` outside a fit appends to it.
    """

    def __init__(self):
        self.data = L()

    def before_fit(self) -> None:
        self.data = L()

    def after_batch(self) -> None:
        self.data.append(_detached((self.xb, self.yb, self.pred, self.loss)))


class FetchPredsCallback(Callback):
    """Fetches predictions in the middle of training: after each validation, `learn.get_preds`
    over `dl` (default: `dls[ds_idx]`), kept in `self.preds` (fastai's arguments). `cbs` are
    callbacks taken out of the learner while it fetches; this callback sits the fetch out itself."""

    sits_out = ("validate",)

    def __init__(self, ds_idx: int = 1, dl=None, with_input: bool = False, with_decoded: bool = False, cbs=None,
                 reorder: bool = True):
        self.ds_idx, self.dl, self.with_input, self.with_decoded = ds_idx, dl, with_input, with_decoded
        self.reorder, self.taken_out = reorder, as_list(cbs)
        self.preds = None

    def after_validate(self) -> None:
        with self.learn.removed_cbs(self.taken_out):
            self.preds = self.learn.get_preds(ds_idx=self.ds_idx, dl=self.dl, with_input=self.with_input,
                                              with_decoded=self.with_decoded, inner=True, reorder=self.reorder)


class GatherPredsCallback(Callback):
    """Built in: collects predictions and targets during validation, for `Learner.get_preds`;
    with `with_input` the inputs too, with `with_loss` each item's loss (the loss then has to be
    unreduced: `learn.loss_not_reduced()`)."""

    run_train = False

    def __init__(self, with_input: bool = False, with_loss: bool = False):
        self.with_input, self.with_loss = with_input, with_loss
        self.preds, self.targs, self.inputs, self.losses = [], [], [], []

    def before_validate(self) -> None:
        self.preds, self.targs, self.inputs, self.losses = [], [], [], []

    def after_batch(self) -> None:
        learn = self.learn
        if learn.pred is None:  # a batch cancelled before its prediction
            return
        self.preds.append(learn.pred.detach())
        if learn.yb:
            self.targs.append(tuple(y.detach() for y in learn.yb))
        if self.with_input:
            self.inputs.append(tuple(x.detach() for x in learn.xb))
        if self.with_loss and learn.loss is not None:
            bs = len(learn.pred)
            loss = learn.loss if learn.loss.numel() == bs else learn.loss.reshape(bs, -1).mean(1)
            self.losses.append(loss.detach())

    def sync(self) -> None:
        """Under torch.distributed: every process's collections, gathered in rank order."""
        def gathered(ts):
            t = all_gather_cat(ts)
            return [t] if t is not None else []
        def gathered_tuples(bs, n):  # every rank takes part, even one without a batch (n says how many)
            return [tuple(all_gather_cat([b[k] for b in bs]) for k in range(n))]
        self.preds, self.losses = gathered(self.preds), gathered(self.losses)
        n_targs = max(all_gather_object(len(self.targs[0]) if self.targs else 0))  # a rank may have no batch
        self.targs = gathered_tuples(self.targs, n_targs) if n_targs else []
        if self.with_input:
            self.inputs = gathered_tuples(self.inputs, self.learn.n_inp)

    def result(self):
        """All predictions and targets, concatenated, on the CPU. The targets are one tensor, a
        tuple of them for several (as `learn.yb`), or None for unlabelled data."""
        return torch.cat(self.preds).cpu(), _joined(self.targs) if self.targs else None

    def all_tensors(self) -> list:
        """fastai's order: [inputs (with_input), preds, targets, losses (with_loss)], on the CPU;
        the inputs are one tensor, or a tuple of them for several inputs."""
        preds, targs = self.result()
        out = [preds, targs]
        if self.with_input:
            out.insert(0, _joined(self.inputs))
        if self.with_loss:
            out.append(torch.cat(self.losses).cpu() if self.losses else None)
        return out


def _joined(batches: list[tuple]):
    """Batches of tuples of tensors joined position by position, on the CPU: one tensor when the
    tuples hold one, else a tuple of them."""
    joined = tuple(torch.cat([b[k] for b in batches]).cpu() for k in range(len(batches[0])))
    return joined[0] if len(joined) == 1 else joined


# ---------------------------------------------------------------- Learner.get_preds
def pass_loader(learn, ds_idx, dl, reorder: bool = True):
    """The loader of a prediction pass: `dl`, else `learn.dls[ds_idx]`; read in order when `reorder`."""
    if dl is None and not isinstance(ds_idx, int):
        dl, ds_idx = ds_idx, 1  # minilearn's validate(dl) / get_preds(dl), from before ds_idx came first
    if dl is None:
        check_int("ds_idx", ds_idx, low=0)
        if ds_idx >= len(learn.dls):
            raise ValueError(f"ds_idx: the DataLoaders have no loader {ds_idx} (they hold {len(learn.dls)}); "
                             "pass dl=")
        dl = learn.dls[ds_idx]
    dl = as_loader("dl", dl)
    return dl.new(shuffle=False, drop_last=False) if reorder and dl.shuffle and dl.torch_loader is None else dl


def get_preds(learn, ds_idx=1, dl=None, with_input: bool = False, with_decoded: bool = False,
              with_loss: bool = False, act: Callable | None = None, reorder: bool = True, cbs=None) -> tuple:
    """`Learner.get_preds`: one side pass under a GatherPredsCallback, then fastai's tuple, the
    activation and decoding taken from the loss when it has them."""
    gather = GatherPredsCallback(with_input=with_input, with_loss=with_loss)
    with not_reduced(learn.loss_func) if with_loss else contextlib.nullcontext():
        learn.side_pass(pass_loader(learn, ds_idx, dl, reorder), [gather] + as_list(cbs))
    res, i = gather.all_tensors(), 1 if with_input else 0
    act = act if act is not None else getattr(learn.loss_func, "activation", None)
    if act is not None:
        res[i] = act(res[i])
    if with_decoded:
        decodes = getattr(learn.loss_func, "decodes", None)
        res.insert(i + 2, decodes(res[i]) if decodes is not None else res[i])
    return tuple(res)

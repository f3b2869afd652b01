"""Callbacks around predictions: Monte-Carlo dropout at inference, and collecting every batch.

`MCDropoutCallback` keeps dropout active while the rest of the model is in eval mode, so that
several `get_preds` passes sample different sub-networks and their spread estimates the model's
uncertainty. `CollectDataCallback` is a debugging aid that keeps what the loop saw at each batch.
`FetchPredsCallback` runs `get_preds` after each validation of a fit.
"""

from __future__ import annotations

import torch
from fastcore.foundation import L
from torch import nn

from minilearn.callback import Callback
from minilearn.checks import as_list


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

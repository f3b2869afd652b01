"""Metrics for segmentation (a class per pixel): foreground accuracy, Dice, multi-class Dice, Jaccard.

The predictions are scores (N, C, *spatial) with the classes on `axis`; the targets are class
indices (N, *spatial) or (N, 1, *spatial). The counts behind Dice and Jaccard are summed over
every batch (and every process under torch.distributed), so the value is the metric of the whole
validation set, not a mean of per-batch values. Names, arguments and values are fastai 2.8's.
"""

from __future__ import annotations

import math

from torch import Tensor

from minilearn.distributed import all_gather_object, all_reduce_sum
from minilearn.metrics import Metric, flatten_check

__all__ = ["Dice", "DiceMulti", "JaccardCoeff", "foreground_acc"]


def foreground_acc(pred: Tensor, targ: Tensor, bkg_idx: int = 0, axis: int = 1) -> Tensor:
    """Accuracy over the pixels whose target is not the background class `bkg_idx`."""
    targ = targ.squeeze(1).as_subclass(Tensor)
    keep = targ != bkg_idx
    return (pred.argmax(dim=axis).as_subclass(Tensor)[keep] == targ[keep]).float().mean()


class Dice(Metric):
    """Dice coefficient 2|A∩B| / (|A| + |B|) of the predicted class (argmax along `axis`) and the
    target, both 0/1 masks (binary segmentation), over the whole validation set."""

    def __init__(self, axis: int = 1):
        self.axis = axis
        self.reset()

    def reset(self) -> None:
        self.inter, self.union = 0.0, 0.0

    def accumulate(self, learn) -> None:
        pred, targ = flatten_check(learn.pred.detach().argmax(dim=self.axis), learn.yb[0].detach())
        self.inter += (pred * targ).float().sum().item()
        self.union += (pred + targ).float().sum().item()

    def sync(self) -> None:
        """Every process's counts added up, so each holds the whole pass's."""
        self.inter, self.union = all_reduce_sum(self.inter, self.union)

    @property
    def value(self):
        return 2.0 * self.inter / self.union if self.union > 0 else None


class JaccardCoeff(Dice):
    """Jaccard coefficient |A∩B| / |A∪B| of the predicted and target masks (binary segmentation)."""

    @property
    def value(self):
        return self.inter / (self.union - self.inter) if self.union > 0 else None


class DiceMulti(Metric):
    """Dice coefficient of each class (one class against the rest), averaged over the classes
    that occur in the predictions or the targets (fastai's `DiceMulti`)."""

    def __init__(self, axis: int = 1):
        self.axis = axis
        self.reset()

    def reset(self) -> None:
        self.inter: dict[int, float] = {}
        self.union: dict[int, float] = {}

    def accumulate(self, learn) -> None:
        n_classes = learn.pred.shape[self.axis]
        pred, targ = flatten_check(learn.pred.detach().argmax(dim=self.axis), learn.yb[0].detach())
        for c in range(n_classes):
            p, t = pred == c, targ == c
            self.inter[c] = self.inter.get(c, 0.0) + (p & t).sum().item()
            self.union[c] = self.union.get(c, 0.0) + (p.sum() + t.sum()).item()

    def sync(self) -> None:
        """Every process's per-class counts added up (a process that saw no batch adds zeros)."""
        classes = range(max(all_gather_object(len(self.inter))))  # every rank with a batch knows C
        if not classes:
            return
        sums = all_reduce_sum(*[self.inter.get(c, 0.0) for c in classes], *[self.union.get(c, 0.0) for c in classes])
        self.inter = dict(zip(classes, sums[:len(classes)]))
        self.union = dict(zip(classes, sums[len(classes):]))

    @property
    def value(self):
        scores = [2.0 * self.inter[c] / self.union[c] for c in self.inter if self.union[c] > 0]
        return sum(scores) / len(scores) if scores else math.nan if self.inter else None

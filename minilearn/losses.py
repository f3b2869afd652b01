"""Losses that know their activation and decoding: fastai's flattened losses over torch's.

A model's raw output (logits) is what a loss wants, but not what a person wants to read. Each
loss here carries the two steps between them, so a Learner's `get_preds` / `predict` can take
them from the loss instead of asking the user:
- `activation(x)`: the activation the loss fuses into itself (softmax for cross-entropy,
  sigmoid for BCE-with-logits), turning outputs into probabilities;
- `decodes(x)`: probabilities to the target's format (argmax for classes, `x > thresh` for
  multi-label); for regression both are the identity.
A plain `nn` loss or any function `loss(pred, targ)` works in a Learner as well; these are only
needed for the decoding.

The `...Flat` losses wrap a torch loss class (`BaseLoss`): they move the class `axis` of the
predictions last and flatten predictions and targets, so an (N, C, H, W) segmentation output
and its (N, H, W) targets go to `nn.CrossEntropyLoss` as (N*H*W, C) and (N*H*W,). Every loss
has a `reduction` that can be read and set ('mean', 'sum' or 'none'): setting it to 'none'
gives one loss per item, which is how a Learner gets per-item losses (fastai's
`loss_not_reduced`).

`DiceLoss` is not a wrapped torch loss: it scores how well the softmax of a segmentation output
overlaps the one-hot masks of its class-index targets, one score per image and class, so its
'none' reduction gives an (N, C) tensor rather than one value per pixel.

Where these differ from fastai, on purpose:
- `axis` is counted on the predictions, also when it is negative, and the targets are moved the
  same way only when they have that dimension: (N, C, L) predictions with (N, L) targets line up
  for `axis=1` and `axis=-2` alike (fastai misaligns the targets for `axis=-2`, and errors for
  (N, C) predictions with (N,) targets and `axis=1`).
- `LabelSmoothingCrossEntropyFlat` applies its softmax / argmax over `axis` (fastai always uses
  the last dimension); the unflattened `LabelSmoothingCrossEntropy` and `FocalLoss` use the class
  dimension 1, as their formula does, and `FocalLoss` has them at all (fastai's has neither).
- A class `weight` of the two module losses is a buffer, so `loss.to(device)` moves it.
- uint8 targets are made long as int8/16/32 ones are (torch's cross-entropy rejects uint8).
- The `...Flat` constructors take keyword arguments only; `BaseLoss` passes its positional
  arguments on to the wrapped loss class.
- `DiceLoss` one-hot encodes the targets on its own `axis` and sums over every dimension but the
  batch (0) and that axis, so channels-last predictions work with `axis=-1` (fastai always puts
  the one-hot masks on dimension 1 and sums from dimension 2 on, which only fits `axis=1`). Its
  sums are taken in float32 for half-precision predictions (fastai's overflow float16 on images
  of more than about 32,000 pixels, and give a loss of 1 for every class), and the result is
  given back in the predictions' dtype. (N, C) predictions, with nothing besides the batch and
  the classes, count each item as a one-pixel image (fastai's empty list of dimensions to sum
  over makes torch sum the whole batch into one value).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilearn.checks import ArgumentTypeError, check_bool, check_callable, check_int, check_number

__all__ = [
    "BaseLoss", "CrossEntropyLossFlat", "BCEWithLogitsLossFlat", "BCELossFlat", "MSELossFlat", "L1LossFlat",
    "LabelSmoothingCrossEntropy", "LabelSmoothingCrossEntropyFlat", "FocalLoss", "FocalLossFlat", "DiceLoss",
]

REDUCTIONS = ("mean", "sum", "none")

# Integer targets torch's class-index losses do not take; they are made long before the loss.
_SMALL_INTS = (torch.uint8, torch.int8, torch.int16, torch.int32)


def check_reduction(value: Any, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    """`value` if it is one of the `allowed` reductions, else an error naming `reduction`."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"reduction: expected one of {', '.join(map(repr, allowed))}, "
                                f"got {value!r} ({type(value).__name__})")
    if value not in allowed:
        raise ValueError(f"reduction: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _check_tensor_or_none(name: str, value: Any) -> Tensor | None:
    """`value` if it is a tensor or None (a class weight, a pos_weight), else an error naming `name`."""
    if value is not None and not isinstance(value, Tensor):
        raise ArgumentTypeError(f"{name}: expected a tensor or None, got {value!r} ({type(value).__name__})")
    return value


def _allowed_reductions(loss_cls: Any) -> tuple[str, ...]:
    """The reductions `loss_cls` takes: ours, and 'batchmean' for torch's KL divergence."""
    if isinstance(loss_cls, type) and issubclass(loss_cls, nn.KLDivLoss):
        return REDUCTIONS + ("batchmean",)
    return REDUCTIONS


def checked_reduction(doc: str) -> property:
    """A `reduction` attribute checked when set (kept as `_reduction`), for a loss's class body."""
    def get(self) -> str:
        return self._reduction

    def set(self, value: str) -> None:
        self._reduction = check_reduction(value)

    return property(get, set, doc=doc)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    """Per-item `loss` reduced as torch's losses do: 'mean', 'sum', or kept ('none')."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _class_dim(x: Tensor) -> int:
    """The class dimension of unflattened logits: 1 for a batch, as in `F.cross_entropy`; -1 for one item."""
    return 1 if x.ndim > 1 else -1


class BaseLoss:
    """`loss_cls(*args, **kwargs)` applied to predictions and targets moved and flattened along `axis`.

    - `axis`: the class axis of the predictions; it is moved last before the loss.
    - `flatten`: flatten predictions to (-1, C) (or (-1,) when not `is_2d`) and targets to (-1,).
    - `floatify`: make the targets float (float16 ones stay as they are, for mixed precision).
    - `is_2d`: whether flattened predictions keep the class axis (class-index losses) or not
      (element-wise losses such as MSE and BCE).
    `activation` and `decodes` are the identity here; subclasses say what their loss fuses.
    """

    def __init__(self, loss_cls: Callable, *args: Any, axis: int = -1, flatten: bool = True,
                 floatify: bool = False, is_2d: bool = True, **kwargs: Any):
        check_callable("loss_cls", loss_cls, "a loss class such as nn.CrossEntropyLoss")
        self.axis = check_int("axis", axis)
        self.flatten = check_bool("flatten", flatten)
        self.floatify = check_bool("floatify", floatify)
        self.is_2d = check_bool("is_2d", is_2d)
        self._reductions = _allowed_reductions(loss_cls)
        if "reduction" in kwargs:
            check_reduction(kwargs["reduction"], self._reductions)
        self.func = loss_cls(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FlattenedLoss of {self.func}"

    @property
    def reduction(self) -> str:
        """The wrapped loss's reduction; set it to 'none' for one loss per item."""
        return self.func.reduction

    @reduction.setter
    def reduction(self, value: str) -> None:
        check_reduction(value, self._reductions)
        if not hasattr(self.func, "reduction"):
            raise AttributeError(f"reduction: the wrapped {type(self.func).__name__} has no reduction to set")
        self.func.reduction = value

    def _class_axis_last(self, x: Tensor, axis: int) -> Tensor:
        """`x` with dimension `axis` moved last, contiguous so it can be flattened by a view."""
        return x.transpose(axis, -1).contiguous()

    def __call__(self, inp: Tensor, targ: Tensor, **kwargs: Any) -> Tensor:
        """The wrapped loss of `inp` and `targ`, after moving the class axis last and flattening."""
        # The axis is counted on the predictions; targets without that dimension (class indices
        # for (N, C) or (N, C, L) predictions) are already in the order the moved predictions are.
        if not -inp.ndim <= self.axis < inp.ndim:
            raise IndexError(f"axis: {self.axis} is not a dimension of the predictions, of shape {tuple(inp.shape)}")
        axis = self.axis % inp.ndim
        inp = self._class_axis_last(inp, axis)
        if axis < targ.ndim:
            targ = self._class_axis_last(targ, axis)
        if self.floatify and targ.dtype != torch.float16:
            targ = targ.float()
        if targ.dtype in _SMALL_INTS:
            targ = targ.long()
        if self.flatten:
            inp = inp.view(-1, inp.shape[-1]) if self.is_2d else inp.view(-1)
            targ = targ.view(-1)
        return self.func(inp, targ, **kwargs)

    def activation(self, x: Tensor) -> Tensor:
        """Model output to probabilities: the identity, for a loss that fuses no activation."""
        return x

    def decodes(self, x: Tensor) -> Tensor:
        """Probabilities to the target's format: the identity here."""
        return x

    def to(self, device: torch.device | str) -> BaseLoss:
        """Moves the wrapped loss's tensors (a class weight) to `device`; returns self."""
        if isinstance(self.func, nn.Module):
            self.func.to(device)
        return self


class CrossEntropyLossFlat(BaseLoss):
    """`nn.CrossEntropyLoss` over predictions flattened along the class `axis`: softmax, then argmax."""

    y_int = True  # the targets are class indices (fastai's flag, read by MixUp-style callbacks)

    def __init__(self, *, axis: int = -1, weight: Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean", flatten: bool = True, floatify: bool = False, **kwargs: Any):
        _check_tensor_or_none("weight", weight)
        check_int("ignore_index", ignore_index)
        super().__init__(nn.CrossEntropyLoss, axis=axis, flatten=flatten, floatify=floatify, weight=weight,
                         ignore_index=ignore_index, reduction=reduction, **kwargs)

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over `axis`: the activation cross-entropy fuses."""
        return F.softmax(x, dim=self.axis)

    def decodes(self, x: Tensor) -> Tensor:
        """The most likely class along `axis`."""
        return x.argmax(dim=self.axis)


class BCEWithLogitsLossFlat(BaseLoss):
    """`nn.BCEWithLogitsLoss` over flattened, float targets: sigmoid, then `x > thresh` (multi-label).

    `flatten` defaults to True, and to False when `pos_weight` is given: a per-class pos_weight
    needs the class axis kept, so `flatten=True` with a pos_weight is an error.
    """

    def __init__(self, *, axis: int = -1, thresh: float = 0.5, weight: Tensor | None = None,
                 pos_weight: Tensor | None = None, reduction: str = "mean", flatten: bool | None = None,
                 floatify: bool = True, **kwargs: Any):
        thresh = check_number("thresh", thresh)
        _check_tensor_or_none("weight", weight)
        _check_tensor_or_none("pos_weight", pos_weight)
        if flatten is None:
            flatten = pos_weight is None
        elif check_bool("flatten", flatten) and pos_weight is not None:
            raise ValueError("flatten: must be False when pos_weight is given (a per-class pos_weight needs "
                             "the class axis); leave it out or pass flatten=False")
        super().__init__(nn.BCEWithLogitsLoss, axis=axis, flatten=flatten, floatify=floatify, is_2d=False,
                         weight=weight, pos_weight=pos_weight, reduction=reduction, **kwargs)
        self.thresh = thresh

    def activation(self, x: Tensor) -> Tensor:
        """Sigmoid: the activation BCE-with-logits fuses."""
        return torch.sigmoid(x)

    def decodes(self, x: Tensor) -> Tensor:
        """True where the probability is above `thresh`."""
        return x > self.thresh


class BCELossFlat(BaseLoss):
    """`nn.BCELoss` (on probabilities) over flattened predictions and float targets."""

    def __init__(self, *, axis: int = -1, weight: Tensor | None = None, reduction: str = "mean",
                 flatten: bool = True, floatify: bool = True, **kwargs: Any):
        _check_tensor_or_none("weight", weight)
        super().__init__(nn.BCELoss, axis=axis, flatten=flatten, floatify=floatify, is_2d=False, weight=weight,
                         reduction=reduction, **kwargs)


class MSELossFlat(BaseLoss):
    """`nn.MSELoss` over flattened predictions and float targets (regression: no activation)."""

    def __init__(self, *, axis: int = -1, reduction: str = "mean", flatten: bool = True, floatify: bool = True,
                 **kwargs: Any):
        super().__init__(nn.MSELoss, axis=axis, flatten=flatten, floatify=floatify, is_2d=False,
                         reduction=reduction, **kwargs)


class L1LossFlat(BaseLoss):
    """`nn.L1Loss` over flattened predictions and float targets (regression: no activation)."""

    def __init__(self, *, axis: int = -1, reduction: str = "mean", flatten: bool = True, floatify: bool = True,
                 **kwargs: Any):
        super().__init__(nn.L1Loss, axis=axis, flatten=flatten, floatify=floatify, is_2d=False,
                         reduction=reduction, **kwargs)


class _ClassLoss(nn.Module):
    """Shared by the two module losses: a checked `reduction`, a class `weight` buffer, softmax/argmax."""

    y_int = True  # the targets are class indices (fastai's flag, read by MixUp-style callbacks)

    def __init__(self, weight: Tensor | None, reduction: str):
        _check_tensor_or_none("weight", weight)
        check_reduction(reduction)
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = reduction

    reduction = checked_reduction("'mean', 'sum' or 'none' (one loss per item).")

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over the class dimension: the activation cross-entropy fuses."""
        return F.softmax(x, dim=_class_dim(x))

    def decodes(self, x: Tensor) -> Tensor:
        """The most likely class."""
        return x.argmax(dim=_class_dim(x))


class LabelSmoothingCrossEntropy(_ClassLoss):
    """Cross-entropy against targets smoothed by `eps`: (1 - eps) on the true class, eps spread over all.

    The loss is `eps / C * sum_c(-log p_c) + (1 - eps) * nll(log p, targ)` (fastai's formula:
    the class `weight` applies to the nll term only). Logits are (N, C, ...), as for `F.cross_entropy`.
    """

    def __init__(self, eps: float = 0.1, weight: Tensor | None = None, reduction: str = "mean"):
        eps = check_number("eps", eps, low=0, high=1, high_open=True)
        super().__init__(weight, reduction)
        self.eps = eps

    def extra_repr(self) -> str:
        return f"eps={self.eps}, reduction={self.reduction!r}"

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """The smoothed loss of logits `output` (N, C, ...) for class indices `target`."""
        n_classes = output.size(1)
        log_preds = F.log_softmax(output, dim=1)
        # The smoothing term is a sum over classes (divided by C below), reduced like the nll term.
        if self.reduction == "sum":
            smooth = -log_preds.sum()
        else:
            smooth = _reduce(-log_preds.sum(dim=1), self.reduction)
        nll = F.nll_loss(log_preds, target.long(), weight=self.weight, reduction=self.reduction)
        return smooth * self.eps / n_classes + (1 - self.eps) * nll


class FocalLoss(_ClassLoss):
    """Cross-entropy scaled by (1 - p_t) ** gamma, so well-classified items count less (Lin et al., 2017).

    `gamma=0` is plain cross-entropy; the paper's class balance `alpha` is the `weight` argument.
    """

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None, reduction: str = "mean"):
        gamma = check_number("gamma", gamma, low=0)
        super().__init__(weight, reduction)
        self.gamma = gamma

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}"

    def forward(self, inp: Tensor, targ: Tensor) -> Tensor:
        """The focal loss of logits `inp` (N, C, ...) for class indices `targ`."""
        ce = F.cross_entropy(inp, targ, weight=self.weight, reduction="none")
        p_t = torch.exp(-ce)  # the probability of the true class (weighted when `weight` is given)
        return _reduce((1 - p_t) ** self.gamma * ce, self.reduction)


class LabelSmoothingCrossEntropyFlat(BaseLoss):
    """`LabelSmoothingCrossEntropy` over predictions flattened along the class `axis`: softmax, then argmax."""

    y_int = True  # the targets are class indices (fastai's flag, read by MixUp-style callbacks)

    def __init__(self, *, axis: int = -1, eps: float = 0.1, weight: Tensor | None = None, reduction: str = "mean",
                 flatten: bool = True, floatify: bool = False):
        super().__init__(LabelSmoothingCrossEntropy, axis=axis, flatten=flatten, floatify=floatify, eps=eps,
                         weight=weight, reduction=reduction)

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over `axis`: the activation the loss fuses."""
        return F.softmax(x, dim=self.axis)

    def decodes(self, x: Tensor) -> Tensor:
        """The most likely class along `axis`."""
        return x.argmax(dim=self.axis)


class FocalLossFlat(BaseLoss):
    """`FocalLoss` over predictions flattened along the class `axis`: softmax, then argmax."""

    y_int = True  # the targets are class indices (fastai's flag, read by MixUp-style callbacks)

    def __init__(self, *, gamma: float = 2.0, axis: int = -1, weight: Tensor | None = None, reduction: str = "mean",
                 flatten: bool = True, floatify: bool = False):
        super().__init__(FocalLoss, axis=axis, flatten=flatten, floatify=floatify, gamma=gamma, weight=weight,
                         reduction=reduction)

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over `axis`: the activation the loss fuses."""
        return F.softmax(x, dim=self.axis)

    def decodes(self, x: Tensor) -> Tensor:
        """The most likely class along `axis`."""
        return x.argmax(dim=self.axis)


class DiceLoss:
    """One minus the Dice coefficient of softmax predictions and one-hot targets, per image and class.

    `loss(pred, targ)` takes raw scores `pred` of shape (N, C, *spatial), the classes on `axis`,
    and class indices `targ` of shape (N, *spatial) (not one-hot: the masks are made here). For
    each image n and class c, with p the softmax of `pred` over `axis` and t the mask of class c,
    both summed over the spatial dimensions:

        dice[n, c] = (2 * sum(p * t) + smooth) / (sum(p + t) + smooth),  loss = 1 - dice

    so a class that is absent from both the target and the prediction scores a loss near 0 and
    one predicted where it is absent (or missed where it is present) near 1.

    - `axis`: the class axis of the predictions (negative counts from the end); the batch is
      dimension 0, and every other dimension is summed over.
    - `smooth`: added to the numerator and the denominator, so empty classes give 0/0 no more.
    - `reduction`: 'sum' (the default, as in fastai), 'mean' or 'none' (an (N, C) tensor).
    - `square_in_union`: use sum(p ** 2 + t) as the denominator; p ** 2 <= p, so the loss is
      lower for unsure predictions and its gradient steeper.
    """

    def __init__(self, axis: int = 1, smooth: float = 1e-6, reduction: str = "sum", square_in_union: bool = False):
        self.axis = check_int("axis", axis)
        self.smooth = check_number("smooth", smooth, low=0)
        self.reduction = reduction
        self.square_in_union = check_bool("square_in_union", square_in_union)

    def __repr__(self) -> str:
        return (f"DiceLoss(axis={self.axis}, smooth={self.smooth}, reduction={self.reduction!r}, "
                f"square_in_union={self.square_in_union})")

    reduction = checked_reduction("'sum', 'mean' or 'none' (one loss per image and class).")

    def _class_axis(self, pred: Tensor) -> int:
        """`axis` as a non-negative dimension of `pred`: an error if it is out of range or the batch."""
        if not -pred.ndim <= self.axis < pred.ndim:
            raise IndexError(f"axis: {self.axis} is not a dimension of the predictions, of shape {tuple(pred.shape)}")
        axis = self.axis % pred.ndim
        if axis == 0:
            raise ValueError(f"axis: {self.axis} is the batch dimension of the predictions, of shape "
                             f"{tuple(pred.shape)}; the classes go on another one, (N, C, *spatial) for axis=1")
        return axis

    def __call__(self, pred: Tensor, targ: Tensor) -> Tensor:
        """The Dice loss of raw scores `pred` for class-index targets `targ`, reduced by `reduction`."""
        axis = self._class_axis(pred)
        n_classes = pred.shape[axis]
        expected = pred.shape[:axis] + pred.shape[axis + 1:]
        if targ.shape != expected:
            hint = ("; they look one-hot: DiceLoss makes the masks itself, so pass the class indices"
                    if targ.shape == pred.shape else "")
            raise ValueError(f"targ: expected class indices of shape {tuple(expected)} for predictions of shape "
                             f"{tuple(pred.shape)} (classes on axis {axis}), so that their one-hot masks have the "
                             f"predictions' shape; got shape {tuple(targ.shape)}{hint}")
        masks = self._one_hot(targ, n_classes, axis=axis)
        # Half-precision sums overflow over large images; float32 (or float64) holds them.
        probs = self.activation(pred).to(torch.promote_types(pred.dtype, torch.float32))
        sum_dims = [d for d in range(pred.ndim) if d not in (0, axis)]

        def total(x: Tensor) -> Tensor:  # over the spatial dimensions, if any (dim=[] would sum all)
            return x.sum(dim=sum_dims) if sum_dims else x

        inter = total(probs * masks)
        union = total(probs ** 2 + masks) if self.square_in_union else total(probs + masks)
        loss = 1 - (2 * inter + self.smooth) / (union + self.smooth)
        return _reduce(loss, self.reduction).to(pred.dtype)

    @staticmethod
    def _one_hot(x: Tensor, classes: int, axis: int = 1) -> Tensor:
        """One binary (int64) mask per class of the class indices `x`, stacked as a new dimension `axis`.

        Mask c is 1 where `x == c`: an index outside 0..classes-1 (an 'ignore' label such as 255)
        is 0 in every mask.
        """
        classes = check_int("classes", classes, low=1)
        axis = check_int("axis", axis)
        if not -(x.ndim + 1) <= axis <= x.ndim:
            raise IndexError(f"axis: {axis} is not a place for a new dimension in targets of shape {tuple(x.shape)}")
        axis %= x.ndim + 1
        shape = [1] * (x.ndim + 1)
        shape[axis] = classes
        labels = torch.arange(classes, device=x.device).view(shape)
        return (x.unsqueeze(axis) == labels).long()

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over `axis`: the probabilities the loss scores."""
        return F.softmax(x, dim=self.axis)

    def decodes(self, x: Tensor) -> Tensor:
        """The most likely class along `axis`: a class-index mask of the targets' shape."""
        return x.argmax(dim=self.axis)


@contextlib.contextmanager
def not_reduced(loss_func):
    """Inside the block `loss_func` gives one value per item (its `reduction` set to 'none'), for
    `Learner.loss_not_reduced` and `get_preds(with_loss=True)`; put back on leaving."""
    if not hasattr(loss_func, "reduction"):
        raise TypeError(f"loss_func: {type(loss_func).__name__} has no `reduction` to switch off; "
                        "use a torch loss or one of minilearn.losses for per-item losses")
    old, loss_func.reduction = loss_func.reduction, "none"
    try:
        yield loss_func
    finally:
        loss_func.reduction = old

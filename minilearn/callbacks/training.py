"""Callbacks that change how training runs: clipping, accumulation, mixed precision, short epochs,
frozen BatchNorm statistics, the channels-last memory format and resetting stateful models."""

from __future__ import annotations

import torch
from torch import nn

from torch.nn.parallel import DistributedDataParallel

from minilearn.callback import (
    Callback, CancelBatchException, CancelStepException, CancelTrainException, CancelValidException,
)
from minilearn.checks import check_bool, check_int, check_number
from minilearn.torch_basics import find_bs


class MixedPrecision(Callback):
    """Runs the forward pass and loss under `torch.autocast`, in bf16 on the CPU or fp16 on CUDA.

    With fp16 the loss is scaled for the backward pass by a `torch.amp.GradScaler`, which
    unscales the gradients before the step and skips a step whose gradients overflowed (as
    fastai's MixedPrecision). `dtype` overrides the choice (torch.bfloat16 or torch.float16).
    Predictions are turned back to float32 before the loss and the metrics see them. Other keyword
    arguments (`init_scale`, `growth_factor`, ...) go to the GradScaler, as in fastai.
    """

    order = 10
    run_valid = True

    def __init__(self, dtype: torch.dtype | None = None, **scaler_kwargs):
        if dtype not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype: expected None, torch.float16 or torch.bfloat16, got {dtype}")
        unknown = set(scaler_kwargs) - {"init_scale", "growth_factor", "backoff_factor", "growth_interval"}
        if unknown:
            raise TypeError(f"{sorted(unknown)[0]}: not a GradScaler setting; MixedPrecision takes dtype and "
                            "init_scale, growth_factor, backoff_factor, growth_interval")
        self.dtype, self.scaler_kwargs = dtype, scaler_kwargs
        self.autocast = None
        self.scaler = None
        self._entered = self._stepped = False

    def before_fit(self) -> None:
        self._setup()

    def _setup(self) -> None:
        device_type = self.learn.device.type if self.learn.device is not None else "cpu"
        dtype = self.dtype or (torch.float16 if device_type == "cuda" else torch.bfloat16)
        self.autocast = torch.autocast(device_type, dtype=dtype)
        self.scaler = torch.amp.GradScaler(device_type, enabled=(dtype == torch.float16 and device_type == "cuda"),
                                           **self.scaler_kwargs)
        self._stepped = False

    def state_dict(self) -> dict:
        """The loss scaler's state (its scale and growth count; empty when it is off, as on the CPU)."""
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None and self.scaler.is_enabled() else {}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def before_batch(self) -> None:
        if self.autocast is None:  # validate() / get_preds() before any fit
            self._setup()
        self.autocast.__enter__()
        self._entered = True

    def after_pred(self) -> None:
        if self.learn.pred.is_floating_point() and self.learn.pred.dtype != torch.float32:
            self.learn.pred = self.learn.pred.float()

    def after_loss(self) -> None:
        self._exit()

    def before_backward(self) -> None:
        if self.scaler.is_enabled():
            self.learn.loss_grad = self.scaler.scale(self.learn.loss_grad)

    def before_step(self) -> None:
        if not self.scaler.is_enabled():
            return
        # the scaler unscales the gradients and "steps" this callback, standing in for the
        # optimiser, unless a gradient is inf/NaN; the learner's own step then runs or is skipped
        self.skipped = True
        self.scaler.step(self)
        self._stepped = True
        if self.skipped:
            raise CancelStepException()

    @property
    def param_groups(self) -> list[dict]:
        """The optimiser's groups, for the GradScaler (which unscales their gradients)."""
        return self.learn.opt.param_groups

    def step(self, *args, **kwargs) -> None:
        """Called by the GradScaler when the gradients are finite."""
        self.skipped = False

    def after_batch(self) -> None:
        self._exit()  # a batch cancelled before its loss
        # the scale moves once per scaler step, whatever cancelled what afterwards (after_batch
        # always runs); a batch whose step never reached the scaler leaves it alone
        if self._stepped:
            self.scaler.update()
            self._stepped = False

    def cleanup_fit(self) -> None:
        self._exit()  # a fit or validation that raised: never leave autocast switched on
        self._stepped = False

    def _exit(self) -> None:
        if self._entered:
            self.autocast.__exit__(None, None, None)
            self._entered = False


class GradientClip(Callback):
    """Clips the gradients' total norm to `max_norm` before each step."""

    order = MixedPrecision.order + 1  # after the gradients are unscaled

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0):
        self.max_norm = check_number("max_norm", max_norm, low=0, low_open=True)
        self.norm_type = norm_type

    def before_step(self) -> None:
        nn.utils.clip_grad_norm_(self.learn.model.parameters(), self.max_norm, self.norm_type)


class GradientAccumulation(Callback):
    """Accumulates gradients over `n_acc` samples before each step (fastai's: counted in samples).

    The loss is divided so that the accumulated gradient is the mean over those samples; batches
    that do not complete `n_acc` end before the step (and before zero_grad).
    """

    order = MixedPrecision.order - 4
    run_valid = False

    def __init__(self, n_acc: int = 32):
        self.n_acc = check_int("n_acc", n_acc, low=1)  # a number of samples
        self.count = 0

    def before_fit(self) -> None:
        self.count = 0

    def state_dict(self) -> dict:
        """The samples counted since the last step, and the gradients accumulated over them."""
        grads = [None if p.grad is None else p.grad.detach().clone() for p in self.learn.model.parameters()] \
            if self.count else []
        return {"count": self.count, "grads": grads}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        for p, g in zip(self.learn.model.parameters(), state["grads"]):
            p.grad = None if g is None else g.to(p.device, p.dtype).clone()

    def _global_bs(self) -> int:
        # under DDP each process holds part of the batch; count the whole batch on every one,
        # so all processes step together
        dl = self.learn.dl
        return dl.global_batch_size(self.learn.iter) if hasattr(dl, "global_batch_size") else find_bs(self.learn.yb)

    def after_loss(self) -> None:
        self.learn.loss_grad = self.learn.loss_grad * (self._global_bs() / self.n_acc)

    def before_step(self) -> None:
        self.count += self._global_bs()
        if self.count < self.n_acc:
            raise CancelBatchException()  # keep the gradients: no step, no zero_grad
        self.count = 0


class ShortEpochCallback(Callback):
    """Cuts each training phase (and validation, if `short_valid`) short after `pct` of its batches,
    for a quick smoke test of a whole fit.

    As fastai's, a phase goes on while `iter / n_iter < pct` and stops after the first batch that
    reaches `pct`: `ceil(pct * n_iter) + 1` batches, at most `n_iter` (`pct=1` runs them all). It
    cancels with CancelTrainException / CancelValidException, so `after_train` / `after_validate`
    still run and the fit goes on to the next phase.
    """

    # last at after_batch (fastai's runs at 0): the Recorder, the table and get_preds' gatherer
    # all see the batch a phase ends on before the cancel skips the callbacks after this one
    order = 100

    def __init__(self, pct: float = 0.01, short_valid: bool = True):
        self.pct = check_number("pct", pct, low=0, high=1, low_open=True)
        self.short_valid = check_bool("short_valid", short_valid)

    def after_batch(self) -> None:
        if self.iter / self.n_iter < self.pct:
            return
        if self.training:
            raise CancelTrainException()
        if self.short_valid:
            raise CancelValidException()


# The layers `set_bn_eval` freezes: fastai's BatchNorm types, and the one DDP converts them to.
bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def set_bn_eval(model: nn.Module, use_eval: bool = True) -> None:
    """Put the frozen BatchNorm layers of `model` in eval mode (train mode if not `use_eval`).

    Frozen means fastai's: a BatchNorm layer whose parameters all have `requires_grad=False`. A
    BatchNorm without parameters (`affine=False`) is left alone: nothing says it is frozen.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, bn_types) and params and not any(p.requires_grad for p in params):
            m.train(not use_eval)


class BnFreeze(Callback):
    """Keeps the running statistics of frozen BatchNorm layers fixed while the rest trains.

    Freezing a pretrained body (`requires_grad=False`, e.g. `Learner(train_bn=False)` then
    `freeze()`) stops its weights, but BatchNorm in train mode still moves its running mean and
    variance; before each training phase this puts those layers in eval mode (see `set_bn_eval`).
    """

    order = 0  # after TrainEvalCallback (-10), whose before_train puts the whole model in train mode

    def before_train(self) -> None:
        set_bn_eval(self.learn.model)


def to_channels_last(xb: tuple) -> tuple:
    """The batch's inputs with each 4-d tensor in `torch.channels_last` memory format."""
    return tuple(x.contiguous(memory_format=torch.channels_last)
                 if isinstance(x, torch.Tensor) and x.ndim == 4 else x for x in xb)


class ChannelsLast(Callback):
    """Trains in PyTorch's channels-last memory format: the model's 4-d weights (convolutions) and
    each batch's 4-d inputs, which is faster for convolutions on recent GPUs (CPU works too).

    fastai's `to_channelslast()` also adds mixed precision; this one only changes the memory
    format: add `MixedPrecision()` beside it for the full speed-up on a GPU.
    """

    order = -1  # as fastai's: before callbacks that wrap or change the model (DDP at 11)

    def before_fit(self) -> None:
        self.learn.model.to(memory_format=torch.channels_last)

    def before_validate(self) -> None:
        # also for validate() / get_preds() on their own, which have no before_fit
        self.learn.model.to(memory_format=torch.channels_last)

    def before_batch(self) -> None:
        self.learn.xb = to_channels_last(self.learn.xb)


class ModelResetter(Callback):
    """Calls `model.reset()` before training, before validation and after the fit, as fastai's:
    for a model that keeps state between batches (an RNN's hidden state), so no phase starts from
    the state another left. A model without a `reset` method is left alone."""

    order = 0  # after TrainEvalCallback (-10) has set the mode the phase runs in

    def _reset(self) -> None:
        model = self.learn.model
        if isinstance(model, DistributedDataParallel):  # under DDP the user's model is inside
            model = model.module
        reset = getattr(model, "reset", None)
        if callable(reset):
            reset()

    def before_train(self) -> None:
        self._reset()

    def before_validate(self) -> None:
        self._reset()

    def after_fit(self) -> None:
        self._reset()


def set_precision(learn, dtype: torch.dtype | None):
    """`Learner.to_fp16` / `to_bf16` / `to_fp32`: one `MixedPrecision(dtype)` callback, or none for
    `dtype=None`; returns the learner."""
    learn.remove_cb(MixedPrecision)
    if dtype is not None:
        learn.add_cb(MixedPrecision(dtype))
    return learn

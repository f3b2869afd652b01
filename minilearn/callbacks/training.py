"""Callbacks that change how a training step is made: clipping, accumulation, mixed precision."""

from __future__ import annotations

import torch
from torch import nn

from minilearn.callback import Callback, CancelBatchException, CancelStepException
from minilearn.checks import check_int, check_number
from minilearn.metrics import find_bs


class MixedPrecision(Callback):
    """Runs the forward pass and loss under `torch.autocast`, in bf16 on the CPU or fp16 on CUDA.

    With fp16 the loss is scaled for the backward pass by a `torch.amp.GradScaler`, which
    unscales the gradients before the step and skips a step whose gradients overflowed (as
    fastai's MixedPrecision). `dtype` overrides the choice (torch.bfloat16 or torch.float16).
    Predictions are turned back to float32 before the loss and the metrics see them.
    """

    order = 10
    run_valid = True

    def __init__(self, dtype: torch.dtype | None = None):
        if dtype not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype: expected None, torch.float16 or torch.bfloat16, got {dtype}")
        self.dtype = dtype
        self.autocast = None
        self.scaler = None
        self._entered = self._stepped = False

    def before_fit(self) -> None:
        self._setup()

    def _setup(self) -> None:
        device_type = self.learn.device.type if self.learn.device is not None else "cpu"
        dtype = self.dtype or (torch.float16 if device_type == "cuda" else torch.bfloat16)
        self.autocast = torch.autocast(device_type, dtype=dtype)
        self.scaler = torch.amp.GradScaler(device_type, enabled=(dtype == torch.float16 and device_type == "cuda"))
        self._stepped = False

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

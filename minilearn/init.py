"""Initialising a network so its activations keep a healthy scale (course part 2, lesson 11):
`GeneralRelu`, `init_weights` (Kaiming normal) and `lsuv_init` (layer-sequential unit variance).

Lesson 10's diagnosis, in minilearn: train with `ActivationStats` and read `layer_stats(i)` or
`plot_stats()`; activations whose std shrinks layer after layer (or that pile up at zero in
`dead_chart`) train badly. These are the lesson's cures.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilearn.callbacks.hooks import Hook
from minilearn.checks import check_int, check_number
from minilearn.torch_basics import kept_modes, to_device

__all__ = ["GeneralRelu", "init_weights", "lsuv_init"]


class GeneralRelu(nn.Module):
    """ReLU, leaky with slope `leak` below zero (when given), then shifted down by `sub` and capped
    at `maxv` (each when given): the course's activation, whose output can be centred near zero."""

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None):
        super().__init__()
        self.leak = check_number("leak", leak, low=0) if leak is not None else None
        self.sub = check_number("sub", sub) if sub is not None else None
        self.maxv = check_number("maxv", maxv) if maxv is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
        if self.sub is not None:
            x = x - self.sub
        if self.maxv is not None:
            x = x.clamp_max(self.maxv)
        return x

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


_KAIMING_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def init_weights(m: nn.Module, leaky: float = 0.0) -> None:
    """Kaiming-normal weights for a conv or linear layer `m` (other modules are left alone), for an
    activation with negative slope `leaky`: std = sqrt(2 / (1 + leaky^2) / fan_in). Biases are
    left as they are (as in the lesson). Use it as `model.apply(partial(init_weights, leaky=0.1))`."""
    leaky = check_number("leaky", leaky, low=0)
    if isinstance(m, _KAIMING_LAYERS):
        nn.init.kaiming_normal_(m.weight, a=leaky)


def lsuv_init(model: nn.Module, module: nn.Module, xb, *, measure_at: nn.Module | None = None,
              tol: float = 1e-3, max_iter: int = 50) -> tuple[float, float]:
    """LSUV for one layer: run `model` on the batch `xb` and rescale `module`'s weight and shift its
    bias until the output of `measure_at` (default: `module` itself; the lesson measures after the
    activation that follows it) has mean 0 and std 1, within `tol`. Returns the final (mean, std).

    Each round maps the measured output o to (o - mean) / std through the layer (weight /= std,
    bias = (bias - mean) / std), which is exact for the layer's own output, so one round or two
    suffice there; after an activation it takes a few more. A layer without bias only has its
    std set. The model runs without gradients in eval mode (dropout off, BatchNorm's running
    statistics untouched) and is left in the modes it had. For a whole network, call it for each
    layer in order, from the input on. Warns when `max_iter` rounds were not enough.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    weight = getattr(module, "weight", None)
    if not isinstance(module, nn.Module) or not isinstance(weight, Tensor):
        raise TypeError(f"module: expected a layer with a weight (Linear, Conv2d, ...), got {type(module).__name__}")
    if measure_at is not None and not isinstance(measure_at, nn.Module):
        raise TypeError(f"measure_at: expected a torch.nn.Module or None, got {type(measure_at).__name__}")
    tol = check_number("tol", tol, low=0, low_open=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    bias = getattr(module, "bias", None)
    bias = bias if isinstance(bias, Tensor) else None
    xb = tuple(xb) if isinstance(xb, (tuple, list)) else (xb,)
    param = next(model.parameters(), None)
    if param is not None:
        xb = to_device(xb, param.device)
    target = measure_at if measure_at is not None else module

    def stats(m, inputs, output) -> tuple[float, float]:
        o = output.float()
        return o.mean().item(), o.std().item()

    def measure() -> tuple[float, float]:
        hook.stored = None
        model(*xb)
        if hook.stored is None:
            raise ValueError(f"{'measure_at' if measure_at is not None else 'module'}: the model's forward "
                             f"pass never called this module")
        return hook.stored

    def converged(mean: float, std: float) -> bool:
        return abs(std - 1) < tol and (bias is None or abs(mean) < tol)

    with Hook(target, stats) as hook, kept_modes(model), torch.no_grad():
        model.eval()
        mean, std = measure()
        for _ in range(max_iter):
            if converged(mean, std):
                return mean, std
            if not math.isfinite(std) or std == 0:
                raise ValueError(f"module: its measured output has std {std}; LSUV cannot scale that to 1")
            weight.div_(std)
            if bias is not None:
                bias.sub_(mean).div_(std)
            mean, std = measure()
    if converged(mean, std):
        return mean, std
    warnings.warn(f"lsuv_init: after {max_iter} rounds the output has mean {mean:.4g} and std {std:.4g} "
                  f"(tol {tol})", RuntimeWarning, stacklevel=2)
    return mean, std

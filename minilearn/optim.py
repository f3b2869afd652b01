"""Optimisers written here: parameter groups, per-group hyper-parameters, per-parameter state.

The interface is fastai's: `opt.hypers` is a list of dicts (one per group), `set_hyper(name, v)`
changes a hyper-parameter in every group, `step()` and `zero_grad()` as in PyTorch. Schedules
and the recorder talk to an optimiser only through that interface.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn


def _as_param_groups(params) -> list[list[Tensor]]:
    """Accept parameters, a module, or a list of parameter lists (one per group)."""
    if isinstance(params, nn.Module):
        params = list(params.parameters())
    params = list(params)
    if not params:
        raise ValueError("params: expected parameters to optimise, got an empty list")
    if all(isinstance(p, Tensor) for p in params):
        return [params]
    groups = [list(g) for g in params]
    if not all(isinstance(p, Tensor) for g in groups for p in g):
        raise TypeError("params: expected tensors, or a list of lists of tensors (one per group)")
    return groups


class Optimizer:
    """Base optimiser: holds parameter groups with their hyper-parameters; subclasses update.

    A subclass implements `update(p, state, **hypers)` for one parameter with a gradient;
    `state` is that parameter's own dict, kept across steps and saved by `state_dict()`.
    """

    def __init__(self, params, **defaults):
        groups = _as_param_groups(params)
        for k, v in defaults.items():
            if isinstance(v, (int, float)) and v < 0:
                raise ValueError(f"{k}: expected a value >= 0, got {v}")
        self.param_lists = groups
        self.hypers = [dict(defaults) for _ in groups]
        self.state: dict[Tensor, dict] = {}

    def all_params(self, with_grad: bool = False) -> Iterable[tuple[Tensor, dict]]:
        """Each parameter with its group's hyper-parameters (only those with a gradient if asked)."""
        for group, hypers in zip(self.param_lists, self.hypers):
            for p in group:
                if not with_grad or p.grad is not None:
                    yield p, hypers

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for p, hypers in self.all_params(with_grad=True):
            self.update(p, self.state.setdefault(p, {}), **hypers)

    def update(self, p: Tensor, state: dict, **hypers) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Drop the gradients (set to None, as PyTorch does by default)."""
        for p, _ in self.all_params(with_grad=True):
            p.grad = None

    def set_hyper(self, name: str, value) -> None:
        """Set hyper-parameter `name` in every group: a scalar, or a list with one value per group."""
        values = list(value) if isinstance(value, (list, tuple)) else [value] * len(self.hypers)
        if len(values) != len(self.hypers):
            raise ValueError(f"{name}: expected one value per parameter group ({len(self.hypers)}), got {len(values)}")
        for hypers, v in zip(self.hypers, values):
            hypers[name] = v

    def set_hypers(self, **kwargs) -> None:
        """Set several hyper-parameters at once: `opt.set_hypers(lr=1e-2, wd=0.)`."""
        for name, value in kwargs.items():
            self.set_hyper(name, value)

    @property
    def param_groups(self) -> list[dict]:
        """PyTorch's view: one dict per group with 'params' and its hyper-parameters."""
        return [{"params": g, **h} for g, h in zip(self.param_lists, self.hypers)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.param_lists)} group(s), {self.hypers[-1]})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay, as fastai's `SGD`.

    `mom`: heavy-ball momentum (`buf = mom * buf + grad`, PyTorch's SGD without dampening).
    `wd`: decoupled weight decay (`p -= lr * wd * p`) by default, or L2 added to the gradient
    with `decouple_wd=False`.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.0, wd: float = 0.0, decouple_wd: bool = True):
        super().__init__(params, lr=lr, mom=mom, wd=wd)
        self.decouple_wd = decouple_wd

    def update(self, p: Tensor, state: dict, lr: float, mom: float, wd: float, **_) -> None:
        grad = p.grad
        if wd != 0:
            if self.decouple_wd:
                p.mul_(1 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        if mom != 0:
            buf = state.get("grad_avg")
            if buf is None:
                buf = state["grad_avg"] = grad.clone()
            else:
                buf.mul_(mom).add_(grad)
            grad = buf
        p.add_(grad, alpha=-lr)

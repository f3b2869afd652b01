"""Optimisers written here: fastai's step functions, parameter groups, per-group hyper-parameters.

An optimiser is fastai's `Optimizer(params, cbs, **defaults)`: a list of step functions
(`weight_decay`, `average_grad`, `adam_step`, ...) applied in order to each parameter, as
fastbook chapter 16 builds them; `SGD`, `RMSProp`, `Adam`, `RAdam`, `QHAdam`, `Larc`, `Lamb` are
such compositions, `Lookahead` (and `ranger`) wraps one. Where every step function of an
optimiser acts number by number, a group's parameters are laid end to end in one flat tensor
and each step function runs once on it (the arithmetic is still written here), with the same
results as the per-parameter loop.

The interface is fastai's: `opt.hypers` is a list of dicts (one per group), `set_hyper(name, v)`
changes a hyper-parameter in every group (a scalar, one value per group, or a `slice` spread over
the groups), `freeze_to(n)` / `unfreeze()` choose which groups train, `step()` and `zero_grad()`
as in PyTorch. Schedules and the recorder talk to an optimiser only through that interface, so
ours and `OptimWrapper` (any `torch.optim` optimiser under our hyper-parameter names, in
`minilearn.optim_torch`, built on `BaseOptimizer` here) are interchangeable.

Every optimiser exposes `lr` and `mom` in `hypers` (for Adam-like ones `mom` is beta1 and
`sqr_mom` beta2, as in fastai). Numerics are checked against fastai and `torch.optim` in
tests/test_optim.py.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
import operator
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minilearn.checks import check_int, check_number


# ---------------------------------------------------------------------------------------- helpers
def _as_param_groups(params) -> list[list[Tensor]]:
    """Accept parameters, a module, or a list of parameter lists (one per group)."""
    if isinstance(params, nn.Module):
        params = list(params.parameters())
    if isinstance(params, Tensor):  # one parameter (iterating it would give its rows)
        params = [params]
    params = list(params)
    if not params:
        raise ValueError("params: expected parameters to optimise, got an empty list")
    if all(isinstance(p, Tensor) for p in params):
        groups = [params]
    else:
        if any(isinstance(g, (Tensor, str, dict)) or not isinstance(g, Iterable) for g in params):
            raise TypeError("params: expected tensors, or a list of lists of tensors (one per group)")
        groups = [list(g) for g in params]
        if not all(isinstance(p, Tensor) for g in groups for p in g):
            raise TypeError("params: expected tensors, or a list of lists of tensors (one per group)")
        if not any(groups):
            raise ValueError("params: expected parameters to optimise, got only empty groups")
    seen: set[int] = set()
    for g in groups:
        for p in g:
            if id(p) in seen:  # it would be updated twice per step
                raise ValueError("params: a parameter appears more than once (in one group or in two)")
            seen.add(id(p))
    return groups


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """`n` values from `start` to `stop` evenly spaced on a log scale (fastai's discriminative learning rates)."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def _check_number(name: str, v) -> None:
    """A hyper-parameter value must be a real number >= 0 (no NaN)."""
    if not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    if not v >= 0:  # also catches NaN
        raise ValueError(f"{name}: expected a value >= 0, got {v}")


def _check_below_one(name: str, v) -> None:
    """Averaging coefficients (mom, sqr_mom of Adam-likes) must lie in [0, 1) for the debiasing to exist."""
    _check_number(name, v)
    if not v < 1:
        raise ValueError(f"{name}: expected a value in [0, 1), got {v}")


def _spread(name: str, value, n_groups: int) -> list:
    """One value per group from a scalar, a list/tuple/numpy array (one per group, or one for all), or a slice."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected the hyper-parameter's name as a str, got {type(name).__name__}")
    if isinstance(value, slice):
        if value.step is not None:
            raise ValueError(f"{name}: a slice of values takes no step, got {value}")
        _check_number(name, value.stop)
        if not value.stop > 0:
            raise ValueError(f"{name}: expected slice(start, stop) with stop > 0, got {value}")
        if value.start:  # fastai: slice(a, b) spreads geometrically from a (first group) to b (last)
            _check_number(name, value.start)
            values = even_mults(value.start, value.stop, n_groups)
        else:  # fastai: slice(b) gives b/10 to all groups but the last, which gets b
            values = [value.stop / 10] * (n_groups - 1) + [value.stop]
    elif isinstance(value, (list, tuple)) or _is_array(value):
        values = list(value)
        if len(values) == 1:
            values = values * n_groups
        if len(values) != n_groups:
            raise ValueError(f"{name}: expected one value per parameter group ({n_groups}), got {len(values)}")
    else:
        values = [value] * n_groups
    for v in values:
        _check_number(name, v)
    return [_as_float(v) for v in values]


def _as_float(v):
    """Hypers are plain Python floats: an int (torch's default `momentum=0`, say) or a numpy
    number becomes one; bools stay."""
    return float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else v


def _is_array(value) -> bool:
    """A 1-d numpy array (fastai users give per-group values as one), told without importing numpy."""
    return type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 1


def _clone_state(state: dict) -> dict:
    """A copy of one parameter's state whose tensors don't change when the optimiser steps on."""
    return {k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v) for k, v in state.items()}


# fastai's `norm_types` (plus SyncBatchNorm, a BatchNorm for several processes).
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm)


def norm_bias_params(model: nn.Module, with_bias: bool = True) -> list[Tensor]:
    """Parameters of normalisation layers (and every bias if `with_bias`): the ones fastai keeps
    trainable when frozen (`train_bn`) and free of weight decay (`wd_bn_bias=False`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    found: dict[int, Tensor] = {}  # by id: a module used twice must not list its parameters twice
    for m in model.modules():
        if isinstance(m, _NORM_TYPES):
            found.update((id(p), p) for p in m.parameters(recurse=False))
        elif with_bias and isinstance(getattr(m, "bias", None), nn.Parameter):
            found[id(m.bias)] = m.bias
    return list(found.values())


# ---------------------------------------------------------------------------------------- base
class BaseOptimizer:
    """What schedules, the recorder and the Learner rely on; shared by ours, `Lookahead` and `OptimWrapper`.

    (`OptimWrapper`, for torch.optim optimisers, lives in `minilearn.optim_torch`.)

    A subclass provides `param_lists`, `hypers`, `step`, `zero_grad`, `clear_state`, `state_dict`,
    `load_state_dict` and `_write_hyper(name, values)` (one already-checked value per group).
    """

    param_lists: list[list[Tensor]]
    hypers: list[dict]

    def set_hyper(self, name: str, value) -> None:
        """Set hyper-parameter `name` per group: a scalar, one value per group, or a slice spread over groups."""
        values = _spread(name, value, len(self.param_lists))
        self._check_hyper_name(name)
        self._write_hyper(name, values)

    def set_hypers(self, **kwargs) -> None:
        """Set several hyper-parameters at once: `opt.set_hypers(lr=1e-2, wd=0.)`."""
        spread = {name: _spread(name, v, len(self.param_lists)) for name, v in kwargs.items()}
        for name in spread:  # every name and value is checked before any is written
            self._check_hyper_name(name)
        for name, values in spread.items():
            self._write_hyper(name, values)

    def _check_hyper_name(self, name: str) -> None:
        """Raise if `name` can't be set (ours accept new names, as fastai; a torch optimiser has a fixed set)."""

    def _write_hyper(self, name: str, values: list) -> None:
        raise NotImplementedError

    def freeze_to(self, n: int, keep_trainable: Iterable[Tensor] = ()) -> None:
        """Train only the groups from `n` on (negative `n` counts from the end, as fastai).

        Parameters in `keep_trainable` stay trainable in frozen groups: pass
        `norm_bias_params(model, with_bias=False)` for fastai's `train_bn=True`. A frozen
        parameter gets `requires_grad=False` and loses its gradient, so `step()` skips it.
        """
        n_groups = len(self.param_lists)
        n = check_int("n", n)  # a group index
        if n < -n_groups:
            raise ValueError(f"n: expected an index in [-{n_groups}, {n_groups}] for {n_groups} group(s), got {n}")
        keep = list(keep_trainable)
        if not all(isinstance(p, Tensor) for p in keep):
            raise TypeError("keep_trainable: expected an iterable of tensors (parameters)")
        keep_ids = {id(p) for p in keep}
        frozen_idx = n if n >= 0 else n_groups + n
        if frozen_idx >= n_groups:
            warnings.warn(f"freeze_to({n}): only {n_groups} parameter group(s), the whole model is frozen", stacklevel=2)
        for i, group in enumerate(self.param_lists):
            for p in group:
                trainable = i >= frozen_idx or id(p) in keep_ids
                p.requires_grad_(trainable)
                if not trainable:
                    p.grad = None  # a gradient left from before the freeze must not be applied

    def freeze(self, keep_trainable: Iterable[Tensor] = ()) -> None:
        """Train only the last parameter group (fastai's transfer-learning first stage)."""
        if len(self.param_lists) < 2:
            raise ValueError("freeze: the optimiser has one parameter group, so nothing would train; "
                             "split the model into groups (Learner's `splitter`) or use freeze_to")
        self.freeze_to(-1, keep_trainable)

    def unfreeze(self) -> None:
        """Train every parameter group."""
        self.freeze_to(0)

    @property
    def param_groups(self) -> list[dict]:
        """PyTorch's view, in our names: one dict per group with 'params' and its hyper-parameters (read-only)."""
        return [{"params": g, **h} for g, h in zip(self.param_lists, self.hypers)]

    def all_params(self, with_grad: bool = False) -> Iterable[tuple[Tensor, dict]]:
        """Each parameter with its group's hyper-parameters (only those with a gradient if asked)."""
        for group, hypers in zip(self.param_lists, self.hypers):
            for p in group:
                if not with_grad or p.grad is not None:
                    yield p, hypers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.param_lists)} group(s), {self.hypers[-1]})"


# ---------------------------------------------------------------------------------------- step functions
# fastai's optimiser is a list of step functions `f(p, lr=..., **hypers_and_state)`, called in
# order for each parameter with a gradient; one may return a dict, which is merged into that
# parameter's state and passed to the next ones (fastbook chapter 16). A function's `defaults`
# attribute gives default hyper-parameters. Each function below computes exactly what minilearn's
# optimisers computed before they were written this way, and fastai's step to rounding.
#
# The ones marked `_elementwise` treat every number of a parameter alike (no norm, no sum), so
# they give the same result on many parameters laid end to end in one flat tensor as on each
# parameter alone: the optimiser's fast path (`_FlatRun`) relies on that.

_ELEMENTWISE: set = set()  # step functions that act number by number
_WRITES_GRAD: set = set()  # step functions that change p.grad (the fast path then hands it back)


def _elementwise(step_fn):
    """Mark `step_fn` as acting number by number (see above)."""
    _ELEMENTWISE.add(step_fn)
    return step_fn


@_elementwise
def weight_decay(p: Tensor, lr: float, wd: float, do_wd: bool = True, **kwargs) -> None:
    """Decoupled weight decay (AdamW's): `p *= 1 - lr * wd`, unless `do_wd` is False for `p`."""
    if do_wd and wd != 0:
        p.mul_(1 - lr * wd)


weight_decay.defaults = dict(wd=0.0)


@_elementwise
def l2_reg(p: Tensor, lr: float, wd: float, do_wd: bool = True, **kwargs) -> None:
    """L2 regularisation: `wd * p` added to the gradient, unless `do_wd` is False for `p`."""
    if do_wd and wd != 0:
        p.grad.add_(p, alpha=wd)


l2_reg.defaults = dict(wd=0.0)
_WRITES_GRAD.add(l2_reg)


@_elementwise
def average_grad(p: Tensor, mom: float, dampening: bool = False, grad_avg: Tensor | None = None, **kwargs) -> dict:
    """The running average of the gradient, `grad_avg`: `mom * grad_avg + grad` (momentum), or with
    `dampening` `mom * grad_avg + (1 - mom) * grad` (Adam's first moment)."""
    if grad_avg is None:
        grad_avg = torch.zeros_like(p)
    if dampening:
        grad_avg.lerp_(p.grad, 1 - mom)
    else:
        grad_avg.mul_(mom).add_(p.grad)
    return {"grad_avg": grad_avg}


average_grad.defaults = dict(mom=0.9)


@_elementwise
def average_sqr_grad(p: Tensor, sqr_mom: float, dampening: bool = True, sqr_avg: Tensor | None = None,
                     **kwargs) -> dict:
    """The running average of the squared gradient, `sqr_avg`: `sqr_mom * sqr_avg + (1 - sqr_mom) * grad²`
    (without `dampening`: `+ grad²`)."""
    if sqr_avg is None:
        sqr_avg = torch.zeros_like(p)
    sqr_avg.mul_(sqr_mom).addcmul_(p.grad, p.grad, value=1 - sqr_mom if dampening else 1.0)
    return {"sqr_avg": sqr_avg}


average_sqr_grad.defaults = dict(sqr_mom=0.99)


@_elementwise
def step_stat(p: Tensor, step: int = 0, **kwargs) -> dict:
    """Count the steps taken for `p` (a Python int, so debiasing never waits for the device)."""
    return {"step": step + 1}


def debias(mom: float, damp: float, step: int) -> float:
    """fastai's debiasing factor of a running average after `step` steps: `damp * (1 - mom**step) / (1 - mom)`
    (`1 - mom**step` for a dampened average)."""
    return damp * (1 - mom**step) / (1 - mom)


@_elementwise
def sgd_step(p: Tensor, lr: float, **kwargs) -> None:
    """Plain gradient descent: `p -= lr * grad`."""
    p.add_(p.grad, alpha=-lr)


@_elementwise
def momentum_step(p: Tensor, lr: float, grad_avg: Tensor, **kwargs) -> None:
    """Gradient descent along the averaged gradient: `p -= lr * grad_avg`."""
    p.add_(grad_avg, alpha=-lr)


@_elementwise
def rms_prop_step(p: Tensor, lr: float, sqr_avg: Tensor, eps: float, grad_avg: Tensor | None = None,
                  **kwargs) -> None:
    """RMSProp: `p -= lr * g / (sqrt(sqr_avg) + eps)`, `g` the averaged gradient if there is one."""
    denom = sqr_avg.sqrt().add_(eps)
    p.addcdiv_(grad_avg if grad_avg is not None else p.grad, denom, value=-lr)


rms_prop_step.defaults = dict(eps=1e-8)


@_elementwise
def adam_step(p: Tensor, lr: float, mom: float, step: int, sqr_mom: float, grad_avg: Tensor, sqr_avg: Tensor,
              eps: float, **kwargs) -> None:
    """Adam's step on the debiased averages: `p -= lr * m̂ / (sqrt(v̂) + eps)`."""
    debias1, debias2 = 1 - mom**step, 1 - sqr_mom**step
    denom = (sqr_avg.sqrt() / math.sqrt(debias2)).add_(eps)
    p.addcdiv_(grad_avg, denom, value=-lr / debias1)


adam_step.defaults = dict(eps=1e-5)


def _radam_rect(sqr_mom: float, step: int) -> float | None:
    """RAdam's rectification of the step after `step` steps, or None while the variance estimate
    is unreliable (rho <= 5: plain momentum SGD)."""
    rho_inf = 2 / (1 - sqr_mom) - 1
    rho = rho_inf - 2 * step * sqr_mom**step / (1 - sqr_mom**step)
    if rho <= 5:
        return None
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


@_elementwise
def radam_step(p: Tensor, lr: float, mom: float, step: int, sqr_mom: float, grad_avg: Tensor, sqr_avg: Tensor,
               eps: float, beta: float, **kwargs) -> None:
    """Rectified Adam's step (fastai's): Adam's on `sqrt(v̂) + eps` (softplus'd with `beta > 0`),
    scaled by the rectification, or momentum SGD on m̂ while it is undefined."""
    debias1 = 1 - mom**step
    rect = _radam_rect(sqr_mom, step)
    if rect is None:
        p.add_(grad_avg, alpha=-lr / debias1)
        return
    denom = (sqr_avg / (1 - sqr_mom**step)).sqrt_()
    if eps:
        denom.add_(eps)
    if beta:
        denom = F.softplus(denom, beta=beta)
    p.addcdiv_(grad_avg, denom, value=-lr * rect / debias1)


radam_step.defaults = dict(eps=1e-5, beta=0.0)


@_elementwise
def qhadam_step(p: Tensor, lr: float, mom: float, sqr_mom: float, sqr_avg: Tensor, nu_1: float, nu_2: float,
                step: int, grad_avg: Tensor, eps: float, **kwargs) -> None:
    """Quasi-hyperbolic Adam's step: `nu_1` / `nu_2` mix the raw gradient into Adam's averages."""
    debias1, debias2 = 1 - mom**step, 1 - sqr_mom**step
    num = (p.grad * (1 - nu_1)).add_(grad_avg / debias1, alpha=nu_1)
    denom = (p.grad * p.grad).mul_(1 - nu_2).add_(sqr_avg / debias2, alpha=nu_2).sqrt_().add_(eps)
    p.addcdiv_(num, denom, value=-lr)


qhadam_step.defaults = dict(eps=1e-8)


def larc_layer_lr(p: Tensor, lr: float, trust_coeff: float, wd: float, eps: float, clip: bool = True,
                  **kwargs) -> dict:
    """LARC's per-layer learning rate `lr * trust_coeff * ||p|| / (||grad|| + wd * ||p|| + eps)`,
    at most `lr` with `clip` (computed on the device: a step never waits for it)."""
    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(p.grad)
    local_lr = lr * trust_coeff * p_norm / (g_norm + p_norm * wd + eps)
    return {"local_lr": local_lr.clamp(max=lr) if clip else local_lr}


larc_layer_lr.defaults = dict(trust_coeff=0.02, wd=0.0, eps=1e-8)


def larc_step(p: Tensor, local_lr: Tensor, grad_avg: Tensor | None = None, **kwargs) -> None:
    """LARC's step: `p -= local_lr * g`, `g` the averaged gradient if there is one."""
    p.sub_((p.grad if grad_avg is None else grad_avg) * local_lr)


def lamb_step(p: Tensor, lr: float, mom: float, step: int, sqr_mom: float, grad_avg: Tensor, sqr_avg: Tensor,
              eps: float, **kwargs) -> None:
    """LAMB's step: Adam's debiased step scaled by the trust ratio `||p|| / ||step||`, at most 10,
    and 1 where either norm is 0 (fastai's rule), computed on the device."""
    adam = (grad_avg / (1 - mom**step)).div_((sqr_avg / (1 - sqr_mom**step)).sqrt_().add_(eps))
    p_norm, step_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(adam)
    trust = torch.where((p_norm > 0) & (step_norm > 0), (p_norm / step_norm).clamp(max=10.0), 1.0)
    p.sub_(adam.mul_(trust * lr))


lamb_step.defaults = dict(eps=1e-5)


def _defaults_of(cb) -> dict:
    """A step function's `defaults` (a partial's: its function's, less what it binds)."""
    if isinstance(cb, functools.partial):
        return {k: v for k, v in getattr(cb.func, "defaults", {}).items() if k not in cb.keywords}
    return dict(getattr(cb, "defaults", {}) or {})


def _step_fn(cb):
    """The function a step function is (a keyword partial's: its function), or None for a
    partial with positional arguments."""
    if isinstance(cb, functools.partial):
        return None if cb.args else cb.func
    return cb


def _is_elementwise(cb) -> bool:
    """Whether a step function (or a keyword partial of one) acts number by number."""
    return _step_fn(cb) in _ELEMENTWISE


class _FlatRun:
    """Parameters of one group laid end to end in one flat tensor, with their state likewise, so
    that each (elementwise) step function runs once over all of them: the optimiser's fast path.

    The parameters' data become views of `param` (`p.data = view`): the model sees the same
    tensors, and copies into them (loading weights) keep the layout. Their state tensors become
    views of the run's (`state`), so `opt.state[p]` reads as before.
    """

    def __init__(self, ps: list[Tensor], states: list[dict]):
        self.ps, self.states, self.sizes = ps, states, [p.numel() for p in ps]
        self.param = torch.cat([p.detach().reshape(-1) for p in ps])
        for p, view in zip(ps, self.param.split(self.sizes)):
            p.data = view.view_as(p)
        self.grad = torch.empty_like(self.param)  # the gradients are copied here each step: no allocation
        self.grad_views = [v.view_as(p) for v, p in zip(self.grad.split(self.sizes), ps)]
        self.state: dict = {}
        self.views: dict[str, list[Tensor]] = {}  # key -> each parameter's view of state[key]
        for key in states[0]:  # `adoptable` checked that every parameter has the same keys
            values = [s[key] for s in states]
            self.state[key] = torch.cat([v.reshape(-1) for v in values]) if isinstance(values[0], Tensor) else values[0]
        self._share()

    @staticmethod
    def adoptable(ps: list[Tensor], states: list[dict]) -> bool:
        """Whether these parameters' states can be one flat state: the same keys, equal numbers
        (the step count), tensors of each parameter's shape, dtype and device."""
        keys = states[0].keys()
        for p, s in zip(ps, states):
            if s.keys() != keys:
                return False
            for k, v in s.items():
                if isinstance(v, Tensor):
                    if v.shape != p.shape or v.dtype != p.dtype or v.device != p.device:
                        return False
                elif v != states[0][k]:
                    return False
        return True

    def _share(self) -> None:
        """Give every parameter its part of the flat state: views of the tensors, the numbers as they are."""
        for key, value in self.state.items():
            if isinstance(value, Tensor):
                if key not in self.views or self.views[key][0]._base is not value:
                    self.views[key] = [v.view_as(p) for v, p in zip(value.split(self.sizes), self.ps)]
                    for s, v in zip(self.states, self.views[key]):
                        s[key] = v
            else:
                for s in self.states:
                    s[key] = value

    def step(self, cbs: list, hypers: dict, writes_grad: bool) -> None:
        """Run the step functions once on the flat parameter, gradient and state."""
        torch._foreach_copy_(self.grad_views, [p.grad for p in self.ps])  # one call for every gradient
        self.param.grad = self.grad
        try:
            for cb in cbs:
                out = cb(self.param, **{**self.state, **hypers})
                if out:
                    self.state.update(out)
            if writes_grad:  # as in the loop, p.grad holds what the step functions made of it (l2_reg)
                for p, g in zip(self.ps, self.grad_views):
                    p.grad.copy_(g)
        finally:
            self.param.grad = None
        self._share()


class _GroupPlan:
    """How one step updates a group: which parameters go in which flat run, which take the loop.
    Made again when the parameters with a gradient, their storage or the optimiser's state changed."""

    def __init__(self, ps: list[Tensor], state: dict, version: int):
        self.ps, self.version = ps, version
        self.runs: list[_FlatRun] = []
        self.loop: list[Tensor] = []
        by_key: dict = {}
        for p in ps:
            s = state.setdefault(p, {})
            if p.is_contiguous() and p.grad.layout == torch.strided:
                by_key.setdefault((p.dtype, p.device, s.get("do_wd", True)), []).append(p)
            else:
                self.loop.append(p)  # (channels-last weights keep their layout)
        for piece in _chunked(by_key.values()):
            states = [state[p] for p in piece]
            if len(piece) > 1 and _FlatRun.adoptable(piece, states):
                self.runs.append(_FlatRun(piece, states))
            else:
                self.loop += piece
        self.ptrs = [p.data_ptr() for p in ps]

    def fits(self, ps: list[Tensor], version: int) -> bool:
        """Whether this plan still describes `ps` (the same tensors, in place, the same state)."""
        return (version == self.version and len(ps) == len(self.ps) and all(map(operator.is_, ps, self.ps))
                and [p.data_ptr() for p in ps] == self.ptrs)


# On the CPU a run holds at most this many numbers (a parameter larger than that is a run of its
# own), so that a step function's successive passes over it stay in the cache: one flat tensor of
# millions of numbers would be read from memory at every pass, slower than parameter by parameter.
# On a GPU there is no such limit: there the cost is one kernel launch per operation and run.
FLAT_RUN_NUMEL = 1 << 17


def _chunked(groups):
    """Each list of parameters cut, in order, into consecutive pieces of at most FLAT_RUN_NUMEL
    numbers on the CPU (whole on other devices)."""
    for ps in groups:
        limit = FLAT_RUN_NUMEL if ps[0].device.type == "cpu" else math.inf
        piece, numel = [], 0
        for p in ps:
            if piece and numel + p.numel() > limit:
                yield piece
                piece, numel = [], 0
            piece.append(p)
            numel += p.numel()
        yield piece


# ---------------------------------------------------------------------------------------- ours
class Optimizer(BaseOptimizer):
    """fastai's optimiser: step functions `cbs` applied to every parameter with a gradient.

    `params`: a tensor, a list of them, a module, or a list of lists (one per parameter group).
    `cbs`: step functions `f(p, lr=..., **hypers)` run in order at each step (see the section
    above); each is passed the group's hyper-parameters and the parameter's state, and what it
    returns (a dict) joins that state. The hyper-parameters are the functions' `defaults`, then
    `defaults` given here; they are kept per group in `hypers`.
    `train_bn`: fastai's; with False, `freeze_to` freezes the parameters it was told to keep
    trainable (the Learner passes the normalisation layers) as well.
    `multi_tensor`: when every step function is elementwise (all of minilearn's but LARC's and
    LAMB's, which take a norm per parameter), each group's parameters with a gradient are laid
    end to end in one flat tensor (split by dtype, device and weight-decay exclusion), and each
    step function runs once on it: a handful of kernels per step instead of a handful per
    parameter, with the same numbers. A step function of your own, a parameter that is not
    contiguous (channels-last weights) or states that differ (step counts) use the per-parameter
    loop, for those parameters, automatically. False: always the loop.
    """

    def __init__(self, params, cbs=(), train_bn: bool = True, multi_tensor: bool = True, **defaults):
        groups = _as_param_groups(params)
        cbs = list(cbs) if isinstance(cbs, (list, tuple)) else [cbs]
        for i, cb in enumerate(cbs):
            if not callable(cb):
                raise TypeError(f"cbs: expected step functions f(p, lr=..., **hypers), got {type(cb).__name__} "
                                f"at position {i}")
        merged: dict = {}
        for cb in cbs:
            merged.update(_defaults_of(cb))
        merged.update(defaults)
        for k, v in merged.items():
            _check_number(k, v)
        self.cbs, self.train_bn, self.multi_tensor = cbs, bool(train_bn), bool(multi_tensor)
        self.param_lists = groups
        self.hypers = [{k: _as_float(v) for k, v in merged.items()} for _ in groups]
        self._elementwise = bool(cbs) and all(_is_elementwise(cb) for cb in cbs)
        self._writes_grad = any(_step_fn(cb) in _WRITES_GRAD for cb in cbs)
        self._plans: dict[int, _GroupPlan] = {}  # group index -> how the fast path steps it
        self._version = 0
        self.state = {}

    @property
    def state(self) -> dict[Tensor, dict]:
        """Each parameter's state (running averages, step count, `do_wd`), keyed by the parameter.
        Replace it whole (`opt.state = {...}`, `load_state_dict`, `clear_state`), so the fast path
        knows to lay it out again."""
        return self._state

    @state.setter
    def state(self, value: dict) -> None:
        self._state = value
        self._version += 1

    @property
    def fast_path(self) -> bool:
        """Whether `step()` lays parameters out flat (`multi_tensor` on, every step function elementwise)."""
        return self.multi_tensor and self._elementwise

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient."""
        if not self.fast_path:
            for p, hypers in self.all_params(with_grad=True):
                self._step_one(p, hypers)
            return
        for gi, (group, hypers) in enumerate(zip(self.param_lists, self.hypers)):
            ps = [p for p in group if p.grad is not None]
            if not ps:
                continue
            plan = self._plans.get(gi)
            if plan is None or not plan.fits(ps, self._version):
                plan = self._plans[gi] = _GroupPlan(ps, self._state, self._version)
            for run in plan.runs:
                run.step(self.cbs, hypers, self._writes_grad)
            for p in plan.loop:
                self._step_one(p, hypers)

    def _step_one(self, p: Tensor, hypers: dict) -> None:
        """The step functions on one parameter, its state passed in and updated."""
        state = self.state.setdefault(p, {})
        for cb in self.cbs:
            out = cb(p, **{**state, **hypers})
            if out:
                state.update(out)

    def zero_grad(self) -> None:
        """Drop the gradients (set to None, as PyTorch does by default)."""
        for p, _ in self.all_params(with_grad=True):
            p.grad = None

    def freeze_to(self, n: int, keep_trainable: Iterable[Tensor] = ()) -> None:
        """`BaseOptimizer.freeze_to`; with `train_bn=False` nothing is kept trainable in frozen groups."""
        super().freeze_to(n, keep_trainable if self.train_bn else ())

    def _write_hyper(self, name: str, values: list) -> None:
        for hypers, v in zip(self.hypers, values):
            hypers[name] = v

    def clear_state(self) -> None:
        """Forget the running averages (fastai does this on freeze/unfreeze); weight-decay exclusions stay."""
        self.state = {p: {"do_wd": False} for p, s in self.state.items() if s.get("do_wd", True) is False}

    def exclude_from_wd(self, params: Iterable[Tensor]) -> None:
        """Never apply weight decay to `params` (fastai's `wd_bn_bias=False`, with `norm_bias_params`)."""
        params = list(params)
        known = {id(p) for g in self.param_lists for p in g}
        if not all(isinstance(p, Tensor) and id(p) in known for p in params):
            raise ValueError("params: expected parameters that this optimiser updates")
        for p in params:
            self.state.setdefault(p, {})["do_wd"] = False
        self._version += 1  # the fast path splits its runs by weight decay

    def state_dict(self) -> dict:
        """Hyper-parameters and per-parameter state, by position (group, index), tensors cloned."""
        return {
            "hypers": [dict(h) for h in self.hypers],
            "shapes": [[tuple(p.shape) for p in g] for g in self.param_lists],
            "state": [[_clone_state(self.state.get(p, {})) for p in g] for g in self.param_lists],
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore what `state_dict()` saved; the structure (groups, parameters, shapes) must match."""
        self._check_state_dict(sd)
        self.hypers = [dict(h) for h in sd["hypers"]]
        self.state = {}
        for group, group_state in zip(self.param_lists, sd["state"]):
            for p, s in zip(group, group_state):
                if s:
                    self.state[p] = {k: v.detach().clone().to(p.device) if isinstance(v, Tensor) else copy.deepcopy(v)
                                     for k, v in s.items()}

    def _check_state_dict(self, sd) -> None:
        """Raise (before changing anything) if `sd` does not fit this optimiser's parameters."""
        if not isinstance(sd, dict):
            raise TypeError(f"sd: expected a dict from state_dict(), got {type(sd).__name__}")
        missing = {"hypers", "shapes", "state"} - set(sd)
        if missing:
            raise ValueError(f"sd: not a state_dict of {type(self).__name__} (missing {sorted(missing)})")
        n_groups = len(self.param_lists)
        if not (len(sd["hypers"]) == len(sd["shapes"]) == len(sd["state"]) == n_groups):
            raise ValueError(f"sd: saved for {len(sd['shapes'])} parameter group(s), this optimiser has {n_groups}")
        for i, (group, shapes, states) in enumerate(zip(self.param_lists, sd["shapes"], sd["state"])):
            if not len(group) == len(shapes) == len(states):
                raise ValueError(f"sd: group {i} was saved with {len(shapes)} parameter(s), it has {len(group)}")
            for j, (p, shape) in enumerate(zip(group, shapes)):
                if tuple(p.shape) != tuple(shape):
                    raise ValueError(f"sd: parameter {j} of group {i} was saved with shape {tuple(shape)}, "
                                     f"it has shape {tuple(p.shape)}")
            for j, (p, st) in enumerate(zip(group, states)):
                bad = [k for k, v in st.items() if isinstance(v, Tensor) and v.dim() and tuple(v.shape) != tuple(p.shape)]
                if bad:
                    raise ValueError(f"sd: the state {bad} of parameter {j} of group {i} has a shape other than "
                                     f"the parameter's {tuple(p.shape)}")
        for i, (saved, hypers) in enumerate(zip(sd["hypers"], self.hypers)):
            if not isinstance(saved, dict) or set(saved) != set(hypers):
                raise ValueError(f"sd: group {i} was saved by an optimiser with the hyper-parameters "
                                 f"{sorted(saved) if isinstance(saved, dict) else saved!r}, this {type(self).__name__} "
                                 f"has {sorted(hypers)} (another optimiser's state?)")


def _decay(decouple_wd: bool):
    """The weight-decay step function: decoupled (`weight_decay`) or L2 (`l2_reg`)."""
    return weight_decay if decouple_wd else l2_reg


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay: fastai's composition
    `[weight_decay or l2_reg, average_grad (if mom), sgd_step or momentum_step]`.

    `mom`: heavy-ball momentum (`buf = mom * buf + grad`, PyTorch's SGD without dampening).
    As in fastai, momentum is used only if `mom != 0` when the optimiser is made; its value is
    then read every step, so a schedule can change it (a schedule can't switch it on).
    `wd`: decoupled weight decay (`p -= lr * wd * p`) by default, or L2 added to the gradient
    with `decouple_wd=False`.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.0, wd: float = 0.0, decouple_wd: bool = True,
                 multi_tensor: bool = True):
        cbs = [_decay(decouple_wd)] + ([average_grad, momentum_step] if mom != 0 else [sgd_step])
        super().__init__(params, cbs, multi_tensor=multi_tensor, lr=lr, mom=mom, wd=wd)
        self.decouple_wd = decouple_wd


class RMSProp(Optimizer):
    """RMSProp, fastai's composition `[weight_decay or l2_reg, average_grad (if mom),
    average_sqr_grad, rms_prop_step]`.

    `sq = sqr_mom * sq + (1 - sqr_mom) * grad²` (no debiasing), then
    `p -= lr * grad / (sqrt(sq) + eps)`. With momentum (used if `mom != 0` when made, as fastai)
    the raw gradient is averaged (`buf = mom * buf + grad`) and `p -= lr * buf / (sqrt(sq) + eps)`:
    fastai's, which differs from `torch.optim.RMSprop`'s momentum (that one averages the divided
    step; `OptimWrapper(torch.optim.RMSprop)` gives it). `wd`: decoupled by default, L2 if not.
    """

    def __init__(self, params, lr: float = 1e-2, mom: float = 0.0, sqr_mom: float = 0.99, eps: float = 1e-8,
                 wd: float = 0.0, decouple_wd: bool = True, multi_tensor: bool = True):
        _check_number("sqr_mom", sqr_mom)
        if sqr_mom > 1:
            raise ValueError(f"sqr_mom: expected a value in [0, 1], got {sqr_mom}")
        cbs = [_decay(decouple_wd)] + ([average_grad] if mom != 0 else []) + [average_sqr_grad, rms_prop_step]
        super().__init__(params, cbs, multi_tensor=multi_tensor, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)
        self.decouple_wd = decouple_wd


def _adam_like(decouple_wd: bool, step_fn) -> list:
    """fastai's composition for the Adam family: weight decay, the dampened averages, the step count, `step_fn`."""
    return [_decay(decouple_wd), functools.partial(average_grad, dampening=True), average_sqr_grad, step_stat, step_fn]


def _check_moms(mom, sqr_mom) -> None:
    """beta1 / beta2 of an Adam-like optimiser lie in [0, 1), for the debiasing to exist."""
    _check_below_one("mom", mom)
    _check_below_one("sqr_mom", sqr_mom)


class Adam(Optimizer):
    """Adam with fastai's defaults: AdamW (decoupled `wd`) by default, Adam with L2 if `decouple_wd=False`.

    fastai's composition `[weight_decay or l2_reg, average_grad (dampened), average_sqr_grad,
    step_stat, adam_step]`. `mom` is beta1, `sqr_mom` beta2. Both moments are debiased and `eps`
    is added after the square root, as `torch.optim.Adam`/`AdamW`, which this matches to rounding.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                 wd: float = 0.01, decouple_wd: bool = True, multi_tensor: bool = True):
        _check_moms(mom, sqr_mom)
        super().__init__(params, _adam_like(decouple_wd, adam_step), multi_tensor=multi_tensor, lr=lr, mom=mom,
                         sqr_mom=sqr_mom, eps=eps, wd=wd)
        self.decouple_wd = decouple_wd


class RAdam(Optimizer):
    """Rectified Adam (Liu et al. 2019), fastai's composition `[..., step_stat, radam_step]` with
    fastai's defaults.

    While the variance estimate is unreliable (rho_t <= 5) the step is plain momentum SGD on the
    debiased average. `eps` is added to the debiased sqrt(sqr_avg), as fastai (torch adds it
    before debiasing: `OptimWrapper(torch.optim.RAdam)` gives that). `beta > 0` passes the
    denominator through `softplus(., beta)`. `wd`: decoupled by default, L2 if not.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                 wd: float = 0.0, beta: float = 0.0, decouple_wd: bool = True, multi_tensor: bool = True):
        _check_moms(mom, sqr_mom)
        super().__init__(params, _adam_like(decouple_wd, radam_step), multi_tensor=multi_tensor, lr=lr, mom=mom,
                         sqr_mom=sqr_mom, eps=eps, wd=wd, beta=beta)
        self.decouple_wd = decouple_wd


class QHAdam(Optimizer):
    """Quasi-hyperbolic Adam (Ma & Yarats 2019) with fastai's defaults: `nu_1` / `nu_2` weigh the
    debiased averages against the raw gradient and its square (both 1: Adam)."""

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.999, sqr_mom: float = 0.999, nu_1: float = 0.7,
                 nu_2: float = 1.0, eps: float = 1e-8, wd: float = 0.0, decouple_wd: bool = True,
                 multi_tensor: bool = True):
        _check_moms(mom, sqr_mom)
        super().__init__(params, _adam_like(decouple_wd, qhadam_step), multi_tensor=multi_tensor, lr=lr, nu_1=nu_1,
                         nu_2=nu_2, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)
        self.decouple_wd = decouple_wd


class Larc(Optimizer):
    """LARC (You et al. 2017) with fastai's defaults: momentum SGD whose learning rate is scaled per
    layer by `trust_coeff * ||p|| / (||grad|| + wd * ||p||)`, at most `lr` with `clip`."""

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, clip: bool = True, trust_coeff: float = 0.02,
                 eps: float = 1e-8, wd: float = 0.0, decouple_wd: bool = True, multi_tensor: bool = True):
        cbs = [_decay(decouple_wd)] + ([average_grad] if mom != 0 else [])
        cbs += [functools.partial(larc_layer_lr, clip=bool(clip)), larc_step]
        super().__init__(params, cbs, multi_tensor=multi_tensor, lr=lr, mom=mom, trust_coeff=trust_coeff, eps=eps, wd=wd)
        self.decouple_wd = decouple_wd


class Lamb(Optimizer):
    """LAMB (You et al. 2019) as fastai's: `[..., step_stat, lamb_step]`, the debiased Adam step
    scaled by the trust ratio ||p|| / ||step|| (at most 10; 1 if either norm is 0). Weight decay
    is applied before the step (decoupled by default, L2 if `decouple_wd=False`), as fastai."""

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                 wd: float = 0.0, decouple_wd: bool = True, multi_tensor: bool = True):
        _check_moms(mom, sqr_mom)
        super().__init__(params, _adam_like(decouple_wd, lamb_step), multi_tensor=multi_tensor, lr=lr, mom=mom,
                         sqr_mom=sqr_mom, eps=eps, wd=wd)
        self.decouple_wd = decouple_wd


# ---------------------------------------------------------------------------------------- lookahead
class Lookahead(BaseOptimizer):
    """Lookahead (Zhang et al. 2019) around any of our optimisers: every `k` steps, pull slow weights
    toward the fast ones (`slow += alpha * (fast - slow)`) and restart the fast ones from there.

    Everything else (hypers, set_hyper, freezing, ...) is the wrapped optimiser's, forwarded below.
    The slow weights are copied at the first step; call `clear_state()` after changing the
    parameters outside the optimiser (e.g. loading a model), or the next sync would undo it.
    """

    def __init__(self, opt: BaseOptimizer, k: int = 6, alpha: float = 0.5):
        if not isinstance(opt, BaseOptimizer):
            raise TypeError(f"opt: expected a minilearn optimiser (wrap a torch one in OptimWrapper), "
                            f"got {type(opt).__name__}")
        k = check_int("k", k, low=1)  # steps between syncs
        alpha = check_number("alpha", alpha, low=0, high=1)
        self.opt, self.k, self.alpha = opt, k, alpha
        self.count, self.slow_weights = 0, None

    @property
    def param_lists(self) -> list[list[Tensor]]:
        """The wrapped optimiser's parameter groups."""
        return self.opt.param_lists

    @property
    def hypers(self) -> list[dict]:
        """The wrapped optimiser's hyper-parameters (the same dicts: schedules change them directly)."""
        return self.opt.hypers

    @property
    def state(self):
        """The wrapped optimiser's per-parameter state (the slow weights are kept apart)."""
        return self.opt.state

    @torch.no_grad()
    def step(self) -> None:
        """A step of the wrapped optimiser; every `k`-th one also syncs slow and fast weights."""
        if self.slow_weights is None:
            self.slow_weights = [[p.detach().clone() for p in g] for g in self.param_lists]
        self.opt.step()
        self.count += 1
        if self.count % self.k != 0:
            return
        for slow_group, fast_group in zip(self.slow_weights, self.param_lists):
            for slow, fast in zip(slow_group, fast_group):
                slow.lerp_(fast, self.alpha)
                fast.copy_(slow)

    # The rest of the interface is the wrapped optimiser's, forwarded one method at a time.
    def zero_grad(self) -> None:
        self.opt.zero_grad()

    def set_hyper(self, name: str, value) -> None:
        self.opt.set_hyper(name, value)

    def set_hypers(self, **kwargs) -> None:
        self.opt.set_hypers(**kwargs)

    def freeze_to(self, n: int, keep_trainable: Iterable[Tensor] = ()) -> None:
        self.opt.freeze_to(n, keep_trainable)

    def freeze(self, keep_trainable: Iterable[Tensor] = ()) -> None:
        self.opt.freeze(keep_trainable)

    def unfreeze(self) -> None:
        self.opt.unfreeze()

    @property
    def param_groups(self) -> list[dict]:
        return self.opt.param_groups

    def all_params(self, with_grad: bool = False) -> Iterable[tuple[Tensor, dict]]:
        return self.opt.all_params(with_grad)

    def exclude_from_wd(self, params: Iterable[Tensor]) -> None:
        self.opt.exclude_from_wd(params)

    def clear_state(self) -> None:
        """Forget the wrapped optimiser's state and the slow weights (copied again at the next step)."""
        self.opt.clear_state()
        self.count, self.slow_weights = 0, None

    def state_dict(self) -> dict:
        """The wrapped optimiser's state_dict, the step count and the slow weights (cloned)."""
        slow = None if self.slow_weights is None else [[w.clone() for w in g] for g in self.slow_weights]
        return {"opt": self.opt.state_dict(), "count": self.count, "slow_weights": slow}

    def load_state_dict(self, sd: dict) -> None:
        """Restore what `state_dict()` saved; the structure must match (checked before anything changes)."""
        if not isinstance(sd, dict):
            raise TypeError(f"sd: expected a dict from state_dict(), got {type(sd).__name__}")
        missing = {"opt", "count", "slow_weights"} - set(sd)
        if missing:
            raise ValueError(f"sd: not a state_dict of Lookahead (missing {sorted(missing)})")
        slow = sd["slow_weights"]
        if slow is not None:
            shapes = [[tuple(w.shape) for w in g] for g in slow]
            if shapes != [[tuple(p.shape) for p in g] for g in self.param_lists]:
                raise ValueError("sd: the saved slow weights don't match this optimiser's parameters (groups or shapes)")
        self.opt.load_state_dict(sd["opt"])  # checks its own part before changing anything
        self.count = sd["count"]
        self.slow_weights = None if slow is None else [
            [w.detach().clone().to(p.device) for w, p in zip(ws, ps)] for ws, ps in zip(slow, self.param_lists)]

    def __repr__(self) -> str:
        return f"Lookahead({self.opt!r}, k={self.k}, alpha={self.alpha})"


def ranger(params, lr: float = 1e-3, mom: float = 0.95, wd: float = 0.01, eps: float = 1e-6, k: int = 6,
           alpha: float = 0.5, sqr_mom: float = 0.99, beta: float = 0.0, decouple_wd: bool = True) -> Lookahead:
    """Ranger = Lookahead(RAdam), with fastai's defaults."""
    return Lookahead(RAdam(params, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd, beta=beta,
                           decouple_wd=decouple_wd), k=k, alpha=alpha)

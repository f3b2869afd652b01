"""Optimisers written here: parameter groups, per-group hyper-parameters, per-parameter state.

The interface is fastai's: `opt.hypers` is a list of dicts (one per group), `set_hyper(name, v)`
changes a hyper-parameter in every group (a scalar, one value per group, or a `slice` spread over
the groups), `freeze_to(n)` / `unfreeze()` choose which groups train, `step()` and `zero_grad()`
as in PyTorch. Schedules and the recorder talk to an optimiser only through that interface, so
`SGD`, `RMSProp`, `Adam`, `RAdam`, `Lamb`, `Lookahead` (and `ranger`) and `OptimWrapper` (any
`torch.optim` optimiser under our hyper-parameter names, in `minilearn.optim_torch`, built on
`BaseOptimizer` here) are interchangeable.

Every optimiser exposes `lr` and `mom` in `hypers` (for Adam-like ones `mom` is beta1 and
`sqr_mom` beta2, as in fastai). Numerics are checked against `torch.optim` in tests/test_optim.py.
"""

from __future__ import annotations

import copy
import math
import numbers
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
    if isinstance(params, Tensor):  # iterating a tensor would give its rows, not parameters
        raise TypeError("params: expected an iterable of tensors (e.g. model.parameters()), got a single tensor")
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


def _weight_decay(p: Tensor, grad: Tensor, state: dict, lr: float, wd: float, decouple: bool) -> Tensor:
    """Apply weight decay: shrink `p` in place (decoupled, AdamW-style) or return `grad + wd * p` (L2)."""
    if wd == 0 or not state.get("do_wd", True):
        return grad
    if decouple:
        p.mul_(1 - lr * wd)
        return grad
    return grad.add(p, alpha=wd)  # not in place: p.grad stays the gradient the loss gave


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


# ---------------------------------------------------------------------------------------- ours
class Optimizer(BaseOptimizer):
    """Base of our optimisers: parameter groups with their hyper-parameters; subclasses update.

    A subclass implements `update(p, state, **hypers)` for one parameter with a gradient;
    `state` is that parameter's own dict, kept across steps and saved by `state_dict()`.
    """

    def __init__(self, params, **defaults):
        groups = _as_param_groups(params)
        for k, v in defaults.items():
            _check_number(k, v)
        self.param_lists = groups
        self.hypers = [{k: _as_float(v) for k, v in defaults.items()} for _ in groups]
        self.state: dict[Tensor, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for p, hypers in self.all_params(with_grad=True):
            self.update(p, self.state.setdefault(p, {}), **hypers)

    def update(self, p: Tensor, state: dict, **hypers) -> None:
        """Update one parameter `p` (which has a gradient) in place; `state` is its own dict."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Drop the gradients (set to None, as PyTorch does by default)."""
        for p, _ in self.all_params(with_grad=True):
            p.grad = None

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


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay, as fastai's `SGD`.

    `mom`: heavy-ball momentum (`buf = mom * buf + grad`, PyTorch's SGD without dampening).
    As in fastai, momentum is used only if `mom != 0` when the optimiser is made; its value is
    then read every step, so a schedule can change it (a schedule can't switch it on).
    `wd`: decoupled weight decay (`p -= lr * wd * p`) by default, or L2 added to the gradient
    with `decouple_wd=False`.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.0, wd: float = 0.0, decouple_wd: bool = True):
        super().__init__(params, lr=lr, mom=mom, wd=wd)
        self.decouple_wd, self.use_mom = decouple_wd, mom != 0

    def update(self, p: Tensor, state: dict, lr: float, mom: float, wd: float, **_) -> None:
        grad = _weight_decay(p, p.grad, state, lr, wd, self.decouple_wd)
        if self.use_mom:
            buf = state.get("grad_avg")
            if buf is None:
                buf = state["grad_avg"] = grad.clone()
            else:
                buf.mul_(mom).add_(grad)
            grad = buf
        p.add_(grad, alpha=-lr)


class RMSProp(Optimizer):
    """RMSProp with fastai's names and defaults, computing what `torch.optim.RMSprop` computes.

    `sq = sqr_mom * sq + (1 - sqr_mom) * grad²` (no debiasing, as both fastai and torch), then
    `p -= lr * grad / (sqrt(sq) + eps)`; with momentum (used if `mom != 0` when made, as fastai),
    `buf = mom * buf + grad / (sqrt(sq) + eps)` and `p -= lr * buf`. That momentum is torch's:
    fastai averages the raw gradient and divides the average by the current `sqrt(sq) + eps`.
    `wd`: decoupled by default, L2 (torch's `weight_decay`) with `decouple_wd=False`.
    """

    def __init__(self, params, lr: float = 1e-2, mom: float = 0.0, sqr_mom: float = 0.99, eps: float = 1e-8,
                 wd: float = 0.0, decouple_wd: bool = True):
        _check_number("sqr_mom", sqr_mom)
        if sqr_mom > 1:
            raise ValueError(f"sqr_mom: expected a value in [0, 1], got {sqr_mom}")
        super().__init__(params, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)
        self.decouple_wd, self.use_mom = decouple_wd, mom != 0

    def update(self, p: Tensor, state: dict, lr: float, mom: float, sqr_mom: float, eps: float, wd: float,
               **_) -> None:
        grad = _weight_decay(p, p.grad, state, lr, wd, self.decouple_wd)
        sqr_avg = state.get("sqr_avg")
        if sqr_avg is None:
            sqr_avg = state["sqr_avg"] = torch.zeros_like(p)
        sqr_avg.mul_(sqr_mom).addcmul_(grad, grad, value=1 - sqr_mom)
        denom = sqr_avg.sqrt().add_(eps)
        if self.use_mom:
            buf = state.get("grad_avg")
            if buf is None:
                buf = state["grad_avg"] = torch.zeros_like(p)
            buf.mul_(mom).addcdiv_(grad, denom)
            p.add_(buf, alpha=-lr)
        else:
            p.addcdiv_(grad, denom, value=-lr)


class _AdamLike(Optimizer):
    """What Adam, RAdam and Lamb share: beta1 / beta2 as `mom` / `sqr_mom` in [0, 1), decoupled
    or L2 weight decay, and the dampened averages of the gradient and its square."""

    def __init__(self, params, decouple_wd: bool, **defaults):
        _check_below_one("mom", defaults["mom"])
        _check_below_one("sqr_mom", defaults["sqr_mom"])
        super().__init__(params, **defaults)
        self.decouple_wd = decouple_wd

    def _moments(self, p: Tensor, state: dict, lr: float, mom: float, sqr_mom: float, wd: float):
        """Weight decay, then the updated averages: (grad_avg, sqr_avg, step, debias1, debias2)."""
        grad = _weight_decay(p, p.grad, state, lr, wd, self.decouple_wd)
        grad_avg = state.get("grad_avg")
        if grad_avg is None:
            grad_avg = state["grad_avg"] = torch.zeros_like(p)
            state["sqr_avg"] = torch.zeros_like(p)
        sqr_avg = state["sqr_avg"]
        step = state["step"] = state.get("step", 0) + 1  # a Python int: debiasing needs no device sync
        grad_avg.lerp_(grad, 1 - mom)
        sqr_avg.mul_(sqr_mom).addcmul_(grad, grad, value=1 - sqr_mom)
        return grad_avg, sqr_avg, step, 1 - mom**step, 1 - sqr_mom**step


class Adam(_AdamLike):
    """Adam with fastai's defaults: AdamW (decoupled `wd`) by default, Adam with L2 if `decouple_wd=False`.

    `mom` is beta1, `sqr_mom` beta2. Both moments are debiased and `eps` is added after the
    square root, as `torch.optim.Adam`/`AdamW`, which this matches to rounding.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                 wd: float = 0.01, decouple_wd: bool = True):
        super().__init__(params, decouple_wd, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)

    def update(self, p: Tensor, state: dict, lr: float, mom: float, sqr_mom: float, eps: float, wd: float,
               **_) -> None:
        grad_avg, sqr_avg, step, debias1, debias2 = self._moments(p, state, lr, mom, sqr_mom, wd)
        denom = (sqr_avg.sqrt() / math.sqrt(debias2)).add_(eps)
        p.addcdiv_(grad_avg, denom, value=-lr / debias1)


class RAdam(_AdamLike):
    """Rectified Adam (Liu et al. 2019) with fastai's names and defaults; matches `torch.optim.RAdam`.

    While the variance estimate is unreliable (rho_t <= 5, as both fastai and torch) the step is
    plain momentum SGD on the debiased average. Where fastai and torch differ, this is torch's:
    eps is added to sqrt(sqr_avg) before dividing by sqrt(debias2) (fastai adds it after), a
    difference that fades as debias2 -> 1. `beta > 0` passes the denominator through
    `softplus(., beta)` (fastai's option; torch has none). `wd`: decoupled by default, L2 if not.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                 wd: float = 0.0, beta: float = 0.0, decouple_wd: bool = True):
        super().__init__(params, decouple_wd, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd, beta=beta)

    def update(self, p: Tensor, state: dict, lr: float, mom: float, sqr_mom: float, eps: float, wd: float,
               beta: float, **_) -> None:
        grad_avg, sqr_avg, step, debias1, debias2 = self._moments(p, state, lr, mom, sqr_mom, wd)
        rho_inf = 2 / (1 - sqr_mom) - 1
        rho = rho_inf - 2 * step * sqr_mom**step / debias2
        if rho > 5:
            rect = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            denom = sqr_avg.sqrt().add_(eps).div_(math.sqrt(debias2))
            if beta:
                denom = F.softplus(denom, beta=beta)
            p.addcdiv_(grad_avg, denom, value=-lr * rect / debias1)
        else:
            p.add_(grad_avg, alpha=-lr / debias1)


class Lamb(_AdamLike):
    """LAMB (You et al. 2019) as fastai's: the debiased Adam step scaled by the trust ratio ||p|| / ||step||.

    The ratio is clamped to at most 10, and taken as 1 if either norm is 0 (fastai's rule),
    computed on the device so a step never waits for it. Weight decay is applied before the step
    (decoupled by default, L2 if `decouple_wd=False`), as fastai.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                 wd: float = 0.0, decouple_wd: bool = True):
        super().__init__(params, decouple_wd, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)

    def update(self, p: Tensor, state: dict, lr: float, mom: float, sqr_mom: float, eps: float, wd: float,
               **_) -> None:
        grad_avg, sqr_avg, step, debias1, debias2 = self._moments(p, state, lr, mom, sqr_mom, wd)
        adam_step = (grad_avg / debias1).div_((sqr_avg / debias2).sqrt_().add_(eps))
        p_norm, step_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(adam_step)
        trust = torch.where((p_norm > 0) & (step_norm > 0), (p_norm / step_norm).clamp(max=10.0), 1.0)
        p.sub_(adam_step.mul_(trust * lr))


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

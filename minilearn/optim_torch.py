"""Any `torch.optim` optimiser under our interface and hyper-parameter names: `OptimWrapper`.

Schedules, the recorder and the Learner speak `hypers` / `set_hyper` in fastai's names (`lr`,
`mom`, `sqr_mom`, `wd`); torch's optimisers keep theirs in `param_groups` (`momentum`, `betas`,
`alpha`, `weight_decay`). `OptimWrapper` translates between the two with one fixed table, so a
torch optimiser is interchangeable with ours (`minilearn.optim`). `make_opt_func` makes a
Learner `opt_func` from a torch class; `params_for_torch` gives our groups in torch's form.
"""

from __future__ import annotations

import copy
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from minilearn.optim import BaseOptimizer, _as_float, _as_param_groups, _check_number


def params_for_torch(params) -> list[dict]:
    """Our parameter groups (parameters, a module, or a list of lists) as torch.optim's `[{'params': [...]}, ...]`."""
    return [{"params": g} for g in _as_param_groups(params)]


# ---------------------------------------------------------------------------------------- names
# torch's param-group key -> our name for it: (our name, None) for a plain value, or one
# (our name, index) per half of a pair such as `betas`. Keys not listed (lr, eps, amsgrad, ...)
# keep their torch names.
_OURS_FOR_TORCH_KEY: dict[str, list[tuple[str, int | None]]] = {
    "momentum": [("mom", None)],
    "betas": [("mom", 0), ("sqr_mom", 1)],
    "weight_decay": [("wd", None)],
}
# RMSprop's `alpha` is its squared-gradient average (our sqr_mom); ASGD's `alpha` is something else.
_OURS_FOR_RMSPROP_KEY = {**_OURS_FOR_TORCH_KEY, "alpha": [("sqr_mom", None)]}

# Our names that are not torch's: given to OptimWrapper(params, opt=...), they are translated.
_OUR_ONLY_NAMES = ("mom", "sqr_mom", "wd")


def _hyper_map(torch_keys: Iterable[str], is_rmsprop: bool) -> dict[str, tuple[str, int | None]]:
    """Our hyper-parameter names -> (torch's param-group key, index into a pair such as betas, or None)."""
    table = _OURS_FOR_RMSPROP_KEY if is_rmsprop else _OURS_FOR_TORCH_KEY
    out: dict[str, tuple[str, int | None]] = {}
    for key in torch_keys:
        if key == "params":
            continue
        for ours, idx in table.get(key, [(key, None)]):
            if ours in out:
                raise ValueError(f"opt: both {out[ours][0]!r} and {key!r} would be our {ours!r}")
            out[ours] = (key, idx)
    return out


def _write_value(group: dict, key: str, idx: int | None, value) -> None:
    """Write one of our values into torch's `group[key]`: a plain value, or one half of a pair such as betas."""
    if idx is not None:
        pair = list(group[key])
        pair[idx] = value
        group[key] = tuple(pair)
    elif isinstance(group[key], Tensor):  # a tensor lr (capturable/fused): fill it, keep the object
        group[key].fill_(value)
    else:
        group[key] = value


def _build(opt: Callable, params, kwargs: dict) -> torch.optim.Optimizer:
    """`opt(params_for_torch(params), **kwargs)`, our names in `kwargs` (mom, sqr_mom, wd) made `opt`'s own.

    Which key each of our names stands for is read from the param groups of `opt` built once with
    its defaults (torch's param-group keys are its constructor's hyper-parameters), through the
    fixed table. The optimiser is then built again with every value under torch's name, so torch
    checks them at construction as it would its own: `betas` in [0, 1), `nesterov=True` only with
    `momentum > 0`. (Writing our values after one build with the rest would skip the first check
    and fail the second: SGD(nesterov=True) refuses to be built with its default momentum 0.)
    A class that can't be built from its defaults alone takes its hyper-parameters in its names.
    """
    ours = {k: kwargs[k] for k in _OUR_ONLY_NAMES if k in kwargs}
    torch_kwargs = {k: v for k, v in kwargs.items() if k not in ours}
    if not ours:
        return opt(params_for_torch(params), **torch_kwargs)
    try:  # fresh group dicts for each build: torch fills its defaults into the dicts it is given
        with_defaults = opt(params_for_torch(params))
    except TypeError as e:
        cls_name = getattr(opt, "__name__", repr(opt))
        raise TypeError(f"{next(iter(ours))}: to translate {sorted(ours)} to {cls_name}'s names it is first built "
                        f"with its defaults, which failed ({e}); give its own names instead") from e
    names = _hyper_map(with_defaults.param_groups[0], isinstance(with_defaults, torch.optim.RMSprop))
    translated: dict = {}
    for name, value in ours.items():
        if name not in names:
            raise ValueError(f"{name}: {type(with_defaults).__name__} has no matching hyper-parameter "
                             f"(it takes {sorted(names)})")
        key, idx = names[name]
        if key in torch_kwargs:
            raise ValueError(f"{name}: given together with {key!r}, which it stands for; give one of them")
        translated.setdefault(key, with_defaults.param_groups[0][key])  # the other half of betas is the default
        _write_value(translated, key, idx, value)
    return opt(params_for_torch(params), **torch_kwargs, **translated)


# ---------------------------------------------------------------------------------------- wrapper
class OptimWrapper(BaseOptimizer):
    """Any `torch.optim` optimiser behind our interface and hyper-parameter names.

    Two ways to make one: `OptimWrapper(torch_opt)` around a built optimiser, or
    `OptimWrapper(params, opt=torch.optim.AdamW, lr=..., **kw)` as fastai, which builds it from our
    parameter groups; `kw` may use torch's names (`betas`, `weight_decay`) or ours (`mom`,
    `sqr_mom`, `wd`). As a Learner's `opt_func`: `partial(OptimWrapper, opt=torch.optim.AdamW)`,
    or `make_opt_func(torch.optim.AdamW)`. Names, from one fixed table: `momentum` or `betas[0]` is
    `mom`, `betas[1]` (or RMSprop's `alpha`) is `sqr_mom`, `weight_decay` is `wd`; `lr`, `eps` and
    others keep theirs. Built from our names, the torch optimiser is made once with its defaults to
    read which key each stands for, then made for real with torch's names (see `_build`).
    `hypers` is read fresh from torch's param groups and `set_hyper` writes through to them;
    `opt.opt` is the torch optimiser itself. Per-parameter weight-decay exclusion is not
    available (torch decays per group): put those parameters in a group of their own.
    """

    def __init__(self, opt_or_params, opt: Callable | None = None, **kwargs):
        if isinstance(opt_or_params, torch.optim.Optimizer):
            if opt is not None or kwargs:
                raise TypeError("opt: OptimWrapper(torch_opt) wraps a built optimiser; give no `opt` or "
                                "hyper-parameters (set them with set_hyper)")
            built = opt_or_params
        else:
            if opt is None or not callable(opt):
                raise TypeError(f"opt: expected a torch.optim.Optimizer class, as in "
                                f"OptimWrapper(params, opt=torch.optim.AdamW, lr=1e-3), got {opt!r}")
            for k in _OUR_ONLY_NAMES:
                if k in kwargs:
                    _check_number(k, kwargs[k])
            built = _build(opt, _as_param_groups(opt_or_params), kwargs)
            if not isinstance(built, torch.optim.Optimizer):
                raise TypeError(f"opt: expected it to make a torch.optim.Optimizer, got {type(built).__name__}")
        self.opt = built
        self._names = _hyper_map(built.param_groups[0], isinstance(built, torch.optim.RMSprop))

    @property
    def param_lists(self) -> list[list[Tensor]]:
        """torch's parameter groups as lists of tensors (the same lists torch holds)."""
        return [pg["params"] for pg in self.opt.param_groups]

    @property
    def hypers(self) -> list[dict]:
        """A fresh list of dicts in our names, read from torch's param groups (writing to it changes nothing)."""
        return [{ours: _as_float(pg[key] if idx is None else pg[key][idx]) for ours, (key, idx) in self._names.items()}
                for pg in self.opt.param_groups]

    @property
    def state(self):
        """torch's per-parameter state."""
        return self.opt.state

    def _check_hyper_name(self, name: str) -> None:
        if name not in self._names:
            raise ValueError(f"{name}: {type(self.opt).__name__} has no such hyper-parameter "
                             f"(it has {sorted(self._names)})")

    def _write_hyper(self, name: str, values: list) -> None:
        key, idx = self._names[name]
        for pg, v in zip(self.opt.param_groups, values):
            _write_value(pg, key, idx, v)

    def step(self) -> None:
        """torch's step (it skips parameters without a gradient, so frozen ones stay put)."""
        self.opt.step()

    def zero_grad(self) -> None:
        """torch's zero_grad (gradients set to None)."""
        self.opt.zero_grad()

    def clear_state(self) -> None:
        """Forget torch's per-parameter state (running averages, momentum buffers)."""
        self.opt.state = defaultdict(dict)

    def exclude_from_wd(self, params: Iterable[Tensor]) -> None:
        raise NotImplementedError("exclude_from_wd: torch.optim applies weight decay per group; "
                                  "put those parameters in their own group and set its wd to 0")

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict, deep-copied so that later steps don't change it."""
        return copy.deepcopy(self.opt.state_dict())

    def load_state_dict(self, sd: dict) -> None:
        """torch's load_state_dict (it checks the groups and their sizes), from a copy of `sd`."""
        if not isinstance(sd, dict):
            raise TypeError(f"sd: expected a dict from state_dict(), got {type(sd).__name__}")
        self.opt.load_state_dict(copy.deepcopy(sd))

    def __repr__(self) -> str:
        last = {k: v for k, v in self.hypers[-1].items() if k in ("lr", "mom", "sqr_mom", "eps", "wd")}
        return f"OptimWrapper({type(self.opt).__name__}, {len(self.param_lists)} group(s), {last})"


def make_opt_func(opt: Callable, **kwargs) -> Callable[..., OptimWrapper]:
    """A Learner `opt_func` for a torch.optim class: `make_opt_func(torch.optim.AdamW, wd=0.1)`."""
    if not callable(opt):
        raise TypeError(f"opt: expected a torch.optim.Optimizer class, got {opt!r}")
    return functools.partial(OptimWrapper, opt=opt, **kwargs)


def make_optimizer(opt_func: Callable, params, lr: float) -> BaseOptimizer:
    """A Learner's optimiser from its `opt_func`: `opt_func(params, lr=lr)`, where a torch.optim
    class (or a partial of one) is built as an `OptimWrapper` and a torch optimiser returned by a
    function is wrapped in one, so that schedules speak to every optimiser alike."""
    cls = getattr(opt_func, "func", opt_func)
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        return OptimWrapper(params, opt=opt_func, lr=lr)
    opt = opt_func(params, lr=lr)
    return OptimWrapper(opt) if isinstance(opt, torch.optim.Optimizer) else opt

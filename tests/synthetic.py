"""Tiny synthetic problems and learners shared by the tests (CPU, milliseconds)."""

from __future__ import annotations

import torch
from torch import nn

from minilearn import Callback, DataLoaders, Learner, SGD, accuracy
from minilearn.callback import EVENTS


def linear_data(n: int = 64, n_valid: int = 32, n_features: int = 3, seed: int = 0):
    """x -> x @ w + 1 with a little noise: train and valid tensors."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_features, 1, generator=g)
    x = torch.randn(n + n_valid, n_features, generator=g)
    y = x @ w + 1 + 0.01 * torch.randn(n + n_valid, 1, generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def class_data(n: int = 90, n_valid: int = 45, n_features: int = 4, n_classes: int = 3, seed: int = 0):
    """Gaussian clusters, one per class: train and valid tensors with int64 labels."""
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(n_classes, n_features, generator=g)
    y = torch.randint(0, n_classes, (n + n_valid,), generator=g)
    x = centers[y] + torch.randn(n + n_valid, n_features, generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def regression_learner(n: int = 64, n_valid: int = 32, bs: int = 16, lr: float = 0.1, seed: int = 0, **kwargs) -> Learner:
    """A linear regression Learner on `linear_data`, with the default callbacks unless told."""
    x, y, vx, vy = linear_data(n, n_valid, seed=seed)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=bs, seed=seed)
    torch.manual_seed(seed)
    return Learner(dls, nn.Linear(x.shape[1], 1), nn.MSELoss(), opt_func=SGD, lr=lr, **kwargs)


def small_learner(**kwargs) -> Learner:
    """2 training batches and 1 validation batch per epoch, no table."""
    return regression_learner(n=32, n_valid=16, bs=16, **kwargs)


class LogEvents(Callback):
    """Appends the name of every event it sees (with the phase for batch events)."""

    def __init__(self):
        self.events: list[str] = []


for _event in EVENTS:
    setattr(LogEvents, _event, lambda self, _e=_event: self.events.append(_e))


def run_with(cb: Callback, n_epoch: int = 2, **kwargs) -> LogEvents:
    """Fit a `small_learner` for `n_epoch` with `cb` and a `LogEvents`; returns the log."""
    learn = small_learner(**kwargs)
    log = LogEvents()
    with learn.no_logging():
        learn.fit(n_epoch, cbs=[log, cb])
    return log


def class_learner(tmp_path=None, bs=16, seed=0, dropout=0.0, **kwargs) -> Learner:
    """A 4-16-3 classifier (SGD with momentum, accuracy) on `class_data`, saving under `tmp_path`."""
    x, y, vx, vy = class_data(n=96, n_valid=32)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=bs, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
    kwargs.setdefault("opt_func", lambda p, lr: SGD(p, lr, mom=0.9))
    return Learner(dls, model, nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy,
                   path=tmp_path if tmp_path is not None else ".", **kwargs)


def finder_learner(seed: int = 0, n: int = 300) -> Learner:
    """A 4-16-3 classifier with dropout (SGD with momentum) on 300 items: enough batches for lr_find."""
    x, y, vx, vy = class_data(n=n, n_valid=60, seed=seed)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 3))
    return Learner(dls, model, nn.CrossEntropyLoss(), opt_func=lambda p, lr: SGD(p, lr, mom=0.9), lr=0.05)

"""Recorder: the numbers of a fit, kept as numbers — per batch (loss, lr) and per epoch (the table).

Per batch it only keeps the loss tensor where it is (no host synchronisation, no tensor op in
the training loop); once per epoch it copies them to the host in one go and smooths them there.
"""

from __future__ import annotations

import time

import torch

from minilearn.callback import Callback, note_once, where_in_loop
from minilearn.callbacks.progress import format_time
from minilearn.metrics import AvgLoss, AvgSmoothLoss, to_float


def _accumulate(metrics, learn) -> None:
    """Each metric takes the batch; an error names the metric that raised (not just the Recorder)."""
    for m in metrics:
        try:
            m.accumulate(learn)
        except Exception as e:
            note_once(e, f"minilearn: raised in metric {m.name!r} ({type(m).__name__}) taking the batch; "
                      f"{where_in_loop(learn).removeprefix('minilearn: raised ')}")
            raise


def _value(m) -> float | None:
    """A metric's value as a float; an error names the metric."""
    try:
        return to_float(m.value, m.name)
    except Exception as e:
        note_once(e, f"minilearn: raised in metric {m.name!r} ({type(m).__name__}) computing its value")
        raise


class Recorder(Callback):
    """Records the smoothed training loss, learning rates, and each epoch's losses and metrics.

    - `losses`, `lrs`: one value per training batch (the smoothed loss, the last group's lr);
    - `values`: one list per epoch, `[train_loss, valid_loss, *metrics]` as floats (fastai's);
    - `history`: one dict per epoch keyed by column name, time in seconds included;
    - `metric_names`: the table's columns, `['epoch', 'train_loss', 'valid_loss', ..., 'time']`;
    - `column(name)`: one column of `history` as a list, so a metric is found by its name.
    """

    order = 50
    sits_out = ("lr_find", "validate")

    def __init__(self, add_time: bool = True, train_metrics: bool = False, valid_metrics: bool = True,
                 beta: float = 0.98):
        self.add_time, self.train_metrics, self.valid_metrics = add_time, train_metrics, valid_metrics
        self.valid_loss = AvgLoss()
        self._smooth = AvgSmoothLoss(beta)  # checks beta; fed by _flush, read as `smooth_loss`
        self._losses: list[float] = []  # smoothed losses as floats, made from `_pending` by _flush
        self._pending: list = []        # raw batch losses not yet flushed, still on the device
        self.lrs: list[float] = []
        self.iters: list[int] = []
        self.values: list[list] = []
        self.history: list[dict] = []
        self.log: dict = {}
        self.last_valid: list | None = None
        self.hps: dict[str, list] = {}  # per-batch scheduled hyper-parameters, set by ParamScheduler

    def __repr__(self) -> str:
        if not self.history:
            return f"Recorder(nothing recorded yet; beta {self.beta})"
        return (f"Recorder({len(self.values)} epoch(s), {len(self._losses) + len(self._pending)} training batch(es); "
                f"last row {self.history[-1]})")

    # -- the names of the table's columns
    @property
    def metric_names(self) -> list[str]:
        names = ["epoch", "train_loss"]
        if self.train_metrics:
            names += [f"train_{m.name}" for m in self.learn.metrics]
        names.append("valid_loss")
        if self.valid_metrics:
            names += [m.name for m in self.learn.metrics]
        return names + (["time"] if self.add_time else [])

    # -- events
    @property
    def beta(self) -> float:
        """The smoothing of the train loss (fastai's default 0.98)."""
        return self._smooth.beta

    def before_fit(self) -> None:
        self._smooth.reset()
        self._losses, self._pending, self.lrs, self.iters, self.values, self.history = [], [], [], [], [], []
        self.hps, self.log, self.start_time = {}, {}, time.perf_counter()

    def before_epoch(self) -> None:
        self.start_time = time.perf_counter()
        self.log = dict.fromkeys(self.metric_names)
        self.log["epoch"] = self.learn.epoch
        self.last_valid = None

    def before_train(self) -> None:
        for m in self.learn.metrics if self.train_metrics else ():
            m.reset()

    def before_validate(self) -> None:
        self.valid_loss.reset()
        for m in self.learn.metrics:
            m.reset()

    def after_batch(self) -> None:
        learn = self.learn
        if learn.loss is None:  # the batch was cancelled before its loss
            return
        if learn.training:
            self._pending.append(learn.loss if learn.loss.ndim == 0 else learn.loss.mean())
            self.lrs.append(learn.opt.hypers[-1]["lr"])
            if self.train_metrics:
                _accumulate(learn.metrics, learn)
        else:
            self.valid_loss.accumulate(learn)
            _accumulate(learn.metrics, learn)

    def after_train(self) -> None:
        self._flush()  # one host sync per epoch, not per batch
        self.log["train_loss"] = self._losses[-1] if self._losses else None
        if self.train_metrics:
            for m in self.learn.metrics:
                self.log[f"train_{m.name}"] = _value(m)

    def after_validate(self) -> None:
        self.last_valid = [to_float(self.valid_loss.value, "valid_loss")] + [_value(m) for m in self.learn.metrics]
        if self.log:
            self.log["valid_loss"] = self.last_valid[0]
            if self.valid_metrics:
                for m, v in zip(self.learn.metrics, self.last_valid[1:]):
                    self.log[m.name] = v

    def after_epoch(self) -> None:
        self._flush()
        self.iters.append(len(self._losses))
        if self.add_time:
            self.log["time"] = time.perf_counter() - self.start_time
        self.values.append([v for k, v in self.log.items() if k not in ("epoch", "time")])
        self.history.append(dict(self.log))
        if getattr(self.learn, "progress", None) is None:  # no table: the row goes to the logger, as fastai's
            self.learn.logger([format_time(v) if k == "time" else v for k, v in self.log.items()])

    # -- the state protocol (see Callback.state_dict): the whole record, so a resumed run goes on with it
    def state_dict(self) -> dict:
        """The history, per-batch losses and lrs, scheduled hyper-parameters and the smoothed loss."""
        self._flush()
        return {"losses": list(self._losses), "lrs": list(self.lrs), "iters": list(self.iters),
                "values": [list(v) for v in self.values], "history": [dict(h) for h in self.history],
                "hps": {k: list(v) for k, v in self.hps.items()}, "log": dict(self.log),
                "last_valid": self.last_valid, "smooth": {"count": self._smooth.count, "val": self._smooth.val.clone(),
                           "host_val": self._smooth.host_val}}

    def load_state_dict(self, state: dict) -> None:
        self._losses, self._pending = list(state["losses"]), []
        self.lrs, self.iters = list(state["lrs"]), list(state["iters"])
        self.values, self.history = [list(v) for v in state["values"]], [dict(h) for h in state["history"]]
        self.hps, self.log, self.last_valid = {k: list(v) for k, v in state["hps"].items()}, dict(state["log"]), \
            state["last_valid"]
        smooth = state["smooth"]
        self._smooth.count, self._smooth.val, self._smooth.host_val = smooth["count"], smooth["val"].clone(), \
            smooth["host_val"]

    # -- reading the numbers back
    def _flush(self) -> None:
        """Bring the pending batch losses to the host and smooth them: EMA with `beta`, debiased."""
        if not self._pending:
            return
        self._losses += self._smooth.add(torch.stack(self._pending).float().tolist())
        self._pending = []

    @property
    def smooth_loss(self) -> AvgSmoothLoss:
        """The smoothed train loss as fastai's `AvgSmoothLoss` (`.value`, `.beta`, `.count`), up to
        the last training batch; `learn.smooth_loss` is its value."""
        self._flush()
        return self._smooth

    @property
    def losses(self) -> list[float]:
        """The smoothed training loss after each training batch, as floats."""
        self._flush()
        return list(self._losses)

    def column(self, name: str) -> list:
        """One column of the per-epoch history, by name (e.g. `'accuracy'`, `'valid_loss'`)."""
        names = self.metric_names if self.learn is not None else list(self.history[0]) if self.history else []
        if name not in names:
            raise KeyError(f"name: no column {name!r}; the columns are {names}")
        return [row.get(name) for row in self.history]

    def plot_loss(self, skip_start: int = 5, with_valid: bool = True):
        """Training loss per batch (and validation loss per epoch) against iterations; a Figure."""
        from minilearn.plotting import new_figure, show_once

        fig, ax = new_figure()
        losses = self.losses
        ax.plot(range(skip_start, len(losses)), losses[skip_start:], label="train")
        if with_valid:
            points = [(i, row["valid_loss"]) for i, row in zip(self.iters, self.history)
                      if row.get("valid_loss") is not None and i > skip_start]
            if points:
                ax.plot(*zip(*points), label="valid")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.legend()
        return show_once(fig)

    def plot_sched(self, keys: list[str] | None = None):
        """The scheduled hyper-parameters (lr, mom, ...) per batch of the last fit; a Figure."""
        from minilearn.plotting import new_figure, show_once

        hps = self.hps if self.hps else {"lr": self.lrs}
        keys = list(hps) if keys is None else keys
        missing = [k for k in keys if k not in hps]
        if missing:
            raise KeyError(f"keys: no schedule for {missing}; scheduled: {list(hps)}")
        fig, axes = new_figure(1, len(keys), figsize=(5 * len(keys), 4))
        for ax, k in zip(axes if len(keys) > 1 else [axes], keys):
            ax.plot(hps[k])
            ax.set_xlabel("iteration")
            ax.set_ylabel(k)
        return show_once(fig)

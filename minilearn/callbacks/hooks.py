"""Hooks on a model's layers, the callbacks built on them, and the model summary (fastai's
`callback.hook`).

    Hook, Hooks, hook_output(s)   run a function on a layer's output (or gradient) at every call
    model_sizes & co              shapes and parameter counts, found by one forward pass
    HookCallback                  hooks that live for a fit (or every n-th batch), removed even on error
    ActivationStats               per layer and batch: mean, std, fraction near zero, histogram; plots
    layer_info, summary           fastai's table behind `Learner.summary()`

Every hook is removed by the code that registered it: a `with` block, or the callback's
`after_fit` / `cleanup_fit` (which runs when a fit or pass raised), so a model never keeps a hook
that nobody holds.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import torch
from fastcore.foundation import L
from torch import Tensor, nn

from minilearn.callback import Callback
from minilearn.checks import check_bool, check_callable, check_int
from minilearn.data import inputs_of
from minilearn.torch_basics import kept_modes, to_detach, to_device

__all__ = [
    "Hook", "Hooks", "hook_output", "hook_outputs", "flatten_model", "has_params", "in_channels", "total_params",
    "dummy_eval", "model_sizes", "num_features_model", "HookCallback", "ActivationStats", "LayerInfo", "layer_rows",
    "layer_info", "Summary", "summary",
]

HookFunc = Callable[[nn.Module, Any, Any], Any]


# ---------------------------------------------------------------- modules
def flatten_model(m: nn.Module) -> list[nn.Module]:
    """The leaf modules of `m` (those without children), in definition order, each once; `m` itself
    when it has no children (fastai's `flatten_model`, which may list a shared layer twice)."""
    if not isinstance(m, nn.Module):
        raise TypeError(f"m: expected a torch.nn.Module, got {type(m).__name__}")
    leaves = [mod for mod in m.modules() if next(mod.children(), None) is None]
    return leaves


def has_params(m: nn.Module) -> bool:
    """Whether `m` (or one of its children) has at least one parameter."""
    return next(m.parameters(), None) is not None


def in_channels(m: nn.Module) -> int:
    """The number of input channels of `m`: those of its first layer with a 4-d weight (a 2-d conv)."""
    for layer in flatten_model(m):
        weight = getattr(layer, "weight", None)
        if isinstance(weight, Tensor) and weight.ndim == 4:
            return weight.shape[1]
    raise ValueError(f"m: {type(m).__name__} has no layer with a 4-d weight (a 2-d convolution) to read "
                     f"its input channels from")


def total_params(m: nn.Module) -> tuple[int, bool]:
    """(number of parameters of `m`, whether they train), as fastai's: the second is the first
    parameter's `requires_grad`, False when there is none."""
    params = list(m.parameters())
    return sum(p.numel() for p in params), (params[0].requires_grad if params else False)


def _modules_arg(name: str, ms) -> list[nn.Module]:
    """`ms` as a list of modules: a list/tuple of them, an nn.Sequential or nn.ModuleList (their
    children), an nn.ModuleDict (its values); else a TypeError naming `name`."""
    if isinstance(ms, nn.ModuleDict):
        ms = ms.values()
    elif isinstance(ms, nn.Module) and not hasattr(type(ms), "__iter__"):
        raise TypeError(f"{name}: expected modules (a list, an nn.Sequential or nn.ModuleList), got a "
                        f"{type(ms).__name__}; for all its layers pass flatten_model(m), for one pass [m]")
    try:
        ms = list(ms)
    except TypeError:
        raise TypeError(f"{name}: expected an iterable of torch.nn.Module, got {type(ms).__name__}") from None
    bad = [type(m).__name__ for m in ms if not isinstance(m, nn.Module)]
    if bad:
        raise TypeError(f"{name}: expected torch.nn.Module items, got {bad[0]}")
    return ms


def _model_device(model: nn.Module) -> torch.device | None:
    """Where `model` lives: its first parameter's (or buffer's) device; None when it has neither."""
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return t.device if t is not None else None


# ---------------------------------------------------------------- hooks
class Hook:
    """Runs `hook_func(module, input, output)` at every forward call of `m` (with `is_forward=False`,
    at every backward pass: `hook_func(module, grad_input, grad_output)`) and keeps what it
    returns in `stored`.

    `detach` gives `hook_func` the tensors detached from the graph (and with `cpu` copied to the
    CPU; with `gather`, under several processes, every process's concatenated), so keeping them
    keeps no graph alive. Remove it with `remove()`, or use it as a context manager. Backward
    hooks are torch's full backward hooks (`register_full_backward_hook`), not fastai's
    deprecated `register_backward_hook`, which gives wrong input gradients for layers made of
    several operations; like torch's, they refuse a layer whose output is changed in place
    (a ReLU(inplace=True) after it).
    """

    def __init__(self, m: nn.Module, hook_func: HookFunc, is_forward: bool = True, detach: bool = True,
                 cpu: bool = False, gather: bool = False):
        if not isinstance(m, nn.Module):
            raise TypeError(f"m: expected a torch.nn.Module, got {type(m).__name__}")
        check_callable("hook_func", hook_func, "a function hook_func(module, input, output)")
        for name, value in (("is_forward", is_forward), ("detach", detach), ("cpu", cpu), ("gather", gather)):
            check_bool(name, value)
        self.module, self.hook_func, self.is_forward = m, hook_func, is_forward
        self.detach, self.cpu, self.gather = detach, cpu, gather
        self.stored, self.removed = None, False
        register = m.register_forward_hook if is_forward else m.register_full_backward_hook
        self.hook = register(self.hook_fn)  # torch's handle

    def hook_fn(self, module: nn.Module, input, output) -> None:
        """Call `hook_func` on what torch passes (detached first if asked) and store its result."""
        if self.detach:
            input = to_detach(input, cpu=self.cpu, gather=self.gather)
            output = to_detach(output, cpu=self.cpu, gather=self.gather)
        self.stored = self.hook_func(module, input, output)
        # returns None: a forward hook that returned something would replace the layer's output

    def remove(self) -> None:
        """Take the hook off the module (a second call does nothing)."""
        if not self.removed:
            self.hook.remove()
            self.removed = True

    def __enter__(self) -> "Hook":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        kind = "forward" if self.is_forward else "backward"
        return f"Hook({type(self.module).__name__}, {kind}{', removed' if self.removed else ''})"


class Hooks:
    """A `Hook` with `hook_func` on each module of `ms` (a list, an nn.Sequential or nn.ModuleList):
    indexable and iterable as a list of hooks, `stored` holds each one's result, `remove()` or
    leaving the `with` block removes them all."""

    def __init__(self, ms, hook_func: HookFunc, is_forward: bool = True, detach: bool = True, cpu: bool = False):
        ms = _modules_arg("ms", ms)  # every argument checked before any hook is registered
        check_callable("hook_func", hook_func, "a function hook_func(module, input, output)")
        self.hooks = [Hook(m, hook_func, is_forward, detach, cpu) for m in ms]

    def __getitem__(self, i):
        return self.hooks[i]

    def __len__(self) -> int:
        return len(self.hooks)

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.hooks)

    @property
    def stored(self) -> L:
        """What each hook's function returned at its module's last call (None before any)."""
        return L(h.stored for h in self.hooks)

    def remove(self) -> None:
        """Take every hook off its module."""
        for h in self.hooks:
            h.remove()

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Hooks({len(self.hooks)} hooks)"


def _output_of(module: nn.Module, input, output):
    """The hook function of `hook_output(s)`: the output (or, backward, the gradients wrt it)."""
    return output


def hook_output(module: nn.Module, detach: bool = True, cpu: bool = False, grad: bool = False) -> Hook:
    """A `Hook` whose `stored` is `module`'s output at its last call (with `grad`, the tuple of
    gradients with respect to its outputs, at the last backward pass)."""
    return Hook(module, _output_of, is_forward=not grad, detach=detach, cpu=cpu)


def hook_outputs(modules, detach: bool = True, cpu: bool = False, grad: bool = False) -> Hooks:
    """`Hooks` whose `stored` are the outputs of `modules` (with `grad`, the gradients wrt them)."""
    return Hooks(modules, _output_of, is_forward=not grad, detach=detach, cpu=cpu)


# ---------------------------------------------------------------- sizes
def _check_size(size) -> tuple[int, ...]:
    try:
        size = tuple(size)
        ok = len(size) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"size: expected the input's spatial size as positive ints, such as (64, 64), got {size!r}")
    return size


def dummy_eval(m: nn.Module, size: tuple[int, ...] = (64, 64)):
    """`m`'s output, in eval mode and without gradients, for one random image of `size` with as
    many channels as its first 2-d conv takes (uniform in [-1, 1]).

    Unlike fastai's, `m` is left in the train/eval modes it had, and the input comes from a
    generator of its own, so the global RNG draws the same numbers afterwards.
    """
    size = _check_size(size)
    ch_in = in_channels(m)
    param = next(m.parameters())
    x = torch.rand((1, ch_in, *size), generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = x.to(device=param.device, dtype=param.dtype if param.is_floating_point() else torch.float32)
    with kept_modes(m), torch.no_grad():
        return m.eval()(x)


def _shapes(o):
    """The shape of a tensor, or the shapes inside tuples/lists/dicts (None for anything else)."""
    if isinstance(o, Tensor):
        return o.shape
    if isinstance(o, (tuple, list)):
        return type(o)(_shapes(x) for x in o) if not hasattr(o, "_fields") else tuple(_shapes(x) for x in o)
    if isinstance(o, dict):
        return {k: _shapes(v) for k, v in o.items()}
    return None


def model_sizes(m: nn.Module, size: tuple[int, ...] = (64, 64)) -> list:
    """The output shape of each child of `m` (each layer of an nn.Sequential) for a dummy input
    of `size` (see `dummy_eval`)."""
    layers = list(m.children()) or [m]
    with hook_outputs(layers) as hooks:
        dummy_eval(m, size=size)
        return [_shapes(h.stored) for h in hooks]


def num_features_model(m: nn.Module) -> int:
    """The number of features (channels) `m` outputs, found by running it on dummy images of
    32x32 pixels, then twice as big until it runs (at most 2048)."""
    in_channels(m)  # a model without a 2-d conv fails here, not after trying every size
    sz = 32
    while True:
        try:
            return model_sizes(m, (sz, sz))[-1][1]
        except Exception:
            sz *= 2
            if sz > 2048:
                raise


# ---------------------------------------------------------------- the callback
class HookCallback(Callback):
    """Registers `self.hook(module, input, output)` on `modules` for a fit: subclass it and define
    `hook`, or pass `hook=f`; what each hook returned is in `self.hooks.stored`.

    `modules` defaults to the model's leaf layers with parameters (all leaves with
    `include_paramless`), found again at each fit. With `every=n` the hooks are on only for the
    training batches whose `train_iter` is a multiple of n. Hooks are registered at `before_fit`
    and removed at `after_fit` (kept if `remove_end=False`, until the next fit), and removed in
    any case when the fit raised (`cleanup_fit`). A stand-alone `validate` / `get_preds` is hooked
    too (without `every`), as in fastai, where those passes run `before_fit` / `after_fit`.
    `is_forward`, `detach` and `cpu` go to `Hooks` (fastai's defaults: outputs detached, on the CPU).

    Unlike fastai's, hooks left from an earlier fit are removed before new ones are made, and
    with `every` the hooks of a batch are removed at its end whatever the callback's `order`.
    """

    def __init__(self, modules=None, every: int | None = None, remove_end: bool = True, is_forward: bool = True,
                 detach: bool = True, cpu: bool = True, include_paramless: bool = False,
                 hook: HookFunc | None = None):
        super().__init__()
        self.modules = _modules_arg("modules", modules) if modules is not None else None
        self.every = check_int("every", every, low=1) if every is not None else None
        for name, value in (("remove_end", remove_end), ("is_forward", is_forward), ("detach", detach),
                            ("cpu", cpu), ("include_paramless", include_paramless)):
            check_bool(name, value)
        self.remove_end, self.is_forward, self.detach, self.cpu = remove_end, is_forward, detach, cpu
        self.include_paramless = include_paramless
        if hook is not None:
            self.hook = check_callable("hook", hook, "a function hook(module, input, output)")
        elif type(self).hook is HookCallback.hook:
            raise TypeError("hook: HookCallback needs a hook function: pass hook=f(module, input, output) "
                            "or subclass it and define hook(self, module, input, output)")
        self.hooks: Hooks | None = None
        self._default_modules = modules is None
        self._live = False          # hooks on the model now
        self._in_fit = False        # between before_fit and after_fit
        self._batch_hooked = False  # registered for this batch (every=n)
        self._pass_hooked = False   # registered for a stand-alone validation pass

    def hook(self, module: nn.Module, input, output) -> Any:
        """What to run on each hooked module's call; its result is stored (define it in a subclass)."""
        raise NotImplementedError

    # -- events
    def before_fit(self) -> None:
        self._remove()  # hooks a remove_end=False fit left behind
        self._in_fit = True
        self._find_modules()
        if self.every is None:
            self._register()

    def before_validate(self) -> None:
        if not self._in_fit and not self._live and self.every is None:  # validate() / get_preds() alone
            self._find_modules()
            self._register()
            self._pass_hooked = True

    def after_validate(self) -> None:
        if self._pass_hooked:
            self._remove()

    def before_batch(self) -> None:
        if self.every is not None and self.learn.training and self.learn.train_iter % self.every == 0:
            self._register()
            self._batch_hooked = True

    def after_batch(self) -> None:
        if self._batch_hooked:
            self._remove()

    def after_fit(self) -> None:
        self._in_fit = False
        if self.remove_end:
            self._remove()

    def cleanup_fit(self) -> None:
        # After every fit, and after a validate / get_preds that raised: a fit or pass that never
        # reached its end (an error) leaves no hook behind.
        if self._in_fit or self._batch_hooked or self._pass_hooked:
            self._remove()
        self._in_fit = False

    # -- registering
    def _find_modules(self) -> None:
        if self._default_modules:  # the model of this fit (it may have changed since the last)
            self.modules = [m for m in flatten_model(self.learn.model) if self.include_paramless or has_params(m)]

    def _register(self) -> None:
        self._remove()
        self.hooks = Hooks(self.modules, self.hook, self.is_forward, self.detach, self.cpu)
        self._live = True

    def _remove(self) -> None:
        if self.hooks is not None:
            self.hooks.remove()
        self._live = self._batch_hooked = self._pass_hooked = False


# ---------------------------------------------------------------- activation statistics
NEAR_ZERO = 0.05     # fastai's threshold: an activation <= 0.05 counts as near zero
HIST_BINS, HIST_MAX = 40, 10.0  # fastai's and the course's histogram: 40 bins over [0, 10]


def _first_tensor(o) -> Tensor | None:
    """`o` if it is a tensor, else the first tensor inside its (nested) tuples/lists."""
    if isinstance(o, Tensor):
        return o
    if isinstance(o, (tuple, list)):
        for x in o:
            t = _first_tensor(x)
            if t is not None:
                return t
    return None


class ActivationStats(HookCallback):
    """Records, for each hooked layer and each training batch, the mean and std of its output and
    the fraction of it near zero (<= 0.05, fastai's rule: every negative value counts too); with
    `with_hist`, the histogram of |output| in 40 bins over [0, 10] (the course's; fastai bins the
    signed output, so negative values fall outside its histogram).

    `stats[batch][layer]` is a dict of plain floats 'mean', 'std', 'near_zero' (and 'hist', a
    CPU tensor of 40 counts); `layer_stats(i)` and `hist(i)` read one layer over batches, and the
    plots return Figures. `stats` starts afresh at each fit, as in fastai. Other arguments as
    `HookCallback`, except `cpu`: the statistics are computed where the activations are and
    only the numbers (one transfer per batch) come to the CPU, where fastai copies each whole
    activation first. It sits out `lr_find` and stand-alone `validate` / `get_preds`, and does no
    work on validation batches (fastai computes their statistics, then drops them).
    """

    order = -20  # before TrainEvalCallback counts the batch, so `train_iter` is this batch's
    sits_out = ("lr_find", "validate")

    def __init__(self, with_hist: bool = False, every: int | None = None, modules=None, remove_end: bool = True,
                 is_forward: bool = True, detach: bool = True, cpu: bool = False, include_paramless: bool = False):
        super().__init__(modules, every, remove_end, is_forward, detach, cpu, include_paramless)
        self.with_hist = check_bool("with_hist", with_hist)
        self.stats = L()

    def before_fit(self) -> None:
        super().before_fit()
        self.stats = L()

    def hook(self, module: nn.Module, input, output):
        """The batch's numbers for one layer, as tensors on the activation's device (no sync here)."""
        learn = self.learn
        if learn is None or not learn.training:  # validation, or a model used after the fit
            return None
        o = _first_tensor(output)  # an RNN's (output, state): the output
        if o is None:
            return None
        o = o.float()
        mean_std = torch.stack([o.mean(), o.std()])
        n_near_zero = (o <= NEAR_ZERO).sum()  # an int64 count: exact however large the activation
        hist = o.abs().histc(HIST_BINS, 0, HIST_MAX) if self.with_hist else None
        return mean_std, n_near_zero, o.numel(), hist

    def before_batch(self) -> None:
        super().before_batch()
        if self._live:
            for h in self.hooks:
                h.stored = None  # a batch cancelled before the model ran records nothing stale

    def after_batch(self) -> None:
        if self._live and self.learn.training:
            record = self._batch_record(list(self.hooks.stored))
            if record is not None:
                self.stats.append(record)
        super().after_batch()

    def _batch_record(self, stored: list) -> list[dict] | None:
        """One batch's dicts, one per layer, read back to the CPU in one transfer per kind of number;
        None when no hooked layer ran. A layer that did not run this batch gets NaNs."""
        ran = [s for s in stored if s is not None]
        if not ran:
            return None
        mean_std = torch.stack([s[0] for s in ran]).tolist()  # the host-device sync of this callback
        near = torch.stack([s[1] for s in ran]).tolist()
        hists = torch.stack([s[3] for s in ran]).cpu() if self.with_hist else None
        record, j = [], 0
        for s in stored:
            if s is None:
                row = {"mean": math.nan, "std": math.nan, "near_zero": math.nan}
                if self.with_hist:
                    row["hist"] = torch.zeros(HIST_BINS)
            else:
                row = {"mean": mean_std[j][0], "std": mean_std[j][1], "near_zero": near[j] / s[2]}
                if self.with_hist:
                    row["hist"] = hists[j]
                j += 1
            record.append(row)
        return record

    # -- reading the numbers back
    def _layer(self, idx: int) -> int:
        if not self.stats:
            raise ValueError("stats: nothing recorded yet; fit with this callback first")
        n = len(self.stats[0])
        return check_int("idx", idx, -n, n - 1)

    def layer_stats(self, idx: int) -> L:
        """Layer `idx` over the recorded batches: `L(means, stds, near_zeros)`, each an L of floats."""
        idx = self._layer(idx)
        return L(L(batch[idx][k] for batch in self.stats) for k in ("mean", "std", "near_zero"))

    def _hist_counts(self, idx: int) -> Tensor:
        idx = self._layer(idx)
        if not self.with_hist:
            raise ValueError("hist: this ActivationStats records no histograms; make it with with_hist=True")
        return torch.stack([batch[idx]["hist"] for batch in self.stats]).t().float()

    def hist(self, idx: int) -> Tensor:
        """Layer `idx`'s histograms over batches, shape (40 bins, n batches), as log1p(count) (fastai's)."""
        return self._hist_counts(idx).log1p()

    def dead_fraction(self, idx: int) -> Tensor:
        """Per batch, the fraction of layer `idx`'s histogram in its lowest bin (|x| < 0.25): the
        course's measure of dead activations (values beyond 10 are not counted)."""
        counts = self._hist_counts(idx)
        return counts[0] / counts.sum(0)

    # -- plots
    def plot_layer_stats(self, idx: int, figsize: tuple[float, float] = (12, 3)):
        """Layer `idx`'s mean, std and fraction near zero against batches; a Figure."""
        from minilearn.plotting import new_figure, show_once

        values = self.layer_stats(idx)
        fig, axes = new_figure(1, 3, figsize=figsize)
        for v, ax, title in zip(values, axes, ("mean", "std", "fraction near zero")):
            ax.plot(list(v))
            ax.set_title(title)
            ax.set_xlabel("batch")
        return show_once(fig)

    def color_dim(self, idx: int, figsize: tuple[float, float] = (10, 5), ax=None):
        """The 'colorful dimension' picture: layer `idx`'s log histogram (|activation| from 0 at the
        bottom to 10 at the top) against batches, left to right; a Figure."""
        from minilearn.plotting import new_figure, show_once

        image = self.hist(idx)
        if ax is None:
            fig, ax = new_figure(figsize=figsize)
        ax.imshow(image.numpy(), origin="lower", aspect="auto")
        ax.axis("off")
        return show_once(ax.figure)

    def dead_chart(self, idxs: Iterable[int] | None = None, figsize: tuple[float, float] = (11, 5)):
        """Per layer of `idxs` (default: all), the fraction of activations in the lowest histogram
        bin against batches (the course's `dead_chart`); a Figure."""
        from minilearn.plotting import new_figure, show_once

        if idxs is None:
            self._layer(0)  # fails when nothing was recorded
            idxs = range(len(self.stats[0]))
        idxs = list(idxs)
        fractions = [self.dead_fraction(i) for i in idxs]  # checks every index before drawing
        if not fractions:
            raise ValueError("idxs: expected at least one layer index")
        nrows = max(1, int(math.sqrt(len(fractions))))
        ncols = math.ceil(len(fractions) / nrows)
        fig, axes = new_figure(nrows, ncols, figsize=figsize)
        grid = list(axes.flat) if hasattr(axes, "flat") else [axes]
        for ax, i, f in zip(grid, idxs, fractions):
            ax.plot(f.numpy())
            ax.set_ylim(0, 1)
            ax.set_title(f"layer {i}")
        for ax in grid[len(fractions):]:
            ax.axis("off")
        return show_once(fig)

    def plot_stats(self, figsize: tuple[float, float] = (10, 4)):
        """Every layer's mean (left) and std (right) against batches, one line per layer (the
        course's picture); a Figure."""
        from minilearn.plotting import new_figure, show_once

        n = len(self.stats[0]) if self.stats else 0
        if n == 0:
            raise ValueError("stats: nothing recorded yet; fit with this callback first")
        fig, (ax_mean, ax_std) = new_figure(1, 2, figsize=figsize)
        for i in range(n):
            means, stds, _ = self.layer_stats(i)
            ax_mean.plot(list(means), label=str(i))
            ax_std.plot(list(stds), label=str(i))
        ax_mean.set_title("Means")
        ax_std.set_title("Stdevs")
        ax_std.legend(title="layer")
        return show_once(fig)

    # -- the run's state, for a backup
    def state_dict(self) -> dict:
        """The recorded statistics (plain floats and CPU tensors)."""
        return {"stats": [[dict(row) for row in batch] for batch in self.stats]}

    def load_state_dict(self, state: dict) -> None:
        """Put back what `state_dict` returned."""
        self.stats = L([dict(row) for row in batch] for batch in state["stats"])


# ---------------------------------------------------------------- the summary
class LayerInfo(NamedTuple):
    """One call of a leaf layer in the summary's forward pass."""

    layer: str               # the module's class name
    params: int              # its number of parameters (0 for a layer without)
    trainable: bool | None   # `total_params`'s flag; None for a layer without parameters
    shape: Any               # the output's torch.Size (or tuple/list/dict of them; None if no tensor)
    same: bool               # whether the output has the shape of an input (no new group in the table)


@contextlib.contextmanager
def _leaving_untouched(learn):
    """Inside the block the model runs without gradients in eval mode; on leaving, error or not,
    every module's train/eval mode and the RNGs (torch's, Python's, each loader's) are as they were."""
    rng = learn.rng_state()
    try:
        with kept_modes(learn.model), torch.no_grad():
            learn.model.eval()
            yield
    finally:
        learn.set_rng_state(rng)


def _first_inputs(learn) -> tuple:
    """The inputs of the training loader's first batch (the first `n_inp` elements)."""
    batch = tuple(learn.dls.one_batch())
    n_inp = getattr(learn.dls, "n_inp", None) or inputs_of(len(batch))
    return batch[:n_inp]


def layer_rows(learn, *xb) -> list[LayerInfo]:
    """A `LayerInfo` for each call of a leaf layer of `learn.model` when it runs on the inputs `xb`
    (default: the first training batch's), in the order they ran: what `summary` prints.

    The model runs once, in eval mode and without gradients, and is left as it was (modes, weights,
    RNGs). The whole batch runs through the model alone, so the shapes are the real ones, and a
    layer called twice is listed twice.
    """
    with _leaving_untouched(learn):
        if not xb:
            xb = _first_inputs(learn)
        device = _model_device(learn.model)
        if device is not None:
            xb = to_device(tuple(xb), device)
        rows: list[LayerInfo] = []

        def track(m: nn.Module, inputs, output) -> None:
            n, trainable = total_params(m) if has_params(m) else (0, None)
            out = _first_tensor(output)
            same = out is not None and any(isinstance(i, Tensor) and i.shape == out.shape for i in inputs)
            rows.append(LayerInfo(type(m).__name__, n, trainable, _shapes(output), same))

        with Hooks(flatten_model(learn.model), track, detach=False):
            learn.model(*xb)
    return rows


def layer_info(learn, *xb) -> list[tuple]:
    """fastai's `layer_info`: for each leaf layer that runs on the first item of `xb` (default: of
    the first training batch), `(type name, parameters, trainable, output shape, same shape as
    its input)`; a layer without parameters has '' for both, as in fastai. `layer_rows`
    gives the same as numbers, for the whole batch."""
    xb = xb or _first_inputs(learn)
    rows = layer_rows(learn, *(x[:1] if isinstance(x, Tensor) else x for x in xb))
    return [(r.layer, "" if r.trainable is None else r.params, "" if r.trainable is None else r.trainable,
             r.shape, r.same) for r in rows]


class Summary(str):
    """The summary's text, shown as it is (in a notebook too), with its numbers as attributes:
    `layers` (a list of `LayerInfo`), `total_params`, `trainable_params`."""

    layers: list[LayerInfo]
    total_params: int
    trainable_params: int

    def __new__(cls, text: str, layers: list[LayerInfo], total: int, trainable: int) -> "Summary":
        s = super().__new__(cls, text)
        s.layers, s.total_params, s.trainable_params = layers, total, trainable
        return s

    def __repr__(self) -> str:
        return str(self)


_WIDTH = 76  # fastai's table width


def _shape_text(shape) -> str:
    if isinstance(shape, torch.Size):
        return " x ".join(str(d) for d in shape)
    if isinstance(shape, dict):
        return ", ".join(f"{k}: {_shape_text(v)}" for k, v in shape.items())
    if isinstance(shape, (tuple, list)):
        return ", ".join(_shape_text(s) for s in shape)
    return ""


def _frozen_line(opt) -> str:
    """fastai's line on freezing: how many leading parameter groups hold frozen parameters."""
    groups = getattr(opt, "param_lists", None)
    if groups is None:
        groups = [g["params"] for g in opt.param_groups]
    frozen_idx = 0
    for i, group in enumerate(groups):
        if any(not p.requires_grad for p in group):
            frozen_idx = i + 1
    return "Model unfrozen" if frozen_idx == 0 else f"Model frozen up to parameter group #{frozen_idx}"


def summary(learn, *xb) -> Summary:
    """fastai's summary of `learn`: for each layer of the model, its type, output shape, number of
    parameters and whether they train, for one batch (`learn.dls.one_batch()`'s inputs, or `xb`);
    then the total, trainable and non-trainable parameters, the optimiser, the loss function and
    the callbacks. `print(summary(learn))` shows the table.

    The model runs once, without gradients in eval mode, and is left exactly as it was (modes of
    every submodule, weights, RNGs, the loaders' shuffling). Unlike fastai's, the totals count
    every parameter of the model once (fastai adds up the rows: a layer that did not run is
    left out, a layer that ran twice counted twice), and the trainable ones one by one.
    """
    with _leaving_untouched(learn):
        xb = tuple(xb) if xb else _first_inputs(learn)
        infos = layer_rows(learn, *xb)
    model = learn.model
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    input_shapes = ", ".join(_shape_text(_shapes(x)) or type(x).__name__ for x in xb)

    lines = [f"{type(model).__name__} (Input shape: {input_shapes})", "=" * _WIDTH,
             f"{'Layer (type)':<20} {'Output Shape':<20} {'Param #':<10} {'Trainable':<10}".rstrip(), "=" * _WIDTH]
    prev_shape = None
    for k, info in enumerate(infos):
        if k == 0:
            lines.append(f"{'':<20} {_shape_text(info.shape)}")
        elif not info.same and info.shape != prev_shape:  # a new output shape opens a group
            lines += ["_" * _WIDTH, f"{'':<20} {_shape_text(info.shape)}"]
        n = "" if info.trainable is None else str(info.params)
        lines.append(f"{info.layer:<20} {'':<20} {n:<10} {'' if info.trainable is None else info.trainable}".rstrip())
        prev_shape = info.shape
    lines += ["_" * _WIDTH, "",
              f"Total params: {total:,}", f"Total trainable params: {trainable:,}",
              f"Total non-trainable params: {total - trainable:,}", "",
              f"Optimizer used: {learn.opt_func}", f"Loss function: {learn.loss_func}", ""]
    if learn.opt is not None:
        lines += [_frozen_line(learn.opt), ""]
    lines.append("Callbacks:")
    lines += [f"  - {type(cb).__name__}" for cb in learn.cbs]
    return Summary("\n".join(lines), infos, total, trainable)

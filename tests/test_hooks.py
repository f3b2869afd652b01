"""Hooks, HookCallback, ActivationStats, the size helpers and the model summary."""

from __future__ import annotations

import contextlib
import io
import math
import random

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from minilearn import SGD, Callback, DataLoaders, Learner
from minilearn.callbacks.hooks import (
    ActivationStats, Hook, HookCallback, Hooks, Summary, dummy_eval, flatten_model, has_params, hook_output,
    hook_outputs, layer_info, layer_rows, model_sizes, num_features_model, summary, total_params,
)
from synthetic import class_data


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 3))


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def image_learner(model=None, n=64, bs=16, shuffle=True, **kwargs) -> Learner:
    """A 3-class learner on random 1x8x8 images: n // bs training batches, 1 validation batch."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n + 16, 1, 8, 8, generator=g), torch.randint(0, 3, (n + 16,), generator=g)
    dls = DataLoaders.from_tensors(x[:n], y[:n], x[n:], y[n:], bs=bs, shuffle=shuffle, seed=0)
    return Learner(dls, model if model is not None else small_cnn(), nn.CrossEntropyLoss(), opt_func=SGD,
                   lr=0.01, **kwargs)


def mlp_learner(n=80, bs=16, shuffle=True, lr=0.1, **kwargs) -> Learner:
    """A 4-16-3 classifier on `class_data`: n // bs training batches."""
    x, y, vx, vy = class_data(n=n, n_valid=32)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=bs, shuffle=shuffle, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    return Learner(dls, model, nn.CrossEntropyLoss(), opt_func=SGD, lr=lr, **kwargs)


def hooks_left(model: nn.Module) -> int:
    """How many forward and backward hooks the model's modules still hold."""
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


class RaiseAt(Callback):
    """Raises a RuntimeError at `event` of training batch `at`."""

    def __init__(self, event="after_pred", at=1):
        super().__init__()
        self.at = at
        setattr(self, event, self._maybe_raise)

    def _maybe_raise(self):
        if self.learn.training and self.learn.iter == self.at:
            raise RuntimeError("boom")


# ---------------------------------------------------------------- Hook, Hooks
def test_hook_stores_the_output_and_is_removed():
    model, x = mlp(), torch.randn(4, 5)
    hook = Hook(model[0], lambda m, i, o: o)
    y = model(x)
    assert torch.equal(hook.stored, model[0](x))
    assert not hook.stored.requires_grad  # detached by default
    assert len(model[0]._forward_hooks) == 1
    hook.remove()
    hook.remove()  # a second remove does nothing
    assert hooks_left(model) == 0
    before = hook.stored
    model(x + 1)
    assert hook.stored is before  # no longer called
    with Hook(model[2], lambda m, i, o: (i[0].shape, o.shape)) as h:
        model(x)
        assert h.stored == (torch.Size([4, 10]), torch.Size([4, 3]))
        assert len(model[2]._forward_hooks) == 1
    assert hooks_left(model) == 0 and y.shape == (4, 3)


def test_hook_without_detach_passes_the_graph():
    model, x = mlp(), torch.randn(4, 5)
    with Hook(model[2], lambda m, i, o: o, detach=False) as h:
        y = model(x)
        assert h.stored is y and h.stored.requires_grad
    with hook_output(model[2], cpu=True) as h:
        model(x)
        assert h.stored.device.type == "cpu" and not h.stored.requires_grad


def test_hooks_store_every_layer_against_a_manual_forward():
    model, x = mlp(), torch.randn(4, 5)
    with Hooks(model, lambda m, i, o: o) as hooks:
        y = model(x)
        a = model[0](x)
        assert len(hooks) == 3 and [h.module for h in hooks] == list(model)
        assert torch.equal(hooks.stored[0], a)
        assert torch.equal(hooks[1].stored, torch.relu(a))
        assert torch.equal(hooks.stored[2], y)
        assert all(not s.requires_grad for s in hooks.stored)
        assert all(len(m._forward_hooks) == 1 for m in model)
    assert hooks_left(model) == 0
    with hook_outputs([model[0], model[2]]) as hooks:
        model(x)
        assert torch.equal(hooks.stored[1], model(x).detach())


# torch warns when the first layer's input needs no gradient (its grad_input is None)
NO_INPUT_GRAD = "ignore:Full backward hook is firing"


@pytest.mark.filterwarnings(NO_INPUT_GRAD)
def test_backward_hooks_get_the_gradients():
    model, x = mlp(), torch.randn(4, 5)
    with hook_outputs(list(model), grad=True) as hooks:
        y = model(x)
        y.pow(2).mean().backward()
        g = 2 * y.detach() / y.numel()  # d loss / d output
        torch.testing.assert_close(hooks.stored[2][0], g)
        g = g @ model[2].weight.detach()  # back through the last linear layer
        torch.testing.assert_close(hooks.stored[1][0], g)
        g = g * (model[0](x) > 0).float()  # and the ReLU
        torch.testing.assert_close(hooks.stored[0][0], g)
        assert all(len(m._backward_hooks) == 1 for m in model)
    assert hooks_left(model) == 0


def test_hooks_refuse_bad_arguments_and_register_nothing():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="ms: expected modules"):
        Hooks(lin, lambda m, i, o: o)  # a bare layer: ambiguous (its children? itself?)
    with pytest.raises(TypeError, match="ms: expected torch.nn.Module items"):
        Hooks([lin, "relu"], lambda m, i, o: o)
    with pytest.raises(TypeError, match="hook_func"):
        Hooks([lin], "not callable")
    with pytest.raises(TypeError, match="m: expected a torch.nn.Module"):
        Hook("lin", lambda m, i, o: o)
    with pytest.raises(TypeError, match="detach"):
        Hook(lin, lambda m, i, o: o, detach=1)
    assert hooks_left(lin) == 0
    d = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.ReLU()})
    with Hooks(d, lambda m, i, o: o) as hooks:  # a ModuleDict: its modules, not its keys
        assert [h.module for h in hooks] == list(d.values())


# ---------------------------------------------------------------- size helpers
def test_has_params_and_total_params_count_by_hand():
    assert has_params(nn.Linear(3, 4)) and has_params(nn.LSTM(4, 5, 2)) and not has_params(nn.ReLU())
    assert total_params(nn.Linear(10, 32)) == (32 * 10 + 32, True)
    assert total_params(nn.Linear(10, 32, bias=False)) == (32 * 10, True)
    assert total_params(nn.BatchNorm2d(20)) == (40, True)
    assert total_params(nn.BatchNorm2d(20, affine=False)) == (0, False)
    assert total_params(nn.Conv2d(16, 32, 3)) == (16 * 32 * 9 + 32, True)
    assert total_params(nn.LSTM(20, 10, 2)) == (4 * (20 * 10 + 10) + 3 * 4 * (10 * 10 + 10), True)
    frozen = nn.Linear(3, 3).requires_grad_(False)
    assert total_params(frozen) == (12, False)


def test_flatten_model_lists_each_leaf_once():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.Sequential(nn.ReLU(), shared), nn.Linear(2, 1))
    leaves = flatten_model(model)
    assert leaves == [shared, model[1][0], model[2]]
    assert flatten_model(shared) == [shared]


def test_model_sizes_num_features_and_dummy_eval():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                          nn.BatchNorm2d(32), nn.Dropout(0.5))
    assert model_sizes(model) == [torch.Size([1, 16, 64, 64])] * 2 + [torch.Size([1, 32, 32, 32])] * 3
    assert model_sizes(model, size=(16, 8))[-1] == torch.Size([1, 32, 8, 4])
    assert num_features_model(model) == 32
    assert num_features_model(nn.Sequential(nn.Conv2d(5, 4, 3), nn.Conv2d(4, 3, 3))) == 3
    # a model that needs bigger inputs: 32 and 64 pixels are too small for this kernel
    assert num_features_model(nn.Sequential(nn.Conv2d(2, 6, 70))) == 6
    model.train()
    model[3].eval()
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    out = dummy_eval(model, size=(8, 8))
    assert out.shape == (1, 32, 4, 4) and not out.requires_grad
    assert [m.training for m in model.modules()] == modes  # fastai's leaves the model in eval mode
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(ValueError, match="4-d weight"):
        num_features_model(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="size"):
        model_sizes(model, size=(0, 8))


# ---------------------------------------------------------------- HookCallback
class StoreOutputs(HookCallback):
    """Checks at each batch that the last layer's stored output is the prediction."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.checked = 0

    def hook(self, m, i, o):
        return o

    def after_batch(self):
        assert torch.equal(self.hooks.stored[-1], self.learn.pred.detach().cpu())
        self.checked += 1
        super().after_batch()


def test_hook_callback_hooks_the_layers_with_params_for_the_fit():
    learn = mlp_learner()
    cb = StoreOutputs()
    seen = []

    class Spy(Callback):
        def before_batch(self):
            seen.append(hooks_left(self.learn.model))

    with learn.no_logging():
        learn.fit(1, cbs=[cb, Spy()])
    assert cb.modules == [learn.model[0], learn.model[2]]  # the ReLU has no parameters
    assert cb.checked == 5 + 2  # every training and validation batch
    assert seen == [2] * 7  # two hooks during the whole fit
    assert hooks_left(learn.model) == 0
    with learn.no_logging():
        learn.fit(1, cbs=(cb := StoreOutputs(include_paramless=True)))
    assert cb.modules == list(learn.model) and cb.checked == 7


@pytest.mark.filterwarnings(NO_INPUT_GRAD)
def test_hook_callback_backward_hooks_get_the_gradient_of_the_loss():
    learn = mlp_learner()
    grads = []

    def after_backward(cb):
        # nn.CrossEntropyLoss: d loss / d logits = (softmax - one_hot) / bs
        pred, y = cb.learn.pred.detach(), cb.learn.y
        want = (pred.softmax(1) - nn.functional.one_hot(y, 3)) / len(y)
        grads.append((cb.hooks.stored[-1][0], want))

    cb = HookCallback(is_forward=False, cpu=False, hook=lambda m, gi, go: go)
    cb.after_backward = after_backward.__get__(cb)
    with learn.no_logging():
        learn.fit(1, cbs=cb)
    assert len(grads) == 5
    for got, want in grads:
        torch.testing.assert_close(got, want)
    assert hooks_left(learn.model) == 0


@pytest.mark.parametrize("order", [-20, 0])
def test_hook_callback_every_hooks_only_every_nth_training_batch(order):
    learn = mlp_learner()  # 5 training batches an epoch
    calls = []

    class Every(HookCallback):
        def hook(self, m, i, o):
            calls.append((self.learn.train_iter, self.learn.training))

    cb = Every(every=3)
    cb.order = order  # fastai's own HookCallback (order 0) leaks the hooks of each hooked batch
    with learn.no_logging():
        learn.fit(2, cbs=cb)
    # one hooked layer per call pair: 2 layers, train_iter 0, 3, 6, 9 of 0..9; never in validation
    assert calls == [(t, True) for t in (0, 3, 6, 9) for _ in range(2)]
    assert hooks_left(learn.model) == 0


@pytest.mark.parametrize("every", [None, 1])
@pytest.mark.parametrize("event", ["after_pred", "after_loss", "after_backward"])
def test_hooks_are_removed_after_a_fit_that_raised(event, every):
    learn = mlp_learner()
    with learn.no_logging(), pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, cbs=[StoreOutputs(every=every, include_paramless=True), RaiseAt(event, at=2)])
    assert all(len(m._forward_hooks) == 0 for m in learn.model.modules())
    assert hooks_left(learn.model) == 0
    stats = ActivationStats(every=every)
    with learn.no_logging(), pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, cbs=[stats, RaiseAt(event, at=1)])
    assert hooks_left(learn.model) == 0
    assert len(stats.stats) == 1  # batch 0 was recorded, the batch that raised was not


def test_hook_callback_hooks_a_validate_and_get_preds_pass_alone():
    learn = mlp_learner()
    calls = []
    cb = HookCallback(hook=lambda m, i, o: calls.append(o.shape))
    learn.add_cb(cb)
    with learn.no_logging():
        learn.validate()
        assert calls == [torch.Size([16, 16]), torch.Size([16, 3])] * 2  # two validation batches, two layers
        assert hooks_left(learn.model) == 0
        learn.get_preds()
        assert len(calls) == 8 and hooks_left(learn.model) == 0
    learn.model.register_forward_hook(lambda m, i, o: None)  # one of the user's own: it stays
    with learn.no_logging(), pytest.raises(RuntimeError, match="boom"):
        learn.validate(cbs=Callback(after_pred=lambda self: (_ for _ in ()).throw(RuntimeError("boom"))))
    assert hooks_left(learn.model) == 1


def test_remove_end_false_keeps_the_hooks_until_the_next_fit():
    learn = mlp_learner()
    cb = HookCallback(remove_end=False, hook=lambda m, i, o: o.sum().item())
    learn.add_cb(cb)
    with learn.no_logging():
        learn.fit(1)
    assert hooks_left(learn.model) == 2  # kept after the fit, as asked
    learn.model(torch.randn(2, 4))
    with learn.no_logging():
        learn.fit(1)
    assert hooks_left(learn.model) == 2  # the new fit's hooks replaced the old ones: no doubling
    with learn.no_logging(), pytest.raises(RuntimeError):
        learn.fit(1, cbs=RaiseAt())
    assert hooks_left(learn.model) == 0  # a fit that raised leaves none


def test_hook_callback_checks_its_arguments():
    with pytest.raises(TypeError, match="hook"):
        HookCallback()
    with pytest.raises(ValueError, match="every"):
        HookCallback(every=0, hook=print)
    with pytest.raises(TypeError, match="modules"):
        HookCallback(modules=nn.Linear(2, 2), hook=print)
    with pytest.raises(TypeError, match="cpu"):
        HookCallback(cpu="yes", hook=print)


# ---------------------------------------------------------------- ActivationStats
def test_activation_stats_equal_a_hand_computation():
    learn = mlp_learner(shuffle=False, lr=0.0)  # lr 0: the weights of every batch are the initial ones
    stats = ActivationStats(with_hist=True, include_paramless=True)
    with learn.no_logging():
        learn.fit(2, cbs=stats)
    assert len(stats.stats) == 2 * 5 and all(len(b) == 3 for b in stats.stats)  # training batches only
    model = learn.model
    for i, (x, _) in enumerate(list(learn.dls.train) * 2):
        with torch.no_grad():
            acts = [model[0](x)]
            acts += [model[1](acts[0]), model[2](model[1](acts[0]))]
        for layer, a in enumerate(acts):
            row = stats.stats[i][layer]
            assert isinstance(row["mean"], float) and isinstance(row["near_zero"], float)
            assert row["mean"] == pytest.approx(a.mean().item(), rel=1e-6)
            assert row["std"] == pytest.approx(a.std().item(), rel=1e-6)
            assert row["near_zero"] == (a <= 0.05).sum().item() / a.numel()
            assert torch.equal(row["hist"], a.abs().histc(40, 0, 10))
    means, stds, near = stats.layer_stats(1)
    assert list(means) == [b[1]["mean"] for b in stats.stats] and len(stds) == len(near) == 10
    relu_out = model[1](model[0](learn.dls.train.one_batch()[0])).detach()
    assert near[0] == pytest.approx((relu_out <= 0.05).float().mean().item())
    hist = stats.hist(0)
    assert hist.shape == (40, 10)
    torch.testing.assert_close(hist[:, 3], stats.stats[3][0]["hist"].log1p())
    dead = stats.dead_fraction(1)
    lowest = (relu_out.abs() < 0.25).sum() / ((relu_out.abs() <= 10).sum())
    assert dead[0].item() == pytest.approx(lowest.item())  # the course's get_min
    assert stats.layer_stats(-1)[0] == stats.layer_stats(2)[0]


@pytest.mark.parametrize("n_batches", [11, 12, 13])
@pytest.mark.parametrize("every", [1, 4])
def test_activation_stats_every(n_batches, every):
    learn = mlp_learner(n=16 * n_batches)
    stats = ActivationStats(every=every)
    with learn.no_logging():
        learn.fit(1, cbs=stats)
    assert len(stats.stats) == math.ceil(n_batches / every)  # fastai's test


def test_activation_stats_start_afresh_each_fit_and_round_trip():
    learn = mlp_learner()
    stats = ActivationStats(with_hist=True)
    learn.add_cb(stats)
    with learn.no_logging():
        learn.fit(1)
        first = stats.state_dict()
        learn.validate()  # a stand-alone pass neither records nor resets
        assert stats.state_dict()["stats"][0][0]["mean"] == first["stats"][0][0]["mean"]
        learn.lr_find(num_it=10, show_plot=False, suggest_funcs=())  # the LR finder's batches are not the run's
        assert len(stats.stats) == 5
        learn.fit(2)
    assert len(stats.stats) == 10
    other = ActivationStats(with_hist=True)
    other.load_state_dict(first)
    assert len(other.stats) == 5 and other.layer_stats(0)[0][0] == first["stats"][0][0]["mean"]
    assert torch.equal(other.hist(1)[:, 0], first["stats"][0][1]["hist"].log1p())


def test_activation_stats_plots_return_figures():
    learn = image_learner()
    stats = ActivationStats(with_hist=True)
    with learn.no_logging():
        learn.fit(2, cbs=stats)
    n_layers = len(stats.stats[0])
    assert n_layers == 4  # two convs, the BatchNorm, the linear layer
    figs = [stats.plot_layer_stats(0), stats.color_dim(1), stats.dead_chart(), stats.dead_chart([0, 3]),
            stats.plot_stats()]
    for fig in figs:
        assert isinstance(fig, Figure)
        fig.canvas.draw()
    assert len(figs[0].axes) == 3 and [len(ax.lines[0].get_xdata()) for ax in figs[0].axes] == [8, 8, 8]
    assert len(figs[2].axes) == 4
    mean_ax, std_ax = figs[4].axes
    assert len(mean_ax.lines) == n_layers
    assert list(std_ax.lines[2].get_ydata()) == list(stats.layer_stats(2)[1])
    image = figs[1].axes[0].images[0].get_array()
    assert image.shape == (40, 8)


def test_activation_stats_errors_say_what_is_wrong():
    stats = ActivationStats()
    with pytest.raises(ValueError, match="nothing recorded"):
        stats.layer_stats(0)
    with pytest.raises(ValueError, match="nothing recorded"):
        stats.plot_stats()
    learn = mlp_learner()
    with learn.no_logging():
        learn.fit(1, cbs=stats)
    with pytest.raises(ValueError, match="with_hist=True"):
        stats.hist(0)
    with pytest.raises(ValueError, match="with_hist=True"):
        stats.dead_chart()
    with pytest.raises(ValueError, match="idx"):
        stats.layer_stats(2)
    with pytest.raises(TypeError, match="with_hist"):
        ActivationStats(with_hist="yes")


# ---------------------------------------------------------------- summary
def test_summary_of_a_small_cnn_matches_hand_counts():
    learn = image_learner()
    s = learn.summary()
    assert isinstance(s, Summary) and isinstance(s, str) and repr(s) == str(s)
    conv1, bn, conv2, lin = 1 * 4 * 9 + 4, 2 * 4, 4 * 8 * 9 + 8, 8 * 3 + 3
    assert [(i.layer, i.params, i.trainable, tuple(i.shape)) for i in s.layers] == [
        ("Conv2d", conv1, True, (16, 4, 8, 8)), ("ReLU", 0, None, (16, 4, 8, 8)),
        ("BatchNorm2d", bn, True, (16, 4, 8, 8)), ("Conv2d", conv2, True, (16, 8, 4, 4)),
        ("ReLU", 0, None, (16, 8, 4, 4)), ("AdaptiveAvgPool2d", 0, None, (16, 8, 1, 1)),
        ("Flatten", 0, None, (16, 8)), ("Linear", lin, True, (16, 3))]
    total = conv1 + bn + conv2 + lin
    assert s.total_params == s.trainable_params == total == 371
    lines = s.splitlines()
    assert lines[0] == "Sequential (Input shape: 16 x 1 x 8 x 8)"
    assert lines[4].strip() == "16 x 4 x 8 x 8" and lines[5].split() == ["Conv2d", "40", "True"]
    assert lines[6].split() == ["ReLU"]
    assert "                     16 x 8 x 4 x 4" in lines
    assert f"Total params: {total:,}" in lines and "Total non-trainable params: 0" in lines
    assert f"Loss function: {learn.loss_func}" in lines
    assert lines[-3:] == ["  - TrainEvalCallback", "  - Recorder", "  - ProgressCallback"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print(learn.summary())
    assert out.getvalue() == str(s) + "\n"


def test_summary_of_an_mlp_and_a_given_input():
    x, y = torch.rand(100, 4), torch.rand(100, 1)
    dls = DataLoaders.from_tensors(x[:80], y[:80], x[80:], y[80:], bs=16)
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1))
    learn = Learner(dls, model, nn.L1Loss())
    s = summary(learn)
    assert [(i.layer, i.params, tuple(i.shape)) for i in s.layers] == [
        ("Linear", 10, (16, 2)), ("ReLU", 0, (16, 2)), ("Linear", 3, (16, 1))]
    assert s.total_params == 13 and "Total trainable params: 13" in s
    given = summary(learn, torch.rand(5, 4))
    assert given.splitlines()[0] == "Sequential (Input shape: 5 x 4)"
    assert [tuple(i.shape) for i in given.layers] == [(5, 2), (5, 2), (5, 1)]
    rows = layer_rows(learn, torch.rand(3, 4))
    assert [i.same for i in rows] == [False, True, False] and [tuple(i.shape) for i in rows][0] == (3, 2)
    assert layer_info(learn, torch.rand(3, 4)) == [  # fastai's: the first item, '' for a layer without parameters
        ("Linear", 10, True, torch.Size([1, 2]), False), ("ReLU", "", "", torch.Size([1, 2]), True),
        ("Linear", 3, True, torch.Size([1, 1]), False)]


def test_summary_after_freezing():
    learn = image_learner(splitter=lambda m: [list(m[:3].parameters()), list(m[3:].parameters())],
                          train_bn=False)
    learn.freeze()
    s = learn.summary()
    frozen = 40 + 8  # the first conv and the BatchNorm
    assert s.total_params == 371 and s.trainable_params == 371 - frozen
    assert [i.trainable for i in s.layers if i.trainable is not None] == [False, False, True, True]
    assert f"Total non-trainable params: {frozen}" in s
    assert "Model frozen up to parameter group #1" in s.splitlines()
    learn.unfreeze()
    assert "Model unfrozen" in learn.summary().splitlines()
    for p in learn.model[-1].parameters():  # frozen by hand
        p.requires_grad_(False)
    assert learn.summary().trainable_params == 371 - 27


class Spy(nn.Module):
    """Records, at each call, whether it ran in training mode and with gradients."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return x


def test_summary_leaves_the_model_and_rngs_untouched():
    torch.manual_seed(0)
    spy = Spy()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), spy,
                          nn.Flatten(), nn.Linear(256, 3))
    learn = image_learner(model)
    model.train()
    model[1].eval()  # a frozen BatchNorm stays in eval; the rest trains
    modes = [(name, m.training) for name, m in model.named_modules()]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch_rng, py_rng = torch.get_rng_state(), random.getstate()
    loader_rng = learn.dls.train.generator.get_state()
    s = learn.summary()
    assert spy.calls == [(False, False)]  # one batch, eval mode, no gradients
    assert [(name, m.training) for name, m in model.named_modules()] == modes
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # BatchNorm's running stats too
    assert torch.equal(torch.get_rng_state(), torch_rng) and random.getstate() == py_rng
    assert torch.equal(learn.dls.train.generator.get_state(), loader_rng)
    assert hooks_left(model) == 0 and s.total_params == 40 + 8 + 256 * 3 + 3

    class RandomInForward(nn.Module):  # a model that draws random numbers itself
        def forward(self, x):
            return x + torch.rand_like(x)

    learn = image_learner(nn.Sequential(RandomInForward(), nn.Flatten(), nn.Linear(64, 3)))
    torch_rng = torch.get_rng_state()
    learn.summary()
    assert torch.equal(torch.get_rng_state(), torch_rng)


def test_summary_lists_a_layer_called_twice_and_counts_it_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 100)

        def forward(self, x):
            return self.lin(torch.relu(self.lin(x)))

    x, y = torch.rand(32, 4), torch.rand(32, 4)
    learn = Learner(DataLoaders.from_tensors(x, y, bs=8), Twice(), nn.MSELoss())
    s = learn.summary()
    assert [i.layer for i in s.layers] == ["Linear", "Linear"]
    assert s.total_params == 20 + 500  # every parameter once, the unused layer's too
    assert hooks_left(learn.model) == 0


# ---------------------------------------------------------------- side by side with fastai
def fastai_learner(fastai_learner_module, model, dls, loss_func):
    import fastai.callback.hook  # noqa: F401  (adds Learner.summary)
    from fastai.callback.progress import ProgressCallback

    learn = fastai_learner_module.Learner(dls, model, loss_func)
    learn.remove_cb(ProgressCallback)
    return learn


PARITY_MODELS = {
    "cnn": small_cnn,
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 50), nn.ReLU(), nn.BatchNorm1d(50), nn.Linear(50, 3)),
    "frozen": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 8).requires_grad_(False), nn.ReLU(), nn.Linear(8, 3)),
}


@pytest.mark.parametrize("name", list(PARITY_MODELS))
def test_summary_layers_match_fastai(fastai, name):
    import fastai.callback.hook as fastai_hook

    ours = image_learner(PARITY_MODELS[name]())
    theirs = fastai_learner(fastai, PARITY_MODELS[name](), ours.dls, nn.CrossEntropyLoss())
    xb = ours.dls.one_batch()[:1]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        their_info = fastai_hook.layer_info(theirs, *xb)
        their_text = theirs.summary()
    assert layer_info(ours, *xb) == [tuple(t) for t in their_info]
    our_rows = layer_rows(ours, *xb)
    assert len(our_rows) == len(their_info)
    for o, t in zip(our_rows, their_info):
        t_type, t_params, t_trainable, t_shape, _ = t
        assert o.layer == t_type
        assert o.params == (t_params if t_params != "" else 0)
        assert o.trainable == (t_trainable if t_params != "" else None)
        assert o.shape[1:] == t_shape[1:] and o.shape[0] == len(xb[0])  # fastai runs one item
    # the printed table, up to the optimiser line, is fastai's (but for trailing blanks)
    our_text = ours.summary()
    table = lambda s: [line.rstrip() for line in s.split("Optimizer used")[0].splitlines()]
    assert table(our_text) == table(their_text)


def test_size_helpers_match_fastai(fastai):
    import fastai.callback.hook as fastai_hook

    models = [nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                            nn.BatchNorm2d(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)),
              nn.Sequential(nn.Conv2d(5, 4, 3), nn.Conv2d(4, 3, 3))]
    for m in models:
        assert model_sizes(m) == fastai_hook.model_sizes(m)
        assert model_sizes(m, (16, 24)) == fastai_hook.model_sizes(m, (16, 24))
        assert num_features_model(m) == fastai_hook.num_features_model(m)
    big_kernel = nn.Sequential(nn.Conv2d(2, 6, 70))  # needs more than 32 and 64 pixels
    assert num_features_model(big_kernel) == fastai_hook.num_features_model(big_kernel) == 6
    for m in [*models, big_kernel, nn.Linear(10, 3), nn.LSTM(20, 10, 2), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
              nn.Linear(3, 3).requires_grad_(False)]:
        assert total_params(m) == fastai_hook.total_params(m)
        assert has_params(m) == fastai_hook.has_params(m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_hooks_copy_to_the_cpu_and_stats_equal_the_cpus():
    model, x = mlp().cuda(), torch.randn(4, 5, device="cuda")
    with hook_output(model[0], cpu=True) as h, hook_output(model[2]) as g:
        model(x)
        assert h.stored.device.type == "cpu" and g.stored.device.type == "cuda"
    rows = []
    for device in ("cpu", "cuda"):
        learn = mlp_learner(shuffle=False, lr=0.0)
        learn.dls.to(device)
        stats = ActivationStats(with_hist=True)
        with learn.no_logging():
            learn.fit(1, cbs=stats)
        rows.append(stats.stats)
        assert learn.summary().total_params == 4 * 16 + 16 + 16 * 3 + 3
    for cpu_batch, gpu_batch in zip(*rows):
        for c, g in zip(cpu_batch, gpu_batch):
            assert c["mean"] == pytest.approx(g["mean"], abs=1e-5) and c["near_zero"] == g["near_zero"]
            assert g["hist"].device.type == "cpu" and torch.allclose(c["hist"], g["hist"], atol=1)

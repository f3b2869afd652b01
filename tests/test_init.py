"""GeneralRelu, init_weights, lsuv_init, and lesson 10's comparison of a bad and a good initialisation."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from minilearn import SGD, DataLoaders, Learner
from minilearn.callbacks.hooks import ActivationStats, hook_output
from minilearn.init import GeneralRelu, init_weights, lsuv_init


def test_general_relu_values():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(GeneralRelu()(x), torch.tensor([0.0, 0.0, 0.0, 0.5, 3.0]))  # plain ReLU
    assert torch.allclose(GeneralRelu(leak=0.1)(x), torch.tensor([-0.2, -0.05, 0.0, 0.5, 3.0]))
    assert torch.allclose(GeneralRelu(sub=0.4)(x), torch.tensor([-0.4, -0.4, -0.4, 0.1, 2.6]))
    assert torch.allclose(GeneralRelu(maxv=1.0)(x), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0]))
    assert torch.allclose(GeneralRelu(0.1, 0.4, 2.0)(x), torch.tensor([-0.6, -0.45, -0.4, 0.1, 2.0]))
    y = x.clone()
    GeneralRelu(0.1, 0.4, 2.0)(y)
    assert torch.equal(y, x)  # its input is left alone
    assert "leak=0.1, sub=0.4" in repr(GeneralRelu(0.1, 0.4))
    with pytest.raises(ValueError, match="leak"):
        GeneralRelu(leak=-1)
    with pytest.raises(TypeError, match="sub"):
        GeneralRelu(sub="0.4")


@pytest.mark.parametrize("leaky", [0.0, 0.1, 1.0])
def test_init_weights_gives_kaiming_std(leaky):
    torch.manual_seed(0)
    lin, conv, bn = nn.Linear(1000, 400), nn.Conv2d(16, 64, 3), nn.BatchNorm2d(4)
    bias_before, bn_before = lin.bias.clone(), bn.weight.clone()
    model = nn.Sequential(lin, conv, bn)
    model.apply(partial(init_weights, leaky=leaky))
    gain = math.sqrt(2 / (1 + leaky**2))
    assert lin.weight.std().item() == pytest.approx(gain / math.sqrt(1000), rel=0.02)
    assert conv.weight.std().item() == pytest.approx(gain / math.sqrt(16 * 9), rel=0.03)
    assert abs(lin.weight.mean().item()) < 0.01 * gain / math.sqrt(1000) * 10
    assert torch.equal(lin.bias, bias_before) and torch.equal(bn.weight, bn_before)  # left alone
    with pytest.raises(ValueError, match="leaky"):
        init_weights(lin, leaky=-0.1)


def cnn(act=nn.ReLU, nfs=(1, 8, 16, 32, 64)):
    """Lesson 10's CNN for 28x28 digits: stride-2 convs with an activation, then a conv to 10 channels."""
    layers = [nn.Sequential(nn.Conv2d(nfs[i], nfs[i + 1], 3, stride=2, padding=1), act()) for i in range(len(nfs) - 1)]
    return nn.Sequential(*layers, nn.Conv2d(nfs[-1], 10, 3, stride=2, padding=1, bias=False), nn.Flatten())


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_lsuv_init_gives_mean_0_std_1_at_the_layer():
    torch.manual_seed(0)
    model = cnn(partial(GeneralRelu, 0.1, 0.4))
    x = torch.randn(64, 1, 28, 28)
    model.train()
    model[1][1].eval()
    modes = [m.training for m in model.modules()]
    for conv in convs(model):
        mean, std = lsuv_init(model, conv, x)
        with hook_output(conv) as h:
            model(x)
        assert abs(h.stored.mean().item()) < 1e-3 or conv.bias is None
        assert abs(h.stored.std().item() - 1) < 1e-3
        assert (mean, std) == pytest.approx((h.stored.mean().item(), h.stored.std().item()), abs=1e-5)
    assert [m.training for m in model.modules()] == modes
    # the lesson's way: measured after the activation that follows the conv
    block = model[2]
    mean, std = lsuv_init(model, block[0], (x,), measure_at=block[1])
    with hook_output(block[1]) as h:
        model(x)
    assert abs(h.stored.mean().item()) < 1e-3 and abs(h.stored.std().item() - 1) < 1e-3


def test_lsuv_init_warns_and_checks_its_arguments():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(32, 4)
    with pytest.warns(RuntimeWarning, match="after 1 rounds"):
        lsuv_init(model, model[0], x, measure_at=model[1], max_iter=1)  # after a ReLU one round is not enough
    with pytest.raises(TypeError, match="module: expected a layer with a weight"):
        lsuv_init(model, model[1], x)
    with pytest.raises(ValueError, match="never called"):
        lsuv_init(model, model[0], x, measure_at=nn.ReLU())
    dead = nn.Sequential(nn.Linear(4, 8))
    nn.init.zeros_(dead[0].weight)
    nn.init.zeros_(dead[0].bias)
    with pytest.raises(ValueError, match="std 0"):
        lsuv_init(dead, dead[0], x)
    with pytest.raises(ValueError, match="tol"):
        lsuv_init(model, model[0], x, tol=0)


def mnist_shaped_learner(model, n=256, bs=64):
    """Random normalised 28x28 'digits' with 10 random labels, as lesson 10's MNIST batches."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n + bs, 1, 28, 28, generator=g), torch.randint(0, 10, (n + bs,), generator=g)
    dls = DataLoaders.from_tensors(x[:n], y[:n], x[n:], y[n:], bs=bs, seed=0)
    return Learner(dls, model, nn.CrossEntropyLoss(), opt_func=SGD, lr=0.01)


def first_batch_stds(learn) -> list[float]:
    """Each conv's output std on the first training batch, as ActivationStats recorded it."""
    stats = ActivationStats()
    with learn.no_logging():
        learn.fit(1, cbs=stats)
    assert len(stats.stats[0]) == 5  # the five convs: the layers with parameters
    return [stats.layer_stats(i)[1][0] for i in range(5)]


def test_lesson_10_bad_init_collapses_and_kaiming_with_general_relu_does_not():
    torch.manual_seed(0)
    bad = cnn()
    for conv in convs(bad):  # tiny weights: each layer shrinks the scale about tenfold
        nn.init.normal_(conv.weight, std=0.01)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    bad_stds = first_batch_stds(mnist_shaped_learner(bad))
    assert all(later < earlier / 5 for earlier, later in zip(bad_stds, bad_stds[1:])), bad_stds
    assert bad_stds[-1] < 1e-5

    torch.manual_seed(0)
    good = cnn(partial(GeneralRelu, leak=0.1, sub=0.4))
    good.apply(partial(init_weights, leaky=0.1))
    good_stds = first_batch_stds(mnist_shaped_learner(good))
    # the scale is kept through the network, within a factor of 3 of 1 (the padding of the last, 2x2
    # convs costs a little); the bad init lost five orders of magnitude
    assert all(1 / 3 < s < 3 for s in good_stds), good_stds

    torch.manual_seed(0)
    lsuv = cnn(partial(GeneralRelu, leak=0.1, sub=0.4))
    learn = mnist_shaped_learner(lsuv)
    xb = learn.dls.one_batch()[0]  # the first batch the fit will see (one_batch leaves the shuffling alone)
    for conv in convs(lsuv):
        lsuv_init(lsuv, conv, xb)
    assert first_batch_stds(learn) == pytest.approx([1.0] * 5, abs=1e-3)

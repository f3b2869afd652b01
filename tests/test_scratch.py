"""The scratch layer kit: every hand-written backward against autograd in float64, and training through a Learner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilearn import SGD, Adam, CancelStepException, Callback, DataLoaders, Learner, accuracy
from minilearn import scratch
from minilearn.scratch import ScratchBackward, backprop
from synthetic import class_data

TOL = 1e-8


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def autograd_vjp(f, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d(sum(f(x) * grad))/dx by autograd: the reference for a layer's backward(grad)."""
    x = x.detach().clone().requires_grad_(True)
    (f(x) * grad).sum().backward()
    return x.grad


def inputs(shape=(16, 7), seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64),
            torch.randn(*shape, generator=g, dtype=torch.float64))


ACTIVATIONS = [
    (scratch.Identity(), lambda x: x),
    (scratch.LinearActivation(2.5), lambda x: 2.5 * x),
    (scratch.Sigmoid(), torch.sigmoid),
    (scratch.Tanh(), torch.tanh),
    (scratch.ReLU(), torch.relu),
    (scratch.LeakyReLU(0.1, 1.5), lambda x: torch.where(x > 0, 1.5 * x, 0.1 * x)),
    (scratch.LeakyReLU(), lambda x: F.leaky_relu(x, 0.01)),
    (scratch.Softmax(), lambda x: torch.softmax(x, dim=-1)),
]


@pytest.mark.parametrize("layer, reference", ACTIVATIONS, ids=[repr(layer) for layer, _ in ACTIVATIONS])
def test_activation_forward_and_backward_match_autograd(layer, reference):
    x, g = inputs()
    y = layer(x)
    assert not y.requires_grad and y.grad_fn is None  # autograd recorded nothing
    assert max_diff(y, reference(x)) < TOL
    assert max_diff(layer.backward(g), autograd_vjp(reference, x, g)) < TOL


def test_binary_step_steps_and_has_zero_gradient():
    step = scratch.BinaryStep(thresh=0.5)
    x = torch.tensor([[-1.0, 0.5, 0.6, 2.0]], dtype=torch.float64)
    assert step(x).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert step.backward(torch.ones_like(x)).abs().max().item() == 0.0


def test_linear_backward_matches_autograd():
    x, _ = inputs((16, 7))
    g = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer = scratch.Linear(7, 4).double()
    ref = nn.Linear(7, 4).double()
    ref.load_state_dict(layer.state_dict())
    x_ref = x.clone().requires_grad_(True)
    (ref(x_ref) * g).sum().backward()
    out = layer(x)
    assert max_diff(out, ref(x)) < TOL
    dx = layer.backward(g)
    assert max_diff(dx, x_ref.grad) < TOL
    assert max_diff(layer.weight.grad, ref.weight.grad) < TOL
    assert max_diff(layer.bias.grad, ref.bias.grad) < TOL


def test_linear_initialises_as_nn_linear():
    torch.manual_seed(3)
    a = scratch.Linear(30, 5)
    torch.manual_seed(3)
    b = nn.Linear(30, 5)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_mse_backward_matches_autograd():
    pred, targ = inputs((16, 3))
    loss = scratch.MSE()
    value = loss(pred, targ)
    p = pred.clone().requires_grad_(True)
    ref = F.mse_loss(p, targ)
    ref.backward()
    assert abs(value.item() - ref.item()) < TOL
    assert max_diff(loss.backward(), p.grad) < TOL


@pytest.mark.parametrize("targets", ["indices", "distributions"])
def test_cross_entropy_on_probabilities_matches_autograd(targets):
    logits, _ = inputs((16, 5), scale=1.0)
    probs = torch.softmax(logits, dim=-1)
    g = torch.Generator().manual_seed(2)
    if targets == "indices":
        targ = torch.randint(0, 5, (16,), generator=g)
        t = F.one_hot(targ, 5).double()
    else:
        t = torch.softmax(torch.randn(16, 5, generator=g, dtype=torch.float64), dim=-1)
        targ = t
    loss = scratch.CrossEntropy()
    value = loss(probs, targ)
    p = probs.clone().requires_grad_(True)
    ref = -(t * p.log()).sum() / 16
    ref.backward()
    assert abs(value.item() - ref.item()) < TOL
    assert max_diff(loss.backward(), p.grad) < TOL


def scratch_and_torch_nets(act: scratch.Layer, torch_act: nn.Module, seed: int = 0):
    """The same 6-8-5-3 net, scratch (ending in Softmax) and torch (logits), with equal float64 weights."""
    torch.manual_seed(seed)
    net = scratch.Sequential(scratch.Linear(6, 8), act, scratch.Linear(8, 5), scratch.Tanh(),
                             scratch.Linear(5, 3), scratch.Softmax()).double()
    ref = nn.Sequential(nn.Linear(6, 8), torch_act, nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    ref.load_state_dict(net.state_dict())
    return net, ref


@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["moderate", "saturated"])
def test_softmax_cross_entropy_network_matches_autograd(scale):
    net, ref = scratch_and_torch_nets(scratch.Sigmoid(), nn.Sigmoid())
    with torch.no_grad():  # scale the last layer so the softmax saturates: p underflows to 0
        for m in (net[4], ref[4]):
            m.weight *= scale
            m.bias *= scale
    x, _ = inputs((32, 6), seed=4)
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(5))
    loss = scratch.CrossEntropy()
    probs = net(x)
    assert (probs == 0).any() == (scale > 1)  # saturated: some probabilities underflow to exactly 0
    value = loss(probs, y)
    x_ref = x.clone().requires_grad_(True)
    ref_loss = F.cross_entropy(ref(x_ref), y)
    ref_loss.backward()
    dx = backprop(net, loss)
    if scale == 1.0:
        assert abs(value.item() - ref_loss.item()) < TOL
    else:  # the value is clamped (documented); the gradient stays exact, which -t/p through Softmax is not
        assert torch.isfinite(value) and ref_loss.item() > 100
    assert max_diff(dx, x_ref.grad) < TOL
    for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
        assert max_diff(p.grad, p_ref.grad) < TOL, name


@pytest.mark.parametrize("act, torch_act", [(scratch.ReLU(), nn.ReLU()), (scratch.LeakyReLU(0.2), nn.LeakyReLU(0.2)),
                                            (scratch.Identity(), nn.Identity())])
def test_mse_network_matches_autograd(act, torch_act):
    torch.manual_seed(0)
    net = scratch.Sequential(scratch.Linear(6, 8), act, scratch.Linear(8, 2), scratch.Sigmoid()).double()
    ref = nn.Sequential(nn.Linear(6, 8), torch_act, nn.Linear(8, 2), nn.Sigmoid()).double()
    ref.load_state_dict(net.state_dict())
    x, _ = inputs((32, 6))
    y = torch.rand(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = scratch.MSE()
    loss(net(x), y)
    backprop(net, loss)
    F.mse_loss(ref(x), y).backward()
    for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
        assert max_diff(p.grad, p_ref.grad) < TOL, name


def test_gradients_accumulate_and_frozen_parameters_get_none():
    torch.manual_seed(0)
    net = scratch.Sequential(scratch.Linear(3, 4), scratch.ReLU(), scratch.Linear(4, 1))
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    loss = scratch.MSE()
    net[0].weight.requires_grad_(False)
    loss(net(x), y)
    backprop(net, loss)
    once = net[2].weight.grad.clone()
    loss(net(x), y)
    backprop(net, loss)
    assert torch.allclose(net[2].weight.grad, 2 * once)  # added to, as autograd does
    assert net[0].weight.grad is None and net[0].bias.grad is not None


def test_backward_needs_a_training_forward_each_time():
    layer = scratch.Linear(3, 2)
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="Linear.backward: no forward"):
        layer.backward(torch.ones(4, 2))
    layer(x)
    layer.backward(torch.ones(4, 2))
    with pytest.raises(RuntimeError, match="no forward"):  # the kept input was freed
        layer.backward(torch.ones(4, 2))
    layer.eval()
    layer(x)  # inference keeps nothing
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(torch.ones(4, 2))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="in_features"):
        scratch.Linear(0, 3)
    with pytest.raises(TypeError, match="out_features"):
        scratch.Linear(3, 2.0)
    with pytest.raises(TypeError, match="layers: .*torch.nn.modules.linear.Linear at position 1"):
        scratch.Sequential(scratch.ReLU(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="layers"):
        scratch.Sequential()
    with pytest.raises(TypeError, match="a: "):
        scratch.LeakyReLU("0.1")
    with pytest.raises(TypeError, match="thresh"):
        scratch.BinaryStep(None)
    with pytest.raises(ValueError, match=r"x: expected a batch of shape \(N, 3\)"):
        scratch.Linear(3, 2)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="targ: expected class indices"):
        scratch.CrossEntropy()(torch.rand(4, 3), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="targ: float targets"):
        scratch.CrossEntropy()(torch.rand(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match="targ"):
        scratch.MSE()(torch.rand(4, 3), torch.rand(4))
    with pytest.raises(TypeError, match="loss"):
        backprop(scratch.ReLU(), nn.MSELoss())


def class_dls(bs=16):
    x, y, vx, vy = class_data(n=96, n_valid=48)
    return DataLoaders.from_tensors(x, y, vx, vy, bs=bs, seed=0)


def test_learner_trains_a_scratch_net_as_autograd_trains_the_same_torch_net():
    torch.manual_seed(0)
    net = scratch.Sequential(scratch.Linear(4, 10), scratch.ReLU(), scratch.Linear(10, 3), scratch.Softmax())
    ref = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))
    ref.load_state_dict(net.state_dict())
    ours = Learner(class_dls(), net, scratch.CrossEntropy(), opt_func=SGD, lr=0.1, metrics=accuracy,
                   cbs=ScratchBackward())
    theirs = Learner(class_dls(), ref, nn.CrossEntropyLoss(), opt_func=SGD, lr=0.1, metrics=accuracy)
    with ours.no_logging(), theirs.no_logging():
        ours.fit(3)
        theirs.fit(3)
    for a, b in zip(ours.recorder.values, theirs.recorder.values):
        assert a == pytest.approx(b, abs=1e-5)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert ours.recorder.column("accuracy")[-1] > 0.9


def test_scratch_training_works_with_adam_freeze_and_cancelled_steps():
    torch.manual_seed(0)
    net = scratch.Sequential(scratch.Linear(4, 10), scratch.Tanh(), scratch.Linear(10, 3), scratch.Softmax())
    first = net[0].weight.detach().clone()
    learn = Learner(class_dls(), net, scratch.CrossEntropy(), opt_func=Adam, lr=1e-2, cbs=ScratchBackward(),
                    splitter=lambda m: [list(m[0].parameters()), list(m[2].parameters())])
    learn.freeze()
    with learn.no_logging():
        learn.fit(1)
    assert torch.equal(net[0].weight, first)  # frozen: no gradient, no step
    learn.unfreeze()

    class SkipSteps(Callback):
        def before_step(self):
            raise CancelStepException()

    last = net[2].weight.detach().clone()
    with learn.no_logging():
        learn.fit(1, cbs=SkipSteps())
    assert torch.equal(net[2].weight, last)
    with learn.no_logging():
        learn.fit(2)
    assert not torch.equal(net[0].weight, first)
    # after a fit no activation or batch is kept alive in the layers or the loss
    assert all(getattr(m, "_saved", None) is None for m in net.modules())
    assert learn.loss_func._saved is None


def test_scratch_backward_names_what_is_wrong():
    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), cbs=ScratchBackward())
    with pytest.raises(TypeError, match="model: ScratchBackward needs a scratch model"), learn.no_logging():
        learn.fit(1)
    learn = Learner(dls, scratch.Linear(4, 3), nn.CrossEntropyLoss(), cbs=ScratchBackward())
    with pytest.raises(TypeError, match="loss_func: ScratchBackward needs a scratch loss"), learn.no_logging():
        learn.fit(1)


def test_state_dicts_load_both_ways():
    net = scratch.Sequential(scratch.Linear(4, 6), scratch.ReLU(), scratch.Linear(6, 2))
    ref = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    ref.load_state_dict(net.state_dict())
    net2 = scratch.Sequential(scratch.Linear(4, 6), scratch.ReLU(), scratch.Linear(6, 2))
    net2.load_state_dict(ref.state_dict())
    x = torch.randn(5, 4)
    assert torch.allclose(net2(x), ref(x)) and torch.allclose(net(x), ref(x))


def test_lr_find_and_get_preds_work_on_a_scratch_learner():
    torch.manual_seed(0)
    net = scratch.Sequential(scratch.Linear(4, 10), scratch.ReLU(), scratch.Linear(10, 3), scratch.Softmax())
    learn = Learner(class_dls(), net, scratch.CrossEntropy(), opt_func=SGD, cbs=ScratchBackward())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with learn.no_logging():
        suggestion = learn.lr_find(num_it=20, show_plot=False)
    assert 1e-7 < suggestion.valley < 10
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # lr_find leaves no trace
    preds, targs = learn.get_preds()
    assert preds.shape == (48, 3) and torch.allclose(preds.sum(1), torch.ones(48))


def test_scratch_backward_refuses_callbacks_that_rescale_the_loss():
    from minilearn import GradientAccumulation

    learn = _scratch_clash_learner()
    with learn.no_logging(), pytest.raises(ValueError, match="GradientAccumulation"):
        learn.fit(1, cbs=GradientAccumulation(32))


def _scratch_clash_learner():
    import torch as _torch
    from minilearn import DataLoaders, Learner, SGD, ScratchBackward, scratch as _scratch

    g = _torch.Generator().manual_seed(0)
    x, y = _torch.randn(32, 4, generator=g), _torch.randn(32, 1, generator=g)
    net = _scratch.Sequential(_scratch.Linear(4, 1))
    return Learner(DataLoaders.from_tensors(x, y, x, y, bs=8), net, _scratch.MSE(), opt_func=SGD,
                   cbs=ScratchBackward())

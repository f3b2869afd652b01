"""Optimisers: numerics against torch.optim, hyper-parameters, parameter groups."""

from __future__ import annotations

import pytest
import torch

from minilearn import SGD


def run_steps(opt_factory, n_steps: int = 100, seed: int = 0):
    """Parameters after `n_steps` steps with random gradients (the same for every optimiser)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_(),
              torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()]
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params] for _ in range(n_steps)]
    opt = opt_factory(params)
    for step_grads in grads:
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt.step()
        opt.zero_grad()
    return [p.detach() for p in params]


@pytest.mark.parametrize("mom, wd", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01)])
def test_sgd_matches_torch_sgd_with_l2(mom, wd):
    ours = run_steps(lambda ps: SGD(ps, lr=0.01, mom=mom, wd=wd, decouple_wd=False))
    ref = run_steps(lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=mom, weight_decay=wd))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_sgd_decoupled_weight_decay():
    ours = run_steps(lambda ps: SGD(ps, lr=0.01, mom=0.9, wd=0.1), n_steps=1)
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    _ = torch.randn(3, generator=g, dtype=torch.float64)
    grad = torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(ours[0], p0 * (1 - 0.01 * 0.1) - 0.01 * grad, atol=1e-12)


def test_hypers_groups_and_zero_grad():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = SGD([[a], [b]], lr=0.1)
    assert len(opt.hypers) == 2 and opt.hypers[0] == {"lr": 0.1, "mom": 0.0, "wd": 0.0}
    opt.set_hypers(lr=[0.1, 1.0])
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert torch.allclose(a, torch.full((2,), -0.1)) and torch.allclose(b, torch.full((2,), -1.0))
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    with pytest.raises(ValueError, match="lr"):
        opt.set_hyper("lr", [1.0, 2.0, 3.0])


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="params"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SGD([torch.zeros(1, requires_grad=True)], lr=-1.0)
    with pytest.raises(TypeError, match="params"):
        SGD([[torch.zeros(1)], [3]], lr=0.1)

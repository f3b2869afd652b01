"""fastai's step-function optimisers: the API fastbook chapter 16 teaches, parity with fastai, and
the multi-tensor path giving the per-parameter loop's numbers exactly."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from minilearn import Adam, DataLoaders, Lamb, Learner, Lookahead, Optimizer, RAdam, RMSProp, SGD, ranger
from minilearn import optim
from minilearn.optim import Larc, QHAdam
from test_optim import max_abs_diff, run_steps

STEP_FUNCTIONS = ["weight_decay", "l2_reg", "average_grad", "average_sqr_grad", "momentum_step", "sgd_step",
                  "rms_prop_step", "step_stat", "debias", "adam_step", "radam_step", "qhadam_step",
                  "larc_layer_lr", "larc_step", "lamb_step"]

# every optimiser, with settings that exercise each of its steps (weight decay, momentum, L2, ...)
OPTIMISERS = {
    "sgd": dict(cls="SGD", lr=0.01),
    "sgd_mom_wd": dict(cls="SGD", lr=0.01, mom=0.9, wd=0.1),
    "sgd_mom_l2": dict(cls="SGD", lr=0.01, mom=0.9, wd=0.1, decouple_wd=False),
    "rmsprop": dict(cls="RMSProp", lr=0.01),
    "rmsprop_mom_l2": dict(cls="RMSProp", lr=0.01, mom=0.9, sqr_mom=0.95, wd=0.1, decouple_wd=False),
    "adam": dict(cls="Adam", lr=0.01, wd=0.1),
    "adam_l2": dict(cls="Adam", lr=0.01, eps=0.1, wd=0.1, decouple_wd=False),
    "radam": dict(cls="RAdam", lr=0.01, wd=0.1),
    "radam_l2_beta": dict(cls="RAdam", lr=0.01, eps=0.1, wd=0.1, decouple_wd=False, beta=2.0),
    "qhadam": dict(cls="QHAdam", lr=0.01, wd=0.1),
    "qhadam_l2": dict(cls="QHAdam", lr=0.01, mom=0.9, sqr_mom=0.99, nu_1=0.5, nu_2=0.8, wd=0.1, decouple_wd=False),
    "larc": dict(cls="Larc", lr=0.01, wd=0.1),
    "larc_noclip_l2": dict(cls="Larc", lr=0.01, clip=False, wd=0.1, decouple_wd=False),
    "lamb": dict(cls="Lamb", lr=0.01, wd=0.1),
    "lamb_l2": dict(cls="Lamb", lr=0.01, wd=0.1, decouple_wd=False),
}


def factory(module, name, **extra):
    kw = dict(OPTIMISERS[name])
    cls = getattr(module, kw.pop("cls"))
    return lambda ps: cls(ps, **kw, **extra)


def test_fastais_step_functions_are_there_with_their_defaults():
    for name in STEP_FUNCTIONS:
        assert callable(getattr(optim, name)), name
    assert optim.weight_decay.defaults == {"wd": 0.0} and optim.average_grad.defaults == {"mom": 0.9}
    assert optim.average_sqr_grad.defaults == {"sqr_mom": 0.99} and optim.adam_step.defaults == {"eps": 1e-5}
    assert optim.debias(0.9, 0.1, 3) == pytest.approx(1 - 0.9**3)


def test_fastbook_chapter_16_sgd_from_a_step_function():
    """The book's `sgd_cb`, passed as `partial(Optimizer, cbs=[sgd_cb])`, trains a Learner as SGD does."""
    def sgd_cb(p, lr, **kwargs):
        p.data.add_(p.grad.data, alpha=-lr)

    def learner(opt_func):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        torch.manual_seed(0)
        return Learner(DataLoaders.from_tensors(x, y, bs=16, seed=0), nn.Linear(3, 1), nn.MSELoss(),
                       opt_func=opt_func, lr=0.1)

    book, ours = learner(partial(Optimizer, cbs=[sgd_cb])), learner(SGD)
    for learn in (book, ours):
        with learn.no_logging():
            learn.fit(2)
    assert not book.opt.fast_path  # a step function of the user's: the per-parameter loop
    for a, b in zip(book.model.parameters(), ours.model.parameters()):
        assert torch.equal(a, b)


def test_step_functions_pass_state_on_and_take_defaults():
    seen = []

    def count(p, n=0, **kwargs):  # returns state: the next call gets it back
        return {"n": n + 1}

    def step(p, lr, n, scale, **kwargs):
        seen.append((n, scale))
        p.sub_(lr * scale * p.grad)

    step.defaults = {"scale": 2.0}
    w = torch.ones(3, requires_grad=True)
    opt = Optimizer(w, [count, step], lr=0.5)  # a single tensor, as fastai takes it
    assert opt.hypers == [{"scale": 2.0, "lr": 0.5}]
    for _ in range(2):
        w.grad = torch.ones(3)
        opt.step()
    assert seen == [(1, 2.0), (2, 2.0)] and opt.state[w]["n"] == 2
    assert torch.equal(w.detach(), torch.full((3,), -1.0))
    assert Optimizer([w], partial(step, scale=3.0), lr=0.1).hypers == [{"lr": 0.1}]  # bound: not a hyper
    with pytest.raises(TypeError, match="cbs"):
        Optimizer([w], [step, "adam"], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        Optimizer([w], [step], lr=-1.0)


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_matches_fastai_over_100_float64_steps(name, fastai):
    import fastai.optimizer as fastai_optim

    diff = max_abs_diff(run_steps(factory(optim, name)), run_steps(factory(fastai_optim, name)))
    assert diff < 1e-6, f"{name}: max abs diff {diff}"


def test_lookahead_and_ranger_match_fastai(fastai):
    import fastai.optimizer as fastai_optim

    assert max_abs_diff(run_steps(lambda ps: ranger(ps, lr=0.01)), run_steps(lambda ps: fastai_optim.ranger(ps, lr=0.01))) < 1e-6
    ours = run_steps(lambda ps: Lookahead(Adam(ps, lr=0.01), k=3, alpha=0.3))
    theirs = run_steps(lambda ps: fastai_optim.Lookahead(fastai_optim.Adam(ps, lr=0.01), k=3, alpha=0.3))
    assert max_abs_diff(ours, theirs) < 1e-6


def steps_with_gaps(opt_factory, dtype, n_steps=60, seed=0, foreach=True, groups=True, no_wd=True):
    """Parameters after steps where one parameter sometimes has no gradient (so the step counts
    differ within a group), over two groups, one parameter excluded from weight decay."""
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_(), torch.randn(3, generator=g, dtype=dtype).requires_grad_(),
          torch.randn(4, 2, generator=g, dtype=dtype).requires_grad_(), torch.randn(7, generator=g, dtype=dtype).requires_grad_()]
    opt = opt_factory([ps[:2], ps[2:]] if groups else ps)
    opt.multi_tensor = foreach
    if no_wd:
        opt.exclude_from_wd([ps[1]])
    for t in range(n_steps):
        for i, p in enumerate(ps):
            p.grad = None if (i == 3 and t % 5 == 2) else torch.randn(p.shape, generator=g, dtype=dtype)
        opt.step()
        opt.zero_grad()
    return ps, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_multi_tensor_path_gives_the_per_parameter_loops_numbers_exactly(name, dtype):
    fast_ps, fast = steps_with_gaps(factory(optim, name), dtype, foreach=True)
    loop_ps, loop = steps_with_gaps(factory(optim, name), dtype, foreach=False)
    assert not loop.fast_path
    assert fast.fast_path == (OPTIMISERS[name]["cls"] not in ("Larc", "Lamb"))  # their norms are per parameter
    for a, b in zip(fast_ps, loop_ps):
        assert torch.equal(a, b)
    for a, b in zip(fast_ps, loop_ps):  # and the same state, key by key
        sa, sb = fast.state[a], loop.state[b]
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) if isinstance(sa[k], torch.Tensor) else sa[k] == sb[k] for k in sa)


def test_the_multi_tensor_path_is_the_default_and_a_flag_turns_it_off():
    w = [torch.zeros(2, requires_grad=True)]
    assert Adam(w).fast_path and SGD(w, mom=0.9).fast_path and RMSProp(w).fast_path
    assert not Adam(w, multi_tensor=False).fast_path and not Lamb(w).fast_path and not Larc(w).fast_path
    assert RAdam(w).fast_path and QHAdam(w).fast_path
    own = Optimizer(w, [optim.weight_decay, lambda p, lr, **kw: p.sub_(lr * p.grad)], lr=0.1)
    assert not own.fast_path  # a function without a multi-tensor form: the loop, automatically


def test_state_dicts_move_between_the_two_paths_and_from_before():
    """The state keeps its keys (grad_avg, sqr_avg, step, do_wd), so a file saved before the step
    functions, or by either path, resumes on the other with the same numbers."""
    ps_a, fast = steps_with_gaps(factory(optim, "adam"), torch.float64, n_steps=10)
    sd = fast.state_dict()
    assert {k for s in sd["state"][0] for k in s} == {"grad_avg", "sqr_avg", "step", "do_wd"}
    ps_b = [p.detach().clone().requires_grad_() for p in ps_a]
    loop = Adam([ps_b[:2], ps_b[2:]], lr=0.01, wd=0.1, multi_tensor=False)
    loop.load_state_dict(sd)
    g = torch.Generator().manual_seed(9)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in ps_a]
        for opt, ps in ((fast, ps_a), (loop, ps_b)):
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
            opt.step()
            opt.zero_grad()
    for a, b in zip(ps_a, ps_b):
        assert torch.equal(a, b)


def test_train_bn_false_freezes_the_normalisation_layers_too():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    groups = [list(model[0].parameters()) + list(model[1].parameters()), list(model[2].parameters())]
    keep = list(model[1].parameters())
    kept = Optimizer(groups, [optim.sgd_step], lr=0.1)
    kept.freeze_to(-1, keep_trainable=keep)
    assert all(p.requires_grad for p in keep) and not model[0].weight.requires_grad
    frozen = Optimizer(groups, [optim.sgd_step], train_bn=False, lr=0.1)
    frozen.freeze_to(-1, keep_trainable=keep)
    assert not any(p.requires_grad for p in keep) and model[2].weight.requires_grad


def test_the_fast_path_lays_a_groups_parameters_out_flat_and_survives_loads_and_moves():
    def model_and_opt(seed):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        opt = Adam(list(model.parameters()), lr=0.01, multi_tensor=seed == 0)
        opt.exclude_from_wd([model[0].bias, model[1].weight, model[1].bias, model[3].bias])
        return model, opt

    def train(model, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            x = torch.randn(16, 4, generator=g, dtype=next(model.parameters()).dtype)
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()

    fast, fast_opt = model_and_opt(0)
    loop, loop_opt = model_and_opt(1)
    loop.load_state_dict(fast.state_dict())
    train(fast, fast_opt, 3, seed=5)
    train(loop, loop_opt, 3, seed=5)
    decayed = [fast[0].weight, fast[3].weight]
    storages = {p.untyped_storage().data_ptr() for p in decayed}
    assert len(storages) == 1  # the weights with weight decay share one flat tensor
    assert len({p.untyped_storage().data_ptr() for p in fast.parameters()}) == 2  # and the rest another
    for a, b in zip(fast.parameters(), loop.parameters()):
        assert torch.equal(a, b)
    # loading weights copies into the flat layout; loading the optimiser's state remakes it
    snapshot_model, snapshot_opt = {k: v.clone() for k, v in fast.state_dict().items()}, fast_opt.state_dict()
    train(fast, fast_opt, 2, seed=6)
    fast.load_state_dict(snapshot_model)
    fast_opt.load_state_dict(snapshot_opt)
    train(fast, fast_opt, 2, seed=7)
    train(loop, loop_opt, 2, seed=7)
    for a, b in zip(fast.parameters(), loop.parameters()):
        assert torch.equal(a, b)
    fast.double()  # new tensors: the run is made again
    loop.double()
    for o in (fast_opt, loop_opt):
        o.state = {p: {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in o.state[q].items()}
                   for p, q in zip(o.param_lists[0], o.param_lists[0])}
    train(fast, fast_opt, 2, seed=8)
    train(loop, loop_opt, 2, seed=8)
    for a, b in zip(fast.parameters(), loop.parameters()):
        assert a.dtype == torch.float64 and torch.equal(a, b)


def test_frozen_and_channels_last_parameters_take_the_loop_and_give_the_same_numbers():
    def run(multi_tensor):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)).to(memory_format=torch.channels_last)
        opt = Adam([list(model[:2].parameters()), list(model[2].parameters())], lr=0.01, multi_tensor=multi_tensor)
        g = torch.Generator().manual_seed(1)
        for t in range(4):
            if t == 2:
                opt.freeze_to(1)  # the first group stops training
            model(torch.randn(2, 3, 6, 6, generator=g)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        return model

    fast, loop = run(True), run(False)
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)  # not re-laid out
    for a, b in zip(fast.parameters(), loop.parameters()):
        assert torch.equal(a, b)


def test_on_the_cpu_long_groups_are_cut_into_runs_that_fit_the_cache(monkeypatch):
    monkeypatch.setattr(optim, "FLAT_RUN_NUMEL", 20)  # so that six tensors of 8 make three runs of two

    def run(multi_tensor):
        g = torch.Generator().manual_seed(0)
        ps = [torch.randn(8, generator=g).requires_grad_() for _ in range(6)]
        opt = Adam(ps, lr=0.01, multi_tensor=multi_tensor)
        for _ in range(4):
            for p in ps:
                p.grad = torch.randn(8, generator=g)
            opt.step()
            opt.zero_grad()
        return ps, opt

    (fast_ps, fast), (loop_ps, _) = run(True), run(False)
    assert sorted(len(r.sizes) for plan in fast._plans.values() for r in plan.runs) == [2, 2, 2]
    for a, b in zip(fast_ps, loop_ps):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["sgd_mom_l2", "adam_l2", "rmsprop_mom_l2"])
def test_l2_leaves_the_same_gradient_behind_in_both_paths(name):
    """l2_reg adds wd * p to p.grad in place (fastai's); the fast path hands that gradient back
    too, so stepping twice on one gradient (no zero_grad) gives the loop's numbers."""
    def run(multi_tensor):
        g = torch.Generator().manual_seed(0)
        ps = [torch.randn(4, 3, generator=g).requires_grad_(), torch.randn(5, generator=g).requires_grad_()]
        opt = factory(optim, name, multi_tensor=multi_tensor)(ps)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        for _ in range(3):
            opt.step()
        return ps

    fast, loop = run(True), run(False)
    for a, b in zip(fast, loop):
        assert torch.equal(a, b) and torch.equal(a.grad, b.grad)

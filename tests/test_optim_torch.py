"""OptimWrapper: torch.optim optimisers under our names (the fixed table), building, errors, parity."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from minilearn.optim_torch import OptimWrapper, make_opt_func, params_for_torch
from test_optim import apply_steps, make_grads, make_params, max_abs_diff, run_steps


# ------------------------------------------------------------------------------- parity with torch.optim
# Max abs difference measured over 100 float64 steps (torch 2.14.1, CPU), asserted below 1e-6: 0.0.
PARITY = {
    "wrapper_adamw": (lambda ps: OptimWrapper(ps, opt=torch.optim.AdamW, lr=0.01, mom=0.8, sqr_mom=0.95, wd=0.1),
                      lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)),
}


@pytest.mark.parametrize("name", list(PARITY))
def test_matches_torch_optim_over_100_steps(name):
    ours_factory, torch_factory = PARITY[name]
    diff = max_abs_diff(run_steps(ours_factory), run_steps(torch_factory))
    assert diff < 1e-6, f"{name}: max abs diff {diff}"


# ------------------------------------------------------------------------------- state_dict
def test_mismatched_load_raises():
    params = make_params()
    with pytest.raises(ValueError):
        OptimWrapper([params[0]], opt=torch.optim.AdamW).load_state_dict(
            OptimWrapper(params, opt=torch.optim.AdamW).state_dict())


# ------------------------------------------------------------------------------- OptimWrapper
def test_wrapper_names_hypers_ours():
    p = [torch.zeros(2, requires_grad=True)]
    adamw = OptimWrapper(p, opt=torch.optim.AdamW, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-6)
    assert {k: adamw.hypers[0][k] for k in ("lr", "mom", "sqr_mom", "wd", "eps")} == \
        {"lr": 1e-3, "mom": 0.9, "sqr_mom": 0.95, "wd": 0.1, "eps": 1e-6}
    assert "betas" not in adamw.hypers[0] and "weight_decay" not in adamw.hypers[0]
    sgd = OptimWrapper(p, opt=torch.optim.SGD, lr=0.1, mom=0.9, wd=0.01)  # our names, translated
    assert sgd.opt.param_groups[0]["momentum"] == 0.9 and sgd.opt.param_groups[0]["weight_decay"] == 0.01
    assert sgd.hypers[0]["mom"] == 0.9
    rms = OptimWrapper(p, opt=torch.optim.RMSprop, sqr_mom=0.9)
    assert rms.opt.param_groups[0]["alpha"] == 0.9 and rms.hypers[0]["sqr_mom"] == 0.9
    asgd = OptimWrapper(p, opt=torch.optim.ASGD)
    assert "alpha" in asgd.hypers[0] and "sqr_mom" not in asgd.hypers[0]  # ASGD's alpha is something else


def test_wrapper_set_hyper_writes_through():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = OptimWrapper([[a], [b]], opt=torch.optim.AdamW, lr=1e-3)
    opt.set_hyper("lr", slice(1e-4, 1e-2))
    opt.set_hyper("mom", [0.8, 0.85])
    opt.set_hypers(sqr_mom=0.95, wd=0.2)
    groups = opt.opt.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-2])
    assert groups[0]["betas"] == (0.8, 0.95) and groups[1]["betas"] == (0.85, 0.95)
    assert [g["weight_decay"] for g in groups] == [0.2, 0.2]
    assert opt.param_lists == [[a], [b]]
    opt.hypers[0]["lr"] = 5.0  # a fresh copy: writing to it changes nothing
    assert groups[0]["lr"] == pytest.approx(1e-4)
    adagrad = OptimWrapper([a], opt=torch.optim.Adagrad, lr=0.1)
    with pytest.raises(ValueError, match="mom"):
        adagrad.set_hyper("mom", 0.9)
    with pytest.raises(ValueError, match="mom"):
        adagrad.set_hypers(lr=0.5, mom=0.9)
    assert adagrad.opt.param_groups[0]["lr"] == 0.1  # nothing written when one name is unknown


def test_wrapper_schedule_loop_matches_raw_torch():
    """Changing lr and mom every step through set_hyper = changing torch's param groups by hand."""
    lrs = [0.001 * (i + 1) for i in range(20)]
    moms = [0.95 - 0.005 * i for i in range(20)]
    grads = make_grads(20)
    params, raw_params = make_params(), make_params()
    opt = OptimWrapper(params, opt=torch.optim.AdamW, lr=1e-3, weight_decay=0.1)
    raw = torch.optim.AdamW(raw_params, lr=1e-3, weight_decay=0.1)
    for lr, mom, step_grads in zip(lrs, moms, grads):
        opt.set_hyper("lr", lr)
        opt.set_hyper("mom", mom)
        assert opt.opt.param_groups[0]["lr"] == lr and opt.opt.param_groups[0]["betas"][0] == mom
        for pg in raw.param_groups:
            pg["lr"], pg["betas"] = lr, (mom, pg["betas"][1])
        apply_steps(opt, params, [step_grads])
        apply_steps(raw, raw_params, [step_grads])
    assert max_abs_diff(params, raw_params) == 0


def test_wrapper_around_a_built_torch_optimizer_with_groups():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    groups = params_for_torch([[a], [b]])
    assert groups == [{"params": [a]}, {"params": [b]}]
    opt = OptimWrapper(torch.optim.SGD(groups, lr=0.1))
    assert opt.param_lists == [[a], [b]] and len(opt.hypers) == 2
    opt.set_hyper("lr", [0.1, 1.0])
    opt.freeze()
    assert not a.requires_grad and b.requires_grad
    b.grad = torch.ones(3)
    opt.step()
    assert torch.equal(a.detach(), torch.zeros(2)) and torch.equal(b.detach(), torch.full((3,), -1.0))
    opt.zero_grad()
    assert b.grad is None
    opt.clear_state()
    assert len(opt.state) == 0
    assert params_for_torch(nn.Linear(2, 1))[0]["params"][0].shape == (1, 2)


def test_make_opt_func():
    opt_func = make_opt_func(torch.optim.AdamW, wd=0.3)
    opt = opt_func([[torch.zeros(2, requires_grad=True)], [torch.zeros(1, requires_grad=True)]], lr=2e-3)
    assert isinstance(opt, OptimWrapper) and [h["lr"] for h in opt.hypers] == [2e-3, 2e-3]
    assert opt.hypers[0]["wd"] == 0.3
    with pytest.raises(TypeError, match="opt"):
        make_opt_func(3)


def test_wrapper_bad_arguments():
    p = [torch.zeros(2, requires_grad=True)]
    torch_opt = torch.optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="opt"):
        OptimWrapper(torch_opt, opt=torch.optim.SGD)
    with pytest.raises(TypeError, match="opt"):
        OptimWrapper(torch_opt, lr=0.1)
    with pytest.raises(TypeError, match="opt"):
        OptimWrapper(p)
    with pytest.raises(ValueError, match="mom"):
        OptimWrapper(p, opt=torch.optim.AdamW, mom=0.9, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="mom"):
        OptimWrapper(p, opt=torch.optim.Adagrad, mom=0.9)
    with pytest.raises(ValueError, match="wd"):
        OptimWrapper(p, opt=torch.optim.SGD, wd=-0.1)
    with pytest.raises(NotImplementedError, match="exclude_from_wd"):
        OptimWrapper(torch_opt).exclude_from_wd(p)


# ------------------------------------------------------------------------------- the fixed table of names
# (torch class, our name, torch's param-group key, index into a pair or None): every row of the table.
TABLE = [
    (torch.optim.SGD, "mom", "momentum", None),
    (torch.optim.SGD, "wd", "weight_decay", None),
    (torch.optim.Adam, "mom", "betas", 0),
    (torch.optim.Adam, "sqr_mom", "betas", 1),
    (torch.optim.AdamW, "mom", "betas", 0),
    (torch.optim.AdamW, "sqr_mom", "betas", 1),
    (torch.optim.AdamW, "wd", "weight_decay", None),
    (torch.optim.RMSprop, "mom", "momentum", None),
    (torch.optim.RMSprop, "sqr_mom", "alpha", None),
    (torch.optim.RMSprop, "wd", "weight_decay", None),
    (torch.optim.ASGD, "alpha", "alpha", None),  # ASGD's alpha is not a squared-gradient average
    (torch.optim.Adagrad, "wd", "weight_decay", None),
    (torch.optim.Adam, "eps", "eps", None),  # keys outside the table keep their torch names
]


def _torch_value(opt: OptimWrapper, group: int, key: str, idx):
    value = opt.opt.param_groups[group][key]
    return value if idx is None else value[idx]


@pytest.mark.parametrize("cls, ours, key, idx", TABLE, ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_name_in_the_table_is_read_and_written_through(cls, ours, key, idx):
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = OptimWrapper([[a], [b]], opt=cls)
    assert [h[ours] for h in opt.hypers] == [_torch_value(opt, g, key, idx) for g in (0, 1)]  # read
    other = opt.opt.param_groups[0][key][1 - idx] if idx is not None else None
    opt.set_hyper(ours, [0.25, 0.5])  # written, group by group
    assert [_torch_value(opt, g, key, idx) for g in (0, 1)] == [0.25, 0.5]
    assert [h[ours] for h in opt.hypers] == [0.25, 0.5]
    if idx is not None:  # the other half of the pair is left as it was
        assert opt.opt.param_groups[0][key][1 - idx] == other
    opt.set_hypers(**{ours: 0.125})
    assert [_torch_value(opt, g, key, idx) for g in (0, 1)] == [0.125, 0.125]
    if key != ours:
        assert key not in opt.hypers[0]  # torch's own name is not one of ours


def test_asgd_alpha_is_not_sqr_mom_but_rmsprop_alpha_is():
    p = [torch.zeros(2, requires_grad=True)]
    asgd, rms = OptimWrapper(p, opt=torch.optim.ASGD), OptimWrapper(p, opt=torch.optim.RMSprop)
    assert "sqr_mom" not in asgd.hypers[0] and asgd.hypers[0]["alpha"] == 0.75
    assert "alpha" not in rms.hypers[0] and rms.hypers[0]["sqr_mom"] == 0.99
    with pytest.raises(ValueError, match="^sqr_mom:"):
        asgd.set_hyper("sqr_mom", 0.9)
    with pytest.raises(ValueError, match="^sqr_mom:"):
        OptimWrapper(p, opt=torch.optim.ASGD, sqr_mom=0.9)


# Each: (torch class, kwargs in our names, the same in torch's names).
SAME_BUILD = {
    "sgd": (torch.optim.SGD, dict(lr=0.1, mom=0.9, wd=0.01),
            dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd_nesterov": (torch.optim.SGD, dict(lr=0.1, mom=0.9, nesterov=True),
                     dict(lr=0.1, momentum=0.9, nesterov=True)),
    "adam_mom_only": (torch.optim.Adam, dict(lr=1e-3, mom=0.8),
                      dict(lr=1e-3, betas=(0.8, 0.999))),
    "adam_sqr_mom_only": (torch.optim.Adam, dict(sqr_mom=0.95, amsgrad=True),
                          dict(betas=(0.9, 0.95), amsgrad=True)),
    "adamw": (torch.optim.AdamW, dict(lr=1e-3, mom=0.8, sqr_mom=0.95, wd=0.1, eps=1e-6),
              dict(lr=1e-3, betas=(0.8, 0.95), weight_decay=0.1, eps=1e-6)),
    "rmsprop": (torch.optim.RMSprop, dict(lr=0.01, mom=0.9, sqr_mom=0.95, wd=0.1, centered=True),
                dict(lr=0.01, momentum=0.9, alpha=0.95, weight_decay=0.1, centered=True)),
    "asgd": (torch.optim.ASGD, dict(lr=0.01, alpha=0.5, wd=0.1),
             dict(lr=0.01, alpha=0.5, weight_decay=0.1)),
    "nadam": (torch.optim.NAdam, dict(mom=0.85, wd=0.01), dict(betas=(0.85, 0.999), weight_decay=0.01)),
}


@pytest.mark.parametrize("name", list(SAME_BUILD))
def test_building_with_our_names_gives_torchs_param_groups(name):
    cls, ours, theirs = SAME_BUILD[name]
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    with_ours = OptimWrapper([[a], [b]], opt=cls, **ours).opt
    with_theirs = cls(params_for_torch([[a], [b]]), **theirs)
    assert type(with_ours) is cls
    assert with_ours.param_groups == with_theirs.param_groups  # every key and value, params included
    assert with_ours.defaults == with_theirs.defaults


def test_torch_checks_values_given_in_our_names_when_it_builds():
    """Built in one go with torch's names, so torch's own construction checks see our values."""
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="Nesterov"):  # SGD(nesterov=True) needs momentum > 0
        OptimWrapper(p, opt=torch.optim.SGD, mom=0.0, nesterov=True)
    with pytest.raises(ValueError, match="beta"):  # Adam's betas must lie in [0, 1)
        OptimWrapper(p, opt=torch.optim.AdamW, sqr_mom=1.5)
    opt_func = make_opt_func(torch.optim.SGD, mom=0.9, nesterov=True)  # as a Learner calls it
    opt = opt_func(p, lr=0.1)
    assert opt.opt.param_groups[0]["nesterov"] and opt.hypers[0]["mom"] == 0.9


def test_names_come_from_param_groups_not_the_signature():
    """A subclass taking **kwargs still gets the table's names: they are read from its param groups."""
    class KwargsSGD(torch.optim.SGD):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)

    opt = OptimWrapper([torch.zeros(2, requires_grad=True)], opt=KwargsSGD, lr=0.1, mom=0.9, wd=0.01)
    assert opt.opt.param_groups[0]["momentum"] == 0.9 and opt.opt.param_groups[0]["weight_decay"] == 0.01
    assert opt.hypers[0]["mom"] == 0.9 and opt.hypers[0]["wd"] == 0.01


def test_a_class_that_cannot_be_built_with_its_defaults_needs_torchs_names():
    class NeedsLr(torch.optim.SGD):
        def __init__(self, params, lr, momentum=0.0):
            super().__init__(params, lr=lr, momentum=momentum)

    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError, match="^mom: .*give its own names"):
        OptimWrapper(p, opt=NeedsLr, lr=0.1, mom=0.9)
    assert OptimWrapper(p, opt=NeedsLr, lr=0.1, momentum=0.9).hypers[0]["mom"] == 0.9


@pytest.mark.parametrize("cls, kwargs, name", [
    (torch.optim.Adagrad, dict(mom=0.9), "mom"),
    (torch.optim.Adagrad, dict(sqr_mom=0.9), "sqr_mom"),
    (torch.optim.SparseAdam, dict(wd=0.1), "wd"),
    (torch.optim.Rprop, dict(lr=0.1, mom=0.9), "mom"),
])
def test_our_name_without_a_counterpart_is_an_error_before_any_work(cls, kwargs, name):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=rf"^{name}: {cls.__name__} has no matching hyper-parameter"):
        OptimWrapper([p], opt=cls, **kwargs)
    assert p.grad is None and torch.equal(p.detach(), torch.zeros(2))


@pytest.mark.parametrize("cls, kwargs, name, key", [
    (torch.optim.SGD, dict(mom=0.9, momentum=0.8), "mom", "momentum"),
    (torch.optim.SGD, dict(wd=0.1, weight_decay=0.1), "wd", "weight_decay"),
    (torch.optim.AdamW, dict(mom=0.9, betas=(0.9, 0.99)), "mom", "betas"),
    (torch.optim.AdamW, dict(sqr_mom=0.99, betas=(0.9, 0.99)), "sqr_mom", "betas"),
    (torch.optim.RMSprop, dict(sqr_mom=0.9, alpha=0.9), "sqr_mom", "alpha"),
])
def test_our_name_given_with_the_torch_key_it_stands_for_is_an_error(cls, kwargs, name, key):
    with pytest.raises(ValueError, match=rf"^{name}: given together with '{key}'"):
        OptimWrapper([torch.zeros(2, requires_grad=True)], opt=cls, **kwargs)


def test_unknown_name_in_set_hyper_is_an_error_and_writes_nothing():
    opt = OptimWrapper([torch.zeros(2, requires_grad=True)], opt=torch.optim.SparseAdam, lr=0.1)
    with pytest.raises(ValueError, match="^wd: SparseAdam has no such hyper-parameter"):
        opt.set_hypers(lr=0.5, wd=0.1)
    with pytest.raises(ValueError, match="^weight_decay:"):  # torch's name for ours is not a name here
        OptimWrapper([torch.zeros(2, requires_grad=True)], opt=torch.optim.SGD).set_hyper("weight_decay", 0.1)
    assert opt.hypers[0]["lr"] == 0.1

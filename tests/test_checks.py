"""The shared argument checks: what each accepts, and the error that names the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minilearn.checks import (
    ArgumentTypeError, as_list, check_bool, check_callable, check_device, check_int, check_lr, check_number,
)


def test_check_bool():
    assert check_bool("flag", True) is True and check_bool("flag", False) is False
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match="flag: expected True or False"):
            check_bool("flag", bad)


def test_check_int_accepts_integers_and_checks_bounds():
    assert check_int("n", 3) == 3
    assert check_int("n", np.int64(4), low=1) == 4 and type(check_int("n", np.int64(4))) is int
    assert check_int("n", torch.tensor(5)) == 5
    assert check_int("n", 2, low=0, high=2) == 2
    with pytest.raises(ValueError, match=r"n: expected an int >= 1, got 0"):
        check_int("n", 0, low=1)
    with pytest.raises(ValueError, match=r"n: expected an int from 0 to 2, got 3"):
        check_int("n", 3, low=0, high=2)


@pytest.mark.parametrize("bad", [1.5, 2.0, "2", True, None])
def test_check_int_rejects_what_is_not_an_int_as_a_type_and_value_error(bad):
    with pytest.raises(ArgumentTypeError, match="n: expected an int >= 0") as info:
        check_int("n", bad, low=0)
    # catchable either way: some checks raised ValueError for a wrong type before they were shared
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_check_number():
    assert check_number("lr", 1) == 1.0 and type(check_number("lr", 1)) is float
    assert check_number("beta", 0.0, low=0, high=1, high_open=True) == 0.0
    with pytest.raises(ValueError, match=r"beta: expected a finite number >= 0 and < 1, got 1.0"):
        check_number("beta", 1.0, low=0, high=1, high_open=True)
    with pytest.raises(ValueError, match=r"max_norm: expected a finite number > 0, got 0.0"):
        check_number("max_norm", 0, low=0, low_open=True)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="x: expected a finite number"):
            check_number("x", bad)
    for bad in ("1", True, None, [1.0]):
        with pytest.raises(ArgumentTypeError, match="x: expected a number"):
            check_number("x", bad)


def test_check_callable_and_device():
    assert check_callable("f", len, "a function") is len
    with pytest.raises(TypeError, match="f: expected a function f\\(x\\), got 3"):
        check_callable("f", 3, "a function f(x)")
    assert check_device("device", None) is None
    assert check_device("device", "cpu") == torch.device("cpu")
    assert check_device("device", torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="device: not a valid device"):
        check_device("device", "gpu9")
    with pytest.raises(TypeError, match="device: expected a torch.device"):
        check_device("device", 2.0)


def test_as_list_and_check_lr():
    assert as_list(None) == [] and as_list(3) == [3] and as_list((1, 2)) == [1, 2] and as_list([4]) == [4]
    for ok in (None, 0, 1e-3, [1e-3, 1e-2], (1e-3,), slice(1e-4, 1e-2)):
        check_lr(ok)
    for bad in (-1, "1e-3", True, [1e-3, -1]):
        with pytest.raises(ValueError, match="lr: expected a finite number >= 0"):
            check_lr(bad)


def test_bad_numbers_are_refused_before_any_work_naming_the_argument():
    import math

    from minilearn import GradientClip, ParamScheduler, ReduceLROnPlateau, SaveModelCallback, SchedLin
    from synthetic import small_learner

    learn = small_learner()
    cases = [
        (lambda: learn.fit(1, lr=math.inf), ValueError, "lr"),
        (lambda: learn.fit(1, lr=slice(1e-4, math.nan)), ValueError, "lr"),
        (lambda: learn.fit(1, reset_opt="no"), TypeError, "reset_opt"),
        (lambda: learn.fit_one_cycle(1, div=0), ValueError, "div"),
        (lambda: learn.fit_one_cycle(1, div_final=0), ValueError, "div_final"),
        (lambda: learn.fit_one_cycle(1, pct_start=1.5), ValueError, "pct_start"),
        (lambda: learn.fit_one_cycle(1, moms=(0.9, 0.8)), ValueError, "moms"),
        (lambda: learn.fit_one_cycle(1, moms=(0.9, 1.2, 0.9)), ValueError, "moms"),
        (lambda: learn.fit_sgdr(2, 1, cycle_mult=0), ValueError, "cycle_mult"),
        (lambda: learn.lr_find(start_lr=0), ValueError, "start_lr"),
        (lambda: learn.lr_find(end_lr=math.nan), ValueError, "end_lr"),
        (lambda: learn.lr_find(suggest_funcs=["valley"]), TypeError, "suggest_funcs"),
        (lambda: GradientClip(max_norm=math.nan), ValueError, "max_norm"),
        (lambda: SaveModelCallback(every_epoch=-1), ValueError, "every_epoch"),
        (lambda: SaveModelCallback(every_epoch=2.5), TypeError, "every_epoch"),
        (lambda: SaveModelCallback(every_epoch="yes"), TypeError, "every_epoch"),
        (lambda: SaveModelCallback(fname=""), ValueError, "fname"),
        (lambda: ReduceLROnPlateau(min_lr=-1), ValueError, "min_lr"),
        (lambda: small_learner(default_cbs="no"), TypeError, "default_cbs"),
    ]
    for make, error, arg in cases:
        with pytest.raises(error, match=rf"\b{arg}\b"):
            make()
    assert learn.opt is None or not learn.recorder.values  # nothing trained
    with pytest.raises(ValueError, match=r"scheds: the optimiser has no hyper-parameter \['nope'\]"), learn.no_logging():
        learn.fit(1, cbs=ParamScheduler({"nope": SchedLin(0, 1)}))

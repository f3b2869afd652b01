"""Training callbacks: gradient clipping, gradient accumulation, mixed precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilearn import SGD, Callback, DataLoaders, GradientAccumulation, GradientClip, Learner, MixedPrecision
from synthetic import class_learner, linear_data


def test_gradient_clip_bounds_the_norm():
    norms = []

    class Spy(Callback):
        order = GradientClip.order + 1

        def before_step(self):
            norms.append(torch.stack([p.grad.norm() for p in self.model.parameters()]).norm().item())

    learn = class_learner()
    learn.lr = 10.0  # big steps, big gradients
    with learn.no_logging():
        learn.fit(2, cbs=[GradientClip(max_norm=0.5), Spy()])
    assert norms and max(norms) <= 0.5 + 1e-5
    with pytest.raises(ValueError, match="max_norm"):
        GradientClip(0)


def test_gradient_accumulation_equals_the_bigger_batch():
    x, y, vx, vy = linear_data(n=64, n_valid=16)

    def run(bs, cbs):
        torch.manual_seed(0)
        learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=bs, shuffle=False), nn.Linear(3, 1), nn.MSELoss(),
                        opt_func=SGD, lr=0.1)
        with learn.no_logging():
            learn.fit(2, cbs=cbs)
        return learn

    big = run(32, None)
    steps = []

    class CountSteps(Callback):
        def after_step(self):
            steps.append(self.iter)

    acc = run(16, [GradientAccumulation(n_acc=32), CountSteps()])
    assert steps == [1, 3, 1, 3]
    for a, b in zip(big.model.parameters(), acc.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert acc.recorder.values[-1][1] == pytest.approx(big.recorder.values[-1][1], rel=1e-5)
    with pytest.raises(ValueError, match="n_acc"):
        GradientAccumulation(0)


def test_mixed_precision_bf16_on_cpu_and_no_autocast_leak():
    learn = class_learner()
    dtypes = []

    class Spy(Callback):
        order = MixedPrecision.order + 1

        def after_pred(self):
            dtypes.append((torch.is_autocast_enabled("cpu"), self.pred.dtype))

    with learn.no_logging():
        learn.fit(2, cbs=[MixedPrecision(), Spy()])
    assert all(on for on, _ in dtypes) and all(dt == torch.float32 for _, dt in dtypes)
    assert learn.recorder.column("accuracy")[-1] > 0.8
    assert not torch.is_autocast_enabled("cpu")

    class Boom(Callback):
        order = MixedPrecision.order + 1

        def after_pred(self):
            raise RuntimeError("mid-batch")

    with learn.no_logging(), pytest.raises(RuntimeError, match="mid-batch"):
        learn.fit(1, cbs=[MixedPrecision(), Boom()])
    assert not torch.is_autocast_enabled("cpu")  # cleanup_fit switched it off
    with pytest.raises(ValueError, match="dtype"):
        MixedPrecision(dtype=torch.float64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_fp16_with_grad_scaler_on_cuda():
    learn = class_learner()
    learn.model.cuda()
    with learn.no_logging():
        learn.fit(3, cbs=MixedPrecision())
    assert learn.recorder.column("accuracy")[-1] > 0.8
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())


def test_mixed_precision_in_validation_before_any_fit_and_after_an_error():
    learn = class_learner()
    learn.add_cb(MixedPrecision())
    loss, acc = learn.validate()
    assert loss is not None and not torch.is_autocast_enabled("cpu")

    class Boom(Callback):
        order = MixedPrecision.order + 1

        def after_pred(self):
            raise RuntimeError("in validation")

    with pytest.raises(RuntimeError, match="in validation"):
        learn.validate(cbs=Boom())
    assert not torch.is_autocast_enabled("cpu")

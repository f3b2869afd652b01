"""Training callbacks: gradient clipping, gradient accumulation, mixed precision, short epochs, BnFreeze,
channels last, ModelResetter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilearn import SGD, Callback, DataLoaders, GradientAccumulation, GradientClip, Learner, MixedPrecision
from minilearn.callbacks.training import BnFreeze, ChannelsLast, ModelResetter, ShortEpochCallback, set_bn_eval
from synthetic import class_data, class_learner, linear_data, regression_learner


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


class CountBatches(Callback):
    """Counts the batches of each phase, per epoch, and the phases cancelled."""

    def __init__(self):
        self.train, self.valid, self.cancelled = [], [], []

    def before_train(self):
        self.train.append(0)

    def before_validate(self):
        self.valid.append(0)

    def after_batch(self):
        if self.learn.training:
            self.train[-1] += 1
        else:
            self.valid[-1] += 1

    def after_cancel_train(self):
        self.cancelled.append("train")

    def after_cancel_validate(self):
        self.cancelled.append("validate")


def test_short_epoch_cuts_each_phase_after_pct_of_its_batches():
    learn = regression_learner(n=160, n_valid=64, bs=16)  # 10 training batches, 4 validation batches
    count = CountBatches()
    with learn.no_logging():
        learn.fit(2, cbs=[ShortEpochCallback(pct=0.2), count])
    # fastai's rule: go on while iter / n_iter < pct, so the batch that reaches pct is the last one
    assert count.train == [3, 3] and count.valid == [2, 2]
    assert count.cancelled == ["train", "validate"] * 2
    assert learn.train_iter == 6
    # the fit goes on after each cancel, and the Recorder saw every batch that ran, the last one too
    assert len(learn.recorder.values) == 2 and len(learn.recorder.lrs) == 6
    preds, targs = learn.get_preds(cbs=ShortEpochCallback(pct=0.2))
    assert len(preds) == len(targs) == 2 * 16


def test_short_epoch_keeps_validation_whole_unless_short_valid_and_runs_all_at_pct_1():
    learn = regression_learner(n=160, n_valid=64, bs=16)
    count = CountBatches()
    with learn.no_logging():
        learn.fit(1, cbs=[ShortEpochCallback(pct=0.5, short_valid=False), count])
    assert count.train == [6] and count.valid == [4] and count.cancelled == ["train"]
    count = CountBatches()
    with learn.no_logging():
        learn.fit(1, cbs=[ShortEpochCallback(pct=1.0), count])
    assert count.train == [10] and count.valid == [4] and count.cancelled == []
    count = CountBatches()
    with learn.no_logging():
        learn.fit(1, cbs=[ShortEpochCallback(), count])  # the default 1%: the first batch reaches it
    assert count.train == [2] and count.valid == [2]


@pytest.mark.parametrize("pct", [0, -0.1, 1.5, float("nan")])
def test_short_epoch_rejects_pct_outside_0_1(pct):
    with pytest.raises(ValueError, match="pct"):
        ShortEpochCallback(pct=pct)


def test_short_epoch_rejects_bad_argument_types():
    with pytest.raises(TypeError, match="pct"):
        ShortEpochCallback(pct="0.1")
    with pytest.raises(TypeError, match="short_valid"):
        ShortEpochCallback(short_valid="yes")


def bn_learner(**kwargs) -> Learner:
    """A classifier with a BatchNorm in its body and one in its head."""
    x, y, vx, vy = class_data(n=96, n_valid=32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    return Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0), model, nn.CrossEntropyLoss(),
                   opt_func=SGD, lr=0.1, **kwargs)


def freeze_body(learn: Learner) -> None:
    """Freeze the first Linear and BatchNorm by hand (the optimiser is made first: it holds them too)."""
    learn.create_opt()
    for p in [*learn.model[0].parameters(), *learn.model[1].parameters()]:
        p.requires_grad_(False)


def test_bn_freeze_keeps_running_stats_of_frozen_batchnorm_and_lets_trainable_ones_move():
    learn = bn_learner()
    freeze_body(learn)
    frozen, trainable = learn.model[1], learn.model[4]
    frozen_mean, frozen_var = frozen.running_mean.clone(), frozen.running_var.clone()
    trainable_mean = trainable.running_mean.clone()
    modes = []

    class Spy(Callback):
        order = BnFreeze.order + 1

        def before_batch(self):
            if self.learn.training:
                modes.append((self.model[0].training, frozen.training, trainable.training))

    with learn.no_logging():
        learn.fit(2, cbs=[BnFreeze(), Spy()])
    assert set(modes) == {(True, False, True)}  # only the frozen BatchNorm is in eval mode
    assert torch.equal(frozen.running_mean, frozen_mean) and torch.equal(frozen.running_var, frozen_var)
    assert frozen.num_batches_tracked.item() == 0
    assert not torch.allclose(trainable.running_mean, trainable_mean)
    assert trainable.num_batches_tracked.item() == 2 * 6


def test_without_bn_freeze_frozen_batchnorm_statistics_move():
    learn = bn_learner()
    freeze_body(learn)
    frozen_mean = learn.model[1].running_mean.clone()
    with learn.no_logging():
        learn.fit(1)
    assert not torch.allclose(learn.model[1].running_mean, frozen_mean)


def test_bn_freeze_after_learner_freeze_with_train_bn_false():
    learn = bn_learner(train_bn=False, splitter=lambda m: [list(m[:3].parameters()), list(m[3:].parameters())])
    learn.freeze()
    body_mean = learn.model[1].running_mean.clone()
    head_mean = learn.model[4].running_mean.clone()
    with learn.no_logging():
        learn.fit(1, cbs=BnFreeze())
    assert torch.equal(learn.model[1].running_mean, body_mean)
    assert not torch.allclose(learn.model[4].running_mean, head_mean)


def test_set_bn_eval_leaves_trainable_and_parameterless_batchnorm_alone():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, affine=False), nn.BatchNorm2d(3))
    model[2].requires_grad_(False)
    set_bn_eval(model)
    assert [m.training for m in model] == [True, True, False]
    set_bn_eval(model, use_eval=False)
    assert all(m.training for m in model)
    with pytest.raises(TypeError, match="model"):
        set_bn_eval("not a model")


def conv_learner() -> Learner:
    """A tiny convolutional classifier on 3x5x5 images."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 5, 5, generator=g), torch.randint(0, 2, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 2))
    dls = DataLoaders.from_tensors(x[:48], y[:48], x[48:], y[48:], bs=16, seed=0)
    return Learner(dls, model, nn.CrossEntropyLoss(), opt_func=SGD, lr=0.1)


def test_channels_last_puts_the_model_and_each_4d_input_in_channels_last():
    learn = conv_learner()
    seen = []

    class Spy(Callback):
        order = ChannelsLast.order + 1

        def before_batch(self):
            x = self.xb[0]
            seen.append((self.learn.training, x.is_contiguous(memory_format=torch.channels_last), x.is_contiguous()))

    with learn.no_logging():
        learn.fit(1, cbs=[ChannelsLast(), Spy()])
    weight = learn.model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert {training for training, _, _ in seen} == {True, False}
    assert all(cl and not plain for _, cl, plain in seen)

    plain = conv_learner()
    with plain.no_logging():
        plain.fit(1)
    for a, b in zip(learn.model.parameters(), plain.model.parameters()):  # same numbers, other layout
        assert torch.allclose(a, b, atol=1e-5)


def test_channels_last_in_get_preds_without_a_fit_and_other_inputs_untouched():
    learn = conv_learner()
    preds, _ = learn.get_preds(cbs=ChannelsLast())
    assert learn.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert preds.shape == (16, 2)
    learn = regression_learner()
    with learn.no_logging():
        learn.fit(1, cbs=ChannelsLast())  # 2-d inputs and weights: nothing to change
    assert learn.model.weight.is_contiguous()


class Resettable(nn.Module):
    """A linear model that records, at each `reset()`, whether it was in train mode."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.resets: list[bool] = []

    def reset(self):
        self.resets.append(self.training)

    def forward(self, x):
        return self.lin(x)


def test_model_resetter_resets_before_each_phase_and_after_the_fit():
    x, y, vx, vy = linear_data()
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16), Resettable(), nn.MSELoss(), opt_func=SGD)
    with learn.no_logging():
        learn.fit(2, cbs=ModelResetter())
    # the fit's start (TrainEvalCallback resets a model that has reset(), as fastai's), then the
    # callback's: before_train (in train mode), before_validate (in eval), after_fit
    assert learn.model.resets == [True, True, False, True, False, False]
    learn.model.resets.clear()
    learn.validate(cbs=ModelResetter())
    assert learn.model.resets == [False]
    learn.model.resets.clear()
    with learn.no_logging():
        learn.fit(1)
    assert learn.model.resets == [False]  # without the callback: only the fit's start


def test_model_resetter_leaves_a_model_without_reset_alone():
    learn = regression_learner()
    with learn.no_logging():
        learn.fit(1, cbs=ModelResetter())
    assert len(learn.recorder.values) == 1


def test_mixed_precision_passes_scaler_settings_and_names_a_wrong_one():
    mp = MixedPrecision(torch.float16, init_scale=1024.0, growth_interval=10)
    assert mp.scaler_kwargs == {"init_scale": 1024.0, "growth_interval": 10}
    with pytest.raises(TypeError, match="init_scal: not a GradScaler setting"):
        MixedPrecision(init_scal=1.0)

"""Prediction callbacks: Monte-Carlo dropout and collecting every batch."""

from __future__ import annotations

import torch
from torch import nn

from minilearn import SGD, Callback, DataLoader, DataLoaders, Learner
from minilearn.callbacks.preds import CollectDataCallback, MCDropoutCallback, dropout_modules
from synthetic import class_learner, linear_data, regression_learner


def test_mc_dropout_gives_varying_predictions_where_plain_eval_does_not():
    learn = class_learner(dropout=0.5)
    with learn.no_logging():
        learn.fit(1)
    plain = [learn.get_preds()[0] for _ in range(2)]
    assert torch.equal(plain[0], plain[1])
    learn.add_cb(MCDropoutCallback())
    mc = [learn.get_preds()[0] for _ in range(2)]
    assert not torch.allclose(mc[0], mc[1])
    assert mc[0].shape == plain[0].shape


def test_mc_dropout_keeps_only_dropout_in_train_mode_during_validation():
    learn = class_learner(dropout=0.5)
    modes = []

    class Spy(Callback):
        order = MCDropoutCallback.order + 1

        def after_pred(self):
            if not self.learn.training:
                modes.append(tuple(m.training for m in self.model))

    with learn.no_logging():
        learn.fit(1, cbs=[MCDropoutCallback(), Spy()])
    learn.get_preds(cbs=[MCDropoutCallback(), Spy()])
    # Linear, ReLU in eval; Dropout in train; Linear in eval: in the fit's validation and in get_preds
    assert set(modes) == {(False, False, True, False)} and len(modes) == 2 * 2
    assert not learn.model[2].training  # dropout back in eval mode after the fit's validation


def test_mc_dropout_samples_average_to_the_eval_predictions():
    learn = class_learner(dropout=0.5)
    with learn.no_logging():
        learn.fit(1)
    plain = learn.get_preds()[0]
    torch.manual_seed(0)
    samples = torch.stack([learn.get_preds(cbs=MCDropoutCallback())[0] for _ in range(200)])
    # the last layer is linear in the dropped activations, so the samples' mean is the eval output
    assert (samples.mean(0) - plain).abs().mean() < 0.25 * (samples[0] - plain).abs().mean()


def test_dropout_modules_finds_every_kind_of_dropout_by_name():
    class RNNDropout(nn.Module):
        def forward(self, x):
            return x

    model = nn.Sequential(nn.Dropout(), nn.Dropout2d(), nn.AlphaDropout(), RNNDropout(), nn.Linear(2, 2))
    assert dropout_modules(model) == list(model)[:4]


def collect_learner() -> tuple[Learner, tuple]:
    x, y, vx, vy = linear_data(n=32, n_valid=16)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, shuffle=False)
    torch.manual_seed(0)
    return Learner(dls, nn.Linear(3, 1), nn.MSELoss(), opt_func=SGD, lr=0.1), (x, y, vx, vy)


def test_collect_data_keeps_each_batch_xb_yb_pred_loss():
    learn, (x, y, vx, vy) = collect_learner()
    collect = CollectDataCallback()
    with learn.no_logging():
        learn.fit(2, cbs=collect)
    data = collect.data
    assert len(data) == 2 * (2 + 1)  # per epoch: 2 training batches, 1 validation batch
    batches = [(x[:16], y[:16]), (x[16:], y[16:]), (vx, vy)] * 2
    for (xb, yb, pred, loss), (bx, by) in zip(data, batches):
        assert isinstance(xb, tuple) and isinstance(yb, tuple)
        assert torch.equal(xb[0], bx) and torch.equal(yb[0], by)
        assert pred.shape == (16, 1) and not pred.requires_grad and pred.device.type == "cpu"
        assert torch.allclose(loss, nn.functional.mse_loss(pred, by))
    # the last validation batch ran through the final model
    assert torch.allclose(data[-1][2], learn.model(vx).detach())
    # the training predictions were made before each step: the first by the initial model
    torch.manual_seed(0)
    assert torch.allclose(data[0][2], nn.Linear(3, 1)(x[:16]).detach())


def test_collect_data_starts_afresh_each_fit_and_sees_unlabelled_and_side_passes():
    learn, (x, y, vx, vy) = collect_learner()
    collect = CollectDataCallback()
    learn.add_cb(collect)
    preds, _ = learn.get_preds()  # no fit yet: it still collects
    assert len(collect.data) == 1 and torch.equal(collect.data[0][2], preds)
    with learn.no_logging():
        learn.fit(1)
    assert len(collect.data) == 3
    assert all(xb[0].shape[0] == 16 for xb, _, _, _ in collect.data)  # the fit's, not the earlier pass's
    learn.get_preds(dl=DataLoader(vx, bs=8))  # unlabelled: no targets, no loss
    assert len(collect.data) == 3 + 2
    xb, yb, pred, loss = collect.data[-1]
    assert torch.equal(xb[0], vx[8:]) and yb == () and pred.shape == (8, 1) and loss is None


def test_fetch_preds_gets_the_predictions_after_each_validation_without_disturbing_the_fit():
    from minilearn import FetchPredsCallback

    fetched = []

    class Keep(Callback):
        order, sits_out = 100, ("validate",)  # not in the fetch's own pass

        def after_validate(self):
            fetched.append(self.learn.fetch_preds.preds)

    learn = regression_learner()
    reference = regression_learner()
    fetch = FetchPredsCallback(with_input=True, with_decoded=True)
    with learn.no_logging(), reference.no_logging():
        learn.fit(2, cbs=[fetch, Keep()])
        reference.fit(2)
    assert len(fetched) == 2 and all(len(p) == 4 for p in fetched)  # inputs, preds, targets, decoded
    inputs, preds, targs, _ = fetched[-1]
    assert torch.equal(inputs, learn.dls.valid_ds[0]) and torch.equal(targs, learn.dls.valid_ds[1])
    with torch.no_grad():
        assert torch.allclose(preds, learn.model(inputs))
    assert learn.recorder.values == reference.recorder.values  # the fetches changed nothing of the fit


def tuple_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    return x, 2 * x + 3


def test_get_preds_with_several_targets_gives_a_tuple_of_them():
    learn = regression_learner(n=32, n_valid=16)
    x, y = learn.dls.valid_ds[0], learn.dls.valid_ds[1]
    learn.dls.n_inp = 1
    learn.loss_func = lambda pred, a, b: ((pred - a) ** 2).mean() + ((pred - b) ** 2).mean()
    preds, targs = learn.get_preds(dl=DataLoader((x, y, -y), bs=16))
    assert isinstance(targs, tuple) and len(targs) == 2
    assert torch.equal(targs[0], y) and torch.equal(targs[1], -y)
    with torch.no_grad():
        assert torch.allclose(preds, learn.model(x))


def test_a_model_with_two_inputs_gets_them_by_fastais_rule():
    """A batch (x1, x2, y) gives the model two inputs without setting n_inp, as in fastai."""
    x, y = tuple_data()

    class TwoIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1)

        def forward(self, a, b):
            return self.lin(a) + b

    torch.manual_seed(0)
    dls = DataLoaders(DataLoader((x, x, y), bs=8, shuffle=True, seed=0), DataLoader((x, x, y), bs=8))
    learn = Learner(dls, TwoIn(), nn.MSELoss(), opt_func=SGD, lr=0.05)
    with learn.no_logging():
        learn.fit(2)
    inputs, preds, targs = learn.get_preds(with_input=True)
    assert isinstance(inputs, tuple) and len(inputs) == 2
    assert torch.equal(inputs[0], x) and torch.equal(inputs[1], x) and torch.equal(targs, y)
    with torch.no_grad():
        assert torch.allclose(preds, learn.model(x, x))

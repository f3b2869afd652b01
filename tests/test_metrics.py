"""Metrics are exact over the whole validation set, whatever the batch size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilearn import (
    AccumMetric, AvgMetric, AvgSmoothLoss, DataLoaders, Learner, accuracy, accuracy_multi, batch_accuracy,
    error_rate, mae, mnist_loss, mse,
)
from minilearn.metrics import as_metric, to_float
from synthetic import class_data, linear_data, regression_learner


def test_metric_functions_on_known_values():
    pred = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 1.0]])
    targ = torch.tensor([0, 1, 1, 1])
    assert accuracy(pred, targ).item() == pytest.approx(0.75)
    assert error_rate(pred, targ).item() == pytest.approx(0.25)
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    binary = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    assert batch_accuracy(logits, binary).item() == pytest.approx(0.5)
    assert accuracy_multi(logits, binary).item() == pytest.approx(0.5)
    expected = torch.where(binary == 1, 1 - logits.sigmoid(), logits.sigmoid()).mean()
    assert mnist_loss(logits, binary).item() == pytest.approx(expected.item())
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert mse(a, b).item() == pytest.approx((0 + 4 + 9) / 3)
    assert mae(a, b).item() == pytest.approx((0 + 2 + 3) / 3)


class CountingMetric:
    """A torchmetrics-style object: update/compute/reset, state kept across batches."""

    def __init__(self):
        self.reset()

    def update(self, pred, targ):
        self.correct += (pred.argmax(-1) == targ).sum()
        self.total += len(targ)

    def compute(self):
        return self.correct.float() / self.total

    def reset(self):
        self.correct, self.total = torch.tensor(0), 0


def f1_macro(preds, targs):
    """A metric that is not a mean over items: accumulated, computed once."""
    scores = []
    for c in targs.unique():
        tp = ((preds == c) & (targs == c)).sum().float()
        fp = ((preds == c) & (targs != c)).sum().float()
        fn = ((preds != c) & (targs == c)).sum().float()
        scores.append(2 * tp / (2 * tp + fp + fn))
    return torch.stack(scores).mean()


@pytest.mark.parametrize("bs", [7, 16, 45, 64])
def test_metrics_exact_with_uneven_last_batch(bs):
    x, y, vx, vy = class_data(n=90, n_valid=45)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=bs, seed=0)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    learn = Learner(dls, model, nn.CrossEntropyLoss(), metrics=[
        accuracy, AvgMetric(error_rate), CountingMetric(), AccumMetric(f1_macro, dim_argmax=-1)])
    names = [m.name for m in learn.metrics]
    assert names == ["accuracy", "error_rate", "counting_metric", "f1_macro"]
    loss, acc, err, counted, f1 = learn.validate()
    with torch.no_grad():
        out = model(vx)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, vy).item(), abs=1e-6)
    assert acc == pytest.approx(accuracy(out, vy).item(), abs=1e-7)
    assert err == pytest.approx(1 - acc, abs=1e-7)
    assert counted == pytest.approx(acc, abs=1e-7)
    assert f1 == pytest.approx(f1_macro(out.argmax(-1), vy).item(), abs=1e-6)


def test_mean_of_batch_means_would_differ():
    """The case above is meaningful: with bs=7 a plain mean of batch accuracies is not exact."""
    x, y, vx, vy = class_data(n=90, n_valid=45)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    with torch.no_grad():
        per_batch = [accuracy(model(vx[i:i + 7]), vy[i:i + 7]).item() for i in range(0, 45, 7)]
        exact = accuracy(model(vx), vy).item()
    assert abs(sum(per_batch) / len(per_batch) - exact) > 1e-4


def test_smoothed_loss_formula():
    class FakeLearn:
        loss = None

    sm, fake = AvgSmoothLoss(beta=0.98), FakeLearn()
    losses = [2.0, 1.0, 0.5, 3.0, 0.25]
    val = 0.0
    for i, l in enumerate(losses, 1):
        fake.loss = torch.tensor(l)
        sm.accumulate(fake)
        val = 0.98 * val + 0.02 * l
        assert sm.value.item() == pytest.approx(val / (1 - 0.98**i), rel=1e-6)
    assert AvgSmoothLoss().value is None
    with pytest.raises(ValueError, match="beta"):
        AvgSmoothLoss(beta=1.0)


def test_recorded_train_loss_is_smoothed_per_batch_losses():
    x, y, vx, vy = linear_data(n=80)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(3, 1), nn.MSELoss(), lr=0.05)
    raw = []

    from minilearn import Callback

    class Raw(Callback):
        def after_loss(self):
            if self.training:
                raw.append(self.loss.item())

    with learn.no_logging():
        learn.fit(2, cbs=Raw())
    val, expected = 0.0, []
    for i, l in enumerate(raw, 1):
        val = 0.98 * val + 0.02 * l
        expected.append(val / (1 - 0.98**i))
    assert learn.recorder.losses == pytest.approx(expected, rel=1e-5)
    assert learn.recorder.values[0][0] == pytest.approx(expected[4], rel=1e-5)  # end of epoch 0
    assert learn.recorder.values[1][0] == pytest.approx(expected[-1], rel=1e-5)


def test_as_metric_rejects_what_is_not_a_metric():
    with pytest.raises(TypeError, match="metrics"):
        as_metric(3)
    with pytest.raises(TypeError, match="func"):
        AvgMetric("accuracy")
    assert as_metric(accuracy).name == "accuracy"


def test_to_float():
    assert to_float(None) is None
    assert to_float(torch.tensor(0.5)) == 0.5 and isinstance(to_float(torch.tensor(1)), float)
    with pytest.raises(ValueError, match="one number"):
        to_float(torch.ones(3))


def test_torchmetrics_metric_if_installed():
    torchmetrics = pytest.importorskip("torchmetrics")
    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=7)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(),
                    metrics=[accuracy, torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")])
    _, acc, tm_acc = learn.validate()
    assert learn.metrics[1].name == "multiclass_accuracy"
    assert tm_acc == pytest.approx(acc, abs=1e-6)


def test_validation_numbers_exact_in_every_epoch():
    """Each epoch's valid_loss and metrics start from zero (a missing reset would mix epochs)."""
    x, y, vx, vy = class_data(n=90, n_valid=45)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=7, seed=0)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    snapshots = []

    from minilearn import Callback

    class Snap(Callback):
        def before_validate(self):
            with torch.no_grad():
                out = self.model(vx)
            snapshots.append((nn.functional.cross_entropy(out, vy).item(), accuracy(out, vy).item()))

    learn = Learner(dls, model, nn.CrossEntropyLoss(), lr=0.05, metrics=[accuracy, CountingMetric()])
    with learn.no_logging():
        learn.fit(3, cbs=Snap())
    for (loss, acc), row in zip(snapshots, learn.recorder.values):
        assert row[1] == pytest.approx(loss, abs=1e-6)
        assert row[2] == pytest.approx(acc, abs=1e-7) and row[3] == pytest.approx(acc, abs=1e-7)


def test_half_precision_losses_and_metrics_sum_in_float32():
    class FakeLearn:
        pass

    from minilearn import AvgLoss

    fake, avg, metric = FakeLearn(), AvgLoss(), AvgMetric(lambda p, t: p.mean())
    for _ in range(10):
        fake.loss = torch.tensor(6000.0, dtype=torch.float16)
        fake.pred, fake.yb = torch.full((64, 1), 6000.0, dtype=torch.float16), (torch.zeros(64),)
        avg.accumulate(fake)
        metric.accumulate(fake)
    assert avg.value.item() == pytest.approx(6000.0) and metric.value.item() == pytest.approx(6000.0)


def test_metric_returning_a_python_float_and_a_bad_metric():
    x, y, vx, vy = class_data()
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16)

    def as_float(pred, targ):
        return float((pred.argmax(-1) == targ).float().mean())

    def per_class(pred, targ):
        return pred.mean(0)

    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), metrics=[accuracy, as_float])
    _, acc, acc_f = learn.validate()
    assert acc_f == pytest.approx(acc, abs=1e-6)
    learn = Learner(dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), metrics=[per_class])
    with pytest.raises(ValueError, match="per_class"):
        learn.validate()


def test_value_metric_shows_a_number_computed_elsewhere():
    from minilearn import ValueMetric

    def custom_value():
        return 5e-3

    learn = regression_learner(metrics=[ValueMetric(custom_value), ValueMetric(lambda: 2.0, "two")])
    with learn.no_logging():
        learn.fit(1)
    assert learn.recorder.column("custom_value") == [5e-3] and learn.recorder.column("two") == [2.0]
    with pytest.raises(TypeError, match="func: expected a callable"):
        ValueMetric(3)


# ---------------------------------------------------------------- fastai's AccumMetric, step by step
def test_accum_metric_prepares_predictions_as_fastai_in_order():
    """activation (softmax along dim_argmax, sigmoid, or a function), else argmax; then thresh; then flatten."""
    from minilearn import ActivationType

    pred = torch.tensor([[1.0, 3.0], [2.0, -1.0], [0.0, 0.5]])
    soft = torch.softmax(pred, dim=-1)
    cases = [
        (dict(dim_argmax=-1), pred.argmax(-1)),
        (dict(activation=ActivationType.Softmax), soft),
        (dict(activation=ActivationType.Softmax, dim_argmax=0), torch.softmax(pred, dim=0)),  # no argmax after it
        (dict(activation=ActivationType.BinarySoftmax), soft[:, -1]),
        (dict(activation=ActivationType.Sigmoid, thresh=0.6), torch.sigmoid(pred) >= 0.6),
        (dict(activation=torch.tanh), torch.tanh(pred)),
        (dict(thresh=1.0), pred >= 1.0),
        (dict(), pred),
    ]
    for kwargs, expected in cases:
        m = AccumMetric(lambda p, t: p, flatten=False, **kwargs)
        assert torch.equal(m.prepare(pred), expected), kwargs


def test_accum_metric_to_np_invert_arg_kwargs_and_call():
    import numpy as np

    seen = {}

    def skl_like(y_true, y_pred, scale=1):
        seen["types"] = (type(y_true), type(y_pred))
        return scale * float((y_true == y_pred).mean())

    m = AccumMetric(skl_like, dim_argmax=-1, to_np=True, invert_arg=True, scale=2)
    pred, targ = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1, 0])
    m.reset()
    m.accum_values(m.prepare(pred[:2]), targ[:2])  # two batches, one computation
    m.accum_values(m.prepare(pred[2:]), targ[2:])
    assert m.value == pytest.approx(2 * 2 / 3) and seen["types"] == (np.ndarray, np.ndarray)
    assert m(torch.tensor([1, 0]), torch.tensor([1, 1])) == pytest.approx(1.0)  # __call__: these alone
    assert m.name == "skl_like"
    from functools import partial
    assert AccumMetric(partial(skl_like, scale=3)).name == "skl_like"
    assert AccumMetric(skl_like, name="mine").name == "mine"
    assert AccumMetric(skl_like).value is None  # nothing seen yet


def test_accum_metric_flatten_checks_the_sizes_and_bad_arguments_are_named():
    m = AccumMetric(lambda p, t: (p == t).float().mean())
    with pytest.raises(ValueError, match=r"pred and targ.*\(4, 3\).*\(4,\)"):
        m.accum_values(torch.zeros(4, 3), torch.zeros(4))
    m.accum_values(torch.zeros(4, 1), torch.zeros(4))  # (N, 1) against (N,) is the same numbers
    assert m.value.item() == 1.0
    with pytest.raises(TypeError, match="activation"):
        AccumMetric(accuracy, activation="softmax")
    with pytest.raises(TypeError, match="func"):
        AccumMetric(3)


def test_skm_to_fastai_follows_fastais_rule():
    from minilearn import ActivationType, skm_to_fastai

    def f(y_true, y_pred):
        return 0.0

    cls = skm_to_fastai(f)
    assert (cls.dim_argmax, cls.activation, cls.thresh, cls.to_np, cls.invert_arg) == \
        (-1, ActivationType.No, None, True, True)
    th = skm_to_fastai(f, thresh=0.3)
    assert (th.dim_argmax, th.activation, th.thresh) == (None, ActivationType.Sigmoid, 0.3)
    reg = skm_to_fastai(f, is_class=False)
    assert (reg.dim_argmax, reg.activation) == (None, ActivationType.No)
    assert skm_to_fastai(f, axis=1).dim_argmax == 1 and skm_to_fastai(f, flatten=False).flatten is False
    assert skm_to_fastai(f, activation=ActivationType.Softmax).activation is ActivationType.Softmax


def test_top_k_accuracy_and_regression_functions():
    from minilearn import exp_rmspe, msle, rmse, top_k_accuracy

    pred = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    targ = torch.tensor([2, 2, 0])
    assert top_k_accuracy(pred, targ, k=1).item() == pytest.approx(0.0)
    assert top_k_accuracy(pred, targ, k=2).item() == pytest.approx(1 / 3)
    assert top_k_accuracy(pred, targ, k=3).item() == pytest.approx(1.0)
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert msle(a, b).item() == pytest.approx(((torch.log1p(a) - torch.log1p(b)) ** 2).mean().item())
    assert rmse(a, b).item() == pytest.approx(((a - b) ** 2).mean().sqrt().item())
    assert exp_rmspe(a, b).item() == pytest.approx((((b.exp() - a.exp()) / b.exp()) ** 2).mean().sqrt().item())
    assert rmse.name == "rmse" and exp_rmspe.name == "exp_rmspe"
    assert mse(a.view(3, 1), b).item() == pytest.approx(13 / 3)  # (N, 1) against (N,): no broadcasting
    with pytest.raises(ValueError, match="pred and targ"):
        mse(torch.zeros(3, 2), b)


def test_rmse_is_exact_over_the_whole_set_not_a_mean_of_batch_values():
    from minilearn import rmse

    learn = regression_learner(n=32, n_valid=45, bs=16, metrics=[rmse])
    _, value = learn.validate()
    vx, vy = learn.dls.valid_ds
    with torch.no_grad():
        exact = ((learn.model(vx) - vy) ** 2).mean().sqrt().item()
        per_batch = [((learn.model(vx[i:i + 16]) - vy[i:i + 16]) ** 2).mean().sqrt().item() for i in (0, 16, 32)]
    assert value == pytest.approx(exact, rel=1e-6)
    assert abs(sum(per_batch) / 3 - exact) > 1e-6


def test_perplexity_is_exp_of_the_mean_loss():
    from minilearn import Perplexity, perplexity

    x, y, vx, vy = class_data(n=90, n_valid=45)
    torch.manual_seed(0)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16), nn.Linear(4, 3), nn.CrossEntropyLoss(),
                    metrics=[perplexity])
    loss, ppl = learn.validate()
    assert ppl == pytest.approx(torch.exp(torch.tensor(loss)).item(), rel=1e-6)
    assert perplexity.name == "perplexity" and isinstance(perplexity, Perplexity)
    assert Perplexity().value is None


def test_loss_metrics_report_components_the_loss_keeps():
    from minilearn import LossMetric, LossMetrics

    class TwoPartLoss:
        """MSE plus an L1 part, keeping each part (for the table) as fastai's LossMetrics expects."""
        def __call__(self, pred, targ):
            self.mse_part = ((pred - targ) ** 2).mean()
            self.l1_part = (pred - targ).abs().mean()
            return self.mse_part + self.l1_part

    learn = regression_learner(n=32, n_valid=45, bs=16, metrics=LossMetrics("mse_part, l1_part", "mse,l1"))
    learn.loss_func = TwoPartLoss()
    loss, mse_value, l1_value = learn.validate()
    vx, vy = learn.dls.valid_ds
    with torch.no_grad():
        out = learn.model(vx)
    assert [m.name for m in learn.metrics] == ["mse", "l1"]
    assert mse_value == pytest.approx(((out - vy) ** 2).mean().item(), rel=1e-5)
    assert l1_value == pytest.approx((out - vy).abs().mean().item(), rel=1e-5)
    assert loss == pytest.approx(mse_value + l1_value, rel=1e-5)
    assert [m.name for m in LossMetrics(["a", "b"])] == ["a", "b"]
    with pytest.raises(ValueError, match="nms"):
        LossMetrics("a,b", "x")
    with pytest.raises(TypeError, match="attr"):
        LossMetric("")
    learn = regression_learner(metrics=LossMetric("missing"))
    with pytest.raises(AttributeError, match="missing"):
        learn.validate()


def test_recorder_smooth_loss_is_fastais_object():
    learn = regression_learner(n=64, bs=16)
    sm = learn.recorder.smooth_loss
    assert isinstance(sm, AvgSmoothLoss) and sm.beta == 0.98 and sm.count == 0 and float(sm.val) == 0.0
    with learn.no_logging():
        learn.fit(2)
    sm = learn.recorder.smooth_loss
    assert sm.count == 8 and sm.value.item() == pytest.approx(learn.recorder.losses[-1], rel=1e-6)
    assert learn.smooth_loss.item() == pytest.approx(learn.recorder.losses[-1], rel=1e-6)
    from minilearn import Recorder
    assert Recorder(beta=0.9).beta == 0.9
    with pytest.raises(ValueError, match="beta"):
        Recorder(beta=1.5)


def test_fastbook_loss_and_metric_refuse_shapes_that_would_broadcast():
    """(N, 1) predictions against (N,) targets would broadcast to (N, N) and train at chance."""
    pred, flat = torch.randn(8, 1), torch.randint(0, 2, (8,)).float()
    for f in (mnist_loss, batch_accuracy):
        with pytest.raises(ValueError, match=r"pred \(8, 1\) and targ \(8,\).*\(8, 8\).*unsqueeze"):
            f(pred, flat)
        f(pred, flat.unsqueeze(1))  # the book's shapes
    with pytest.raises(ValueError, match=r"pred \(8, 10\) and targ \(8,\)"):
        batch_accuracy(torch.randn(8, 10), flat)
    with pytest.raises(ValueError, match=r"pred and targ.*\(8, 2\).*\(8,\)"):
        mse(torch.randn(8, 2), flat)

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

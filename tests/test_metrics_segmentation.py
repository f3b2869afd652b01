"""Segmentation metrics: exact over the whole validation set, the numbers of scikit-learn's
F1 / Jaccard on the flattened masks, and of fastai where it is installed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minilearn import (
    DataLoaders, Dice, DiceMulti, JaccardCoeff, Learner, TensorImage, TensorMask, cast, foreground_acc,
)

skm = pytest.importorskip("sklearn.metrics")


class PixelClassifier(nn.Module):
    """A 1x1 convolution: per-pixel class scores (N, C, H, W) from (N, 3, H, W) images."""

    def __init__(self, n_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, n_classes, 1)

    def forward(self, x):
        return self.conv(x)


def seg_learner(n_classes, metrics, n_valid=45, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, vx = torch.randn(32, 3, 4, 5, generator=g), torch.randn(n_valid, 3, 4, 5, generator=g)
    y, vy = torch.randint(0, n_classes, (32, 4, 5), generator=g), torch.randint(0, n_classes, (n_valid, 4, 5), generator=g)
    torch.manual_seed(seed)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=bs, seed=seed)
    return Learner(dls, PixelClassifier(n_classes), nn.CrossEntropyLoss(), metrics=metrics), vx, vy


def test_dice_and_jaccard_are_scikit_learns_f1_and_jaccard_of_the_whole_set():
    learn, vx, vy = seg_learner(2, [Dice(), JaccardCoeff()])
    _, dice, jaccard = learn.validate()
    with torch.no_grad():
        pred = learn.model(vx).argmax(1).flatten().numpy()
    assert dice == pytest.approx(skm.f1_score(vy.flatten().numpy(), pred), abs=1e-12)
    assert jaccard == pytest.approx(skm.jaccard_score(vy.flatten().numpy(), pred), abs=1e-12)
    assert [m.name for m in learn.metrics] == ["dice", "jaccard_coeff"]


def test_dice_multi_is_the_mean_of_each_classs_dice():
    learn, vx, vy = seg_learner(4, [DiceMulti()])
    _, value = learn.validate()
    with torch.no_grad():
        pred = learn.model(vx).argmax(1).flatten().numpy()
    assert value == pytest.approx(skm.f1_score(vy.flatten().numpy(), pred, average="macro"), abs=1e-12)
    assert learn.metrics[0].name == "dice_multi"


def test_counts_are_summed_over_batches_not_averaged():
    by_bs = [seg_learner(2, [Dice(), DiceMulti()], bs=bs)[0].validate()[1:] for bs in (1, 7, 45)]
    assert by_bs[0] == pytest.approx(by_bs[1], abs=1e-12) and by_bs[1] == pytest.approx(by_bs[2], abs=1e-12)


def test_dice_multi_leaves_out_classes_absent_from_both():
    m = DiceMulti()

    class Fake:
        pred = torch.tensor([[[[9.0]], [[0.0]], [[0.0]]]]).repeat(4, 1, 1, 1)  # always class 0
        yb = (torch.tensor([0, 0, 1, 1]).view(4, 1, 1),)

    m.accumulate(Fake())
    # class 0: 2 right of 4 predicted, 2 true -> 2*2/(4+2); class 1: never predicted -> 0; class 2: absent
    assert m.value == pytest.approx((4 / 6 + 0) / 2)
    assert DiceMulti().value is None and Dice().value is None


def test_foreground_accuracy_ignores_the_background():
    x = torch.randn(4, 5, 3, 3)
    y = x.argmax(dim=1)[:, None]
    assert foreground_acc(x, y).item() == 1.0
    y[0] = 0  # background pixels are left out, so the score stays
    assert foreground_acc(x, y).item() == 1.0
    y[1] = (x[1].argmax(0) + 1) % 5  # every pixel of image 1 now wrong, some of them background
    keep = y[:, 0] != 0
    expected = (x.argmax(1)[keep] == y[:, 0][keep]).float().mean()
    assert foreground_acc(x, y).item() == pytest.approx(expected.item())
    assert foreground_acc(x, y, bkg_idx=-1).item() == pytest.approx((x.argmax(1) == y[:, 0]).float().mean().item())


def test_typed_tensors_work_with_the_metrics_and_keep_their_type():
    x1, x2 = cast(torch.randn(20, 2, 3, 3), TensorImage), cast(torch.randint(0, 2, (20, 3, 3)), TensorMask)
    assert type(x1) is TensorImage and type(x2) is TensorMask
    pred = x1.argmax(1)
    assert type(pred) is TensorImage and type(pred * x2) is TensorImage and type(x2 * pred) is TensorMask
    m = Dice()

    class Fake:
        pred, yb = x1, (x2,)

    m.accumulate(Fake())
    assert m.value == pytest.approx(2 * (pred * x2).sum().item() / (pred + x2).sum().item())
    assert torch.equal(TensorImage([1, 2]), torch.tensor([1, 2])) and cast([1], list) == [1]


def test_same_values_as_fastai():
    fastai_metrics = pytest.importorskip("fastai.metrics")

    class FakeLearn:
        training = False

    g = torch.Generator().manual_seed(3)
    for n_classes, ours, theirs in [(2, Dice(), fastai_metrics.Dice()), (2, JaccardCoeff(), fastai_metrics.JaccardCoeff()),
                                    (4, DiceMulti(), fastai_metrics.DiceMulti())]:
        learn = FakeLearn()
        theirs.reset()
        for _ in range(3):  # three batches
            learn.pred = torch.randn(5, n_classes, 4, 4, generator=g)
            learn.yb = (torch.randint(0, n_classes, (5, 4, 4), generator=g),)
            learn.y = learn.yb[0]
            ours.accumulate(learn)
            theirs.accumulate(learn)
        assert ours.value == pytest.approx(float(theirs.value), abs=1e-12)
        assert ours.name == theirs.name
    x = torch.randn(6, 5, 3, 3, generator=g)
    y = torch.randint(0, 5, (6, 1, 3, 3), generator=g)
    assert foreground_acc(x, y).item() == pytest.approx(fastai_metrics.foreground_acc(x, y).item())
    assert not math.isnan(foreground_acc(x, y).item())

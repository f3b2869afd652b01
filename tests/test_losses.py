"""Flat losses: flattening along the class axis, target dtypes, activation / decoding, reduction,
argument checks, the Dice loss, and the same values as fastai.losses."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilearn import DataLoaders, Learner, SGD
from minilearn.losses import (
    BaseLoss, BCELossFlat, BCEWithLogitsLossFlat, CrossEntropyLossFlat, DiceLoss, FocalLoss, FocalLossFlat,
    L1LossFlat, LabelSmoothingCrossEntropy, LabelSmoothingCrossEntropyFlat, MSELossFlat, not_reduced,
)
from synthetic import class_data


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def randint(high: int, *shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


class Spy:
    """A loss class that records what BaseLoss hands it (shape, dtype) and returns 0."""

    def __init__(self, reduction: str = "mean"):
        self.reduction = reduction
        self.seen: list[tuple] = []

    def __call__(self, inp, targ):
        self.seen.append((tuple(inp.shape), tuple(targ.shape), targ.dtype))
        return inp.new_zeros(())


# ------------------------------------------------------------------------------- flattening along axis
def test_cross_entropy_flat_of_images_is_torch_cross_entropy_over_the_class_axis():
    x, y = randn(2, 5, 3, 4), randint(5, 2, 3, 4)   # (N, C, H, W) logits, (N, H, W) classes
    expected = F.cross_entropy(x, y)
    for axis in (1, -3):
        assert torch.allclose(CrossEntropyLossFlat(axis=axis)(x, y), expected, atol=1e-6)
    # channels last: the default axis=-1
    assert torch.allclose(CrossEntropyLossFlat()(x.permute(0, 2, 3, 1), y), expected, atol=1e-6)
    # one loss per pixel, in the order of the predictions with the class axis swapped last (fastai's)
    per_item = CrossEntropyLossFlat(axis=1, reduction="none")(x, y)
    assert per_item.shape == (2 * 3 * 4,)
    assert torch.allclose(per_item, F.cross_entropy(x, y, reduction="none").transpose(1, -1).flatten(), atol=1e-6)


def test_flattened_shapes_handed_to_the_loss():
    spy = BaseLoss(Spy, axis=1)
    spy(randn(2, 5, 3, 4), randint(5, 2, 3, 4))
    assert spy.func.seen[-1][:2] == ((24, 5), (24,))         # is_2d: rows of class scores
    flat = BaseLoss(Spy, axis=1, is_2d=False)
    flat(randn(2, 5, 3, 4), randn(2, 5, 3, 4))
    assert flat.func.seen[-1][:2] == ((120,), (120,))        # element-wise: everything flat
    kept = BaseLoss(Spy, axis=1, flatten=False)
    kept(randn(2, 5, 3, 4), randint(5, 2, 3, 4))
    assert kept.func.seen[-1][:2] == ((2, 4, 3, 5), (2, 4, 3))  # only the class axis moved last


def test_class_index_targets_with_one_dimension_fewer_line_up_for_any_way_of_naming_the_axis():
    x, y = randn(4, 3, 6), randint(3, 4, 6)                  # (N, C, L) and (N, L)
    expected = F.cross_entropy(x, y)
    for axis in (1, -2):
        assert torch.allclose(CrossEntropyLossFlat(axis=axis)(x, y), expected, atol=1e-6)
    x2, y2 = randn(4, 3), randint(3, 4)                      # (N, C) and (N,) with axis=1
    assert torch.allclose(CrossEntropyLossFlat(axis=1)(x2, y2), F.cross_entropy(x2, y2), atol=1e-6)


def test_same_shape_targets_move_with_the_predictions():
    x, t = randn(2, 3, 4, 5), randint(2, 2, 3, 4, 5)         # multi-label per pixel
    expected = F.binary_cross_entropy_with_logits(x, t.float())
    assert torch.allclose(BCEWithLogitsLossFlat(axis=1)(x, t), expected, atol=1e-6)
    assert torch.allclose(MSELossFlat(axis=1)(x, t), F.mse_loss(x, t.float()), atol=1e-6)
    assert torch.allclose(L1LossFlat(axis=1)(x, t), F.l1_loss(x, t.float()), atol=1e-6)


def test_regression_output_of_shape_n_by_1_meets_targets_of_shape_n():
    pred, targ = randn(8, 1), randn(8)
    assert torch.allclose(MSELossFlat()(pred, targ), F.mse_loss(pred.flatten(), targ), atol=1e-6)
    assert torch.allclose(L1LossFlat()(pred, targ), F.l1_loss(pred.flatten(), targ), atol=1e-6)


def test_an_axis_the_predictions_lack_is_an_error_naming_axis():
    with pytest.raises(IndexError, match="^axis: 2 .*shape \\(4, 3\\)"):
        CrossEntropyLossFlat(axis=2)(randn(4, 3), randint(3, 4))


def test_ignore_index_and_keyword_arguments_reach_the_torch_loss():
    x, y = randn(6, 4), randint(4, 6)
    y[0] = -1
    assert torch.allclose(CrossEntropyLossFlat(ignore_index=-1)(x, y), F.cross_entropy(x, y, ignore_index=-1))
    smoothed = CrossEntropyLossFlat(label_smoothing=0.2)(x, y.clamp(min=0))
    assert torch.allclose(smoothed, F.cross_entropy(x, y.clamp(min=0), label_smoothing=0.2))


# ------------------------------------------------------------------------------- target dtypes
def test_floatify_makes_targets_float_but_keeps_half():
    spy = BaseLoss(Spy, floatify=True, is_2d=False)
    for dtype, expected in ((torch.int64, torch.float32), (torch.bool, torch.float32),
                            (torch.float64, torch.float32), (torch.float16, torch.float16)):
        spy(randn(4, 2), torch.ones(4, 2, dtype=dtype))
        assert spy.func.seen[-1][2] == expected, dtype


def test_small_integer_targets_become_long():
    spy = BaseLoss(Spy)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        spy(randn(4, 3), torch.zeros(4, dtype=dtype))
        assert spy.func.seen[-1][2] == torch.int64, dtype
    x, y = randn(4, 3), randint(3, 4)
    assert torch.allclose(CrossEntropyLossFlat()(x, y.int()), F.cross_entropy(x, y))


def test_binary_losses_take_integer_and_bool_targets():
    x, t = randn(5, 3), randint(2, 5, 3)
    expected = F.binary_cross_entropy_with_logits(x, t.float())
    assert torch.allclose(BCEWithLogitsLossFlat()(x, t), expected, atol=1e-6)
    assert torch.allclose(BCEWithLogitsLossFlat()(x, t.bool()), expected, atol=1e-6)
    assert torch.allclose(BCELossFlat()(x.sigmoid(), t), F.binary_cross_entropy(x.sigmoid(), t.float()), atol=1e-6)
    with pytest.raises(RuntimeError):
        BCEWithLogitsLossFlat(floatify=False)(x, t)          # what floatify is there for


# ------------------------------------------------------------------------------- activation and decodes
def test_cross_entropy_flat_activation_is_softmax_and_decodes_argmax_over_axis():
    x = randn(2, 5, 3, 4)
    loss = CrossEntropyLossFlat(axis=1)
    probs = loss.activation(x)
    assert torch.allclose(probs, F.softmax(x, dim=1)) and torch.allclose(probs.sum(1), torch.ones(2, 3, 4))
    assert torch.equal(loss.decodes(probs), x.argmax(dim=1)) and loss.decodes(probs).shape == (2, 3, 4)
    assert torch.equal(CrossEntropyLossFlat().decodes(randn(6, 4)), randn(6, 4).argmax(-1))


def test_bce_with_logits_activation_is_sigmoid_and_decodes_by_threshold():
    x = torch.tensor([[-2.0, 0.0, 0.3, 3.0]])
    loss = BCEWithLogitsLossFlat()
    assert loss.thresh == 0.5
    assert torch.allclose(loss.activation(x), torch.sigmoid(x))
    assert loss.decodes(loss.activation(x)).tolist() == [[False, False, True, True]]
    assert BCEWithLogitsLossFlat(thresh=0.9).decodes(loss.activation(x)).tolist() == [[False, False, False, True]]


@pytest.mark.parametrize("make", [BCELossFlat, MSELossFlat, L1LossFlat, lambda: BaseLoss(nn.SmoothL1Loss)])
def test_losses_without_a_fused_activation_pass_outputs_through(make):
    x = randn(4, 3)
    loss = make()
    assert loss.activation(x) is x and loss.decodes(x) is x


@pytest.mark.parametrize("make", [
    lambda: LabelSmoothingCrossEntropyFlat(axis=1), lambda: FocalLossFlat(axis=1), LabelSmoothingCrossEntropy,
    FocalLoss,
])
def test_class_losses_apply_softmax_and_argmax_over_the_class_dimension(make):
    x = randn(2, 5, 3, 4)
    loss = make()
    assert torch.allclose(loss.activation(x), F.softmax(x, dim=1))
    assert torch.equal(loss.decodes(x), x.argmax(dim=1))
    flat = randn(6, 4)
    assert torch.allclose(loss.activation(flat), F.softmax(flat, dim=1))
    assert torch.equal(loss.decodes(flat), flat.argmax(dim=1))


# ------------------------------------------------------------------------------- reduction
ALL_LOSSES = {  # name: (make(**kwargs), data() -> (pred, targ), number of per-item losses)
    "ce": (CrossEntropyLossFlat, lambda: (randn(6, 4), randint(4, 6)), 6),
    "ce_images": (lambda **kw: CrossEntropyLossFlat(axis=1, **kw),
                  lambda: (randn(2, 4, 3, 3), randint(4, 2, 3, 3)), 18),
    "bce_logits": (BCEWithLogitsLossFlat, lambda: (randn(6, 3), randint(2, 6, 3)), 18),
    "bce": (BCELossFlat, lambda: (randn(6, 3).sigmoid(), randint(2, 6, 3)), 18),
    "mse": (MSELossFlat, lambda: (randn(6, 1), randn(6)), 6),
    "l1": (L1LossFlat, lambda: (randn(6, 1), randn(6)), 6),
    "label_smoothing": (LabelSmoothingCrossEntropy, lambda: (randn(6, 4), randint(4, 6)), 6),
    "label_smoothing_flat": (LabelSmoothingCrossEntropyFlat, lambda: (randn(6, 4), randint(4, 6)), 6),
    "focal": (FocalLoss, lambda: (randn(6, 4), randint(4, 6)), 6),
    "focal_flat": (FocalLossFlat, lambda: (randn(6, 4), randint(4, 6)), 6),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_reduction_can_be_read_set_to_none_and_set_back(name):
    make, data, n_items = ALL_LOSSES[name]
    pred, targ = data()
    loss = make()
    assert loss.reduction == "mean"
    mean = loss(pred, targ)
    loss.reduction = "none"
    assert loss.reduction == "none"
    per_item = loss(pred, targ)
    assert per_item.shape == (n_items,)
    assert torch.allclose(per_item.mean(), mean, atol=1e-6)
    loss.reduction = "mean"
    assert torch.equal(loss(pred, targ), mean)
    assert torch.allclose(make(reduction="sum")(pred, targ), per_item.sum(), atol=1e-5)
    with pytest.raises(ValueError, match="^reduction: .*'avg'"):
        loss.reduction = "avg"
    assert loss.reduction == "mean"                         # a rejected value changes nothing


def test_label_smoothing_sum_and_mean_match_its_per_item_losses_with_a_class_weight():
    x, y, w = randn(6, 4), randint(4, 6), torch.tensor([1.0, 2.0, 0.5, 1.5])
    per_item = LabelSmoothingCrossEntropy(weight=w, reduction="none")(x, y)
    assert torch.allclose(LabelSmoothingCrossEntropy(weight=w, reduction="sum")(x, y), per_item.sum(), atol=1e-5)


def test_reduction_of_a_wrapped_loss_without_one_cannot_be_set():
    loss = BaseLoss(lambda: (lambda inp, targ: (inp - targ).abs().mean()))
    assert not hasattr(loss, "reduction")                   # so a Learner knows it cannot un-reduce it
    with pytest.raises(AttributeError, match="^reduction: "):
        loss.reduction = "none"


def test_kl_divergence_keeps_its_batchmean_reduction():
    loss = BaseLoss(nn.KLDivLoss, reduction="batchmean", is_2d=True)
    loss.reduction = "batchmean"
    assert loss.reduction == "batchmean"
    with pytest.raises(ValueError, match="^reduction: "):
        MSELossFlat(reduction="batchmean")


# ------------------------------------------------------------------------------- formulas
def test_label_smoothing_at_eps_zero_is_cross_entropy():
    x, y, w = randn(8, 5), randint(5, 8), torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0])
    for reduction in ("mean", "sum", "none"):
        ls = LabelSmoothingCrossEntropy(eps=0.0, weight=w, reduction=reduction)(x, y)
        assert torch.allclose(ls, F.cross_entropy(x, y, weight=w, reduction=reduction), atol=1e-6)
    assert torch.allclose(LabelSmoothingCrossEntropyFlat(eps=0.0)(x, y), F.cross_entropy(x, y), atol=1e-6)


def test_label_smoothing_matches_torch_label_smoothing_without_weights():
    x, y = randn(8, 5), randint(5, 8)
    for eps in (0.1, 0.5):
        for reduction in ("mean", "sum", "none"):
            ours = LabelSmoothingCrossEntropy(eps=eps, reduction=reduction)(x, y)
            assert torch.allclose(ours, F.cross_entropy(x, y, label_smoothing=eps, reduction=reduction), atol=1e-6)


def test_focal_at_gamma_zero_is_cross_entropy_and_down_weights_easy_items_otherwise():
    x, y, w = randn(8, 5), randint(5, 8), torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0])
    ce = F.cross_entropy(x, y, reduction="none")
    assert torch.allclose(FocalLoss(gamma=0.0, reduction="none")(x, y), ce, atol=1e-6)
    assert torch.allclose(FocalLossFlat(gamma=0.0)(x, y), ce.mean(), atol=1e-6)
    assert torch.allclose(FocalLoss(gamma=0.0, weight=w, reduction="sum")(x, y),
                          F.cross_entropy(x, y, weight=w, reduction="sum"), atol=1e-5)
    p_true = F.softmax(x, dim=1).gather(1, y[:, None]).squeeze(1)
    expected = (1 - p_true) ** 2 * -p_true.log()
    assert torch.allclose(FocalLoss(reduction="none")(x, y), expected, atol=1e-6)
    assert (FocalLoss(reduction="none")(x, y) <= ce + 1e-7).all()


def test_pos_weight_keeps_the_class_axis_and_weighs_positives():
    x, t, pw = randn(6, 3), randint(2, 6, 3), torch.tensor([1.0, 3.0, 0.5])
    loss = BCEWithLogitsLossFlat(pos_weight=pw)
    assert loss.flatten is False and BCEWithLogitsLossFlat().flatten is True
    assert torch.allclose(loss(x, t), F.binary_cross_entropy_with_logits(x, t.float(), pos_weight=pw), atol=1e-6)
    with pytest.raises(ValueError, match="^flatten: .*pos_weight"):
        BCEWithLogitsLossFlat(pos_weight=pw, flatten=True)


# ------------------------------------------------------------------------------- objects
def test_repr_names_the_wrapped_loss():
    assert repr(CrossEntropyLossFlat()) == "FlattenedLoss of CrossEntropyLoss()"
    assert repr(MSELossFlat()) == "FlattenedLoss of MSELoss()"
    assert repr(FocalLossFlat(gamma=1.5)) == "FlattenedLoss of FocalLoss(gamma=1.5, reduction='mean')"
    assert repr(LabelSmoothingCrossEntropy()) == "LabelSmoothingCrossEntropy(eps=0.1, reduction='mean')"


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_losses_survive_pickle_and_deepcopy(name):
    make, data, _ = ALL_LOSSES[name]
    pred, targ = data()
    loss = make()
    for twin in (pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss)):
        assert torch.equal(twin(pred, targ), loss(pred, targ))
        assert type(twin) is type(loss) and twin.reduction == loss.reduction


def test_to_moves_the_class_weight_and_returns_the_loss():
    w = torch.ones(3)
    for loss in (CrossEntropyLossFlat(weight=w), FocalLossFlat(weight=w), LabelSmoothingCrossEntropyFlat(weight=w)):
        assert loss.to("meta") is loss and loss.func.weight.device.type == "meta"
    module_loss = FocalLoss(weight=w).to("meta")
    assert module_loss.weight.device.type == "meta"
    assert FocalLoss().weight is None


def test_class_index_losses_carry_fastai_y_int_flag():
    for loss in (CrossEntropyLossFlat(), FocalLoss(), FocalLossFlat(), LabelSmoothingCrossEntropy(),
                 LabelSmoothingCrossEntropyFlat()):
        assert loss.y_int is True
    assert not hasattr(BCEWithLogitsLossFlat(), "y_int")


def test_a_learner_trains_the_same_with_cross_entropy_flat_as_with_torch_cross_entropy():
    x, y, vx, vy = class_data(n=64, n_valid=32)

    def fit(loss_func):
        dls = DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)
        torch.manual_seed(0)
        learn = Learner(dls, nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), loss_func,
                        opt_func=SGD, lr=0.1)
        with learn.no_logging():
            learn.fit(2)
        return learn

    flat, plain = fit(CrossEntropyLossFlat()), fit(nn.CrossEntropyLoss())
    assert flat.recorder.values == plain.recorder.values
    preds, targs = flat.get_preds(act=flat.loss_func.activation)
    assert torch.allclose(preds.sum(-1), torch.ones(len(vy)))
    assert flat.loss_func.decodes(preds).shape == targs.shape


# ------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("make, error, start", [
    (lambda: LabelSmoothingCrossEntropy(eps=1.0), ValueError, "eps"),
    (lambda: LabelSmoothingCrossEntropy(eps=-0.1), ValueError, "eps"),
    (lambda: LabelSmoothingCrossEntropyFlat(eps="0.1"), TypeError, "eps"),
    (lambda: FocalLoss(gamma=-1.0), ValueError, "gamma"),
    (lambda: FocalLossFlat(gamma=float("nan")), ValueError, "gamma"),
    (lambda: CrossEntropyLossFlat(reduction="avg"), ValueError, "reduction"),
    (lambda: FocalLoss(reduction=None), TypeError, "reduction"),
    (lambda: LabelSmoothingCrossEntropyFlat(reduction="max"), ValueError, "reduction"),
    (lambda: MSELossFlat(reduction="average"), ValueError, "reduction"),
    (lambda: CrossEntropyLossFlat(axis=1.0), TypeError, "axis"),
    (lambda: CrossEntropyLossFlat(weight=[1.0, 2.0]), TypeError, "weight"),
    (lambda: FocalLoss(weight=[1.0, 2.0]), TypeError, "weight"),
    (lambda: CrossEntropyLossFlat(ignore_index=0.5), TypeError, "ignore_index"),
    (lambda: BCEWithLogitsLossFlat(thresh="half"), TypeError, "thresh"),
    (lambda: BCEWithLogitsLossFlat(pos_weight=2.0), TypeError, "pos_weight"),
    (lambda: BCELossFlat(flatten="yes"), TypeError, "flatten"),
    (lambda: MSELossFlat(floatify=1), TypeError, "floatify"),
    (lambda: BaseLoss(nn.MSELoss, is_2d=None), TypeError, "is_2d"),
    (lambda: BaseLoss("mse"), TypeError, "loss_cls"),
])
def test_bad_arguments_are_errors_naming_the_argument(make, error, start):
    with pytest.raises(error, match=f"^{start}: "):
        make()


def test_setting_a_bad_reduction_on_a_module_loss_is_an_error():
    loss = LabelSmoothingCrossEntropy()
    with pytest.raises(ValueError, match="^reduction: "):
        loss.reduction = "median"
    assert loss.reduction == "mean"


# ------------------------------------------------------------------------------- Dice loss
def test_dice_one_hot_makes_one_binary_mask_per_class():
    x = torch.tensor([[[1, 0, 2],
                       [2, 2, 1]]])                                     # (N=1, H=2, W=3) class indices
    masks = DiceLoss._one_hot(x, 3)
    assert masks.shape == (1, 3, 2, 3) and masks.dtype == torch.int64
    assert masks.tolist() == [[[[0, 1, 0], [0, 0, 0]],                  # class 0
                               [[1, 0, 0], [0, 0, 1]],                  # class 1
                               [[0, 0, 1], [1, 1, 0]]]]                 # class 2
    assert torch.equal(DiceLoss._one_hot(x, 3, axis=-1), masks.permute(0, 2, 3, 1))   # channels last
    ignored = DiceLoss._one_hot(torch.tensor([[0, 255, 1]]), 2)         # an index past the classes: no mask
    assert ignored.tolist() == [[[1, 0, 0], [0, 0, 1]]]


def test_dice_activation_is_softmax_and_decodes_give_the_argmax_target():
    scores = torch.tensor([[[[2.0, 1.0], [1.0, 5.0]],
                            [[1.0, 2.0], [3.0, 1.0]],
                            [[3.0, 0.0], [4.0, 3.0]]]])                 # (1, 3, 2, 2)
    target = torch.tensor([[[2, 1], [2, 0]]])
    loss = DiceLoss()
    assert torch.allclose(loss.activation(scores), F.softmax(scores, dim=1))
    assert torch.equal(loss.decodes(scores), target)
    assert torch.equal(loss.decodes(loss.activation(scores)), target)


def test_dice_of_identical_masks_is_zero():
    scores = torch.tensor([[[0.1], [0.1], [100.0]]])                    # (1, 3, 1): sure of class 2
    assert DiceLoss(reduction="mean")(scores, torch.tensor([[2]])).item() == pytest.approx(0, abs=1e-5)
    image_scores = 50.0 * F.one_hot(randint(4, 2, 5, 6), 4).permute(0, 3, 1, 2).float()
    target = image_scores.argmax(1)
    assert DiceLoss(reduction="none")(image_scores, target).abs().max() < 1e-5


def test_dice_of_a_one_dimensional_half_overlap_is_two_thirds():
    scores = torch.tensor([[[0.1, 100.0], [0.1, 0.1], [100.0, 0.1]]])   # predicts classes [2, 0]
    target = torch.tensor([[2, 1]])
    # class 0: predicted, absent (1); class 1: present, missed (1); class 2: right (0)
    assert DiceLoss(reduction="mean")(scores, target).item() == pytest.approx(2 / 3, abs=1e-4)
    assert DiceLoss(reduction="none")(scores, target).squeeze(0).tolist() == pytest.approx([1, 1, 0], abs=1e-4)


def test_dice_of_an_all_background_prediction_against_two_thin_stripes():
    target = torch.zeros(1, 100, 100, dtype=torch.long)
    target[0, 20, :] = 1                                                # a one-pixel line of class 1
    target[0, 70, :] = 2                                                # and one of class 2
    scores = torch.zeros(1, 3, 100, 100)
    scores[:, 0] = 100.0                                                # background everywhere
    # background: 9,800 of 10,000 pixels right, dice 2 * 9800 / (10000 + 9800); both lines missed
    expected = (1 - 2 * 9800 / 19800 + 1 + 1) / 3
    mean = DiceLoss(reduction="mean")(scores, target)
    assert mean.item() == pytest.approx(expected, abs=1e-5) and mean.item() == pytest.approx(0.67, abs=0.005)


def test_dice_reductions_none_is_per_image_and_class_and_sum_is_the_default():
    pred, targ = randn(3, 4, 5, 6), randint(4, 3, 5, 6)
    per_item = DiceLoss(reduction="none")(pred, targ)
    assert per_item.shape == (3, 4) and ((per_item >= 0) & (per_item <= 1)).all()
    loss = DiceLoss()
    assert loss.reduction == "sum"
    assert torch.allclose(loss(pred, targ), per_item.sum(), atol=1e-6)
    assert torch.allclose(DiceLoss(reduction="mean")(pred, targ), per_item.mean(), atol=1e-6)
    with not_reduced(loss):
        assert torch.equal(loss(pred, targ), per_item)
    assert loss.reduction == "sum"


def test_dice_square_in_union_squares_the_probabilities_in_the_denominator():
    probs = torch.tensor([[[0.25], [0.75]]])                            # (1, 2, 1) probabilities
    scores, target = probs.log(), torch.tensor([[1]])                   # softmax(log p) = p
    # class 0 (absent): dice smooth / (0.25 + smooth) plain, smooth / (0.0625 + smooth) squared;
    # class 1: dice (1.5 + smooth) / (1.75 + smooth) plain, (1.5 + smooth) / (0.5625 + 1 + smooth) squared
    e = 1e-6
    plain, squared = DiceLoss()(scores, target), DiceLoss(square_in_union=True)(scores, target)
    assert plain.item() == pytest.approx(2 - e / (0.25 + e) - (1.5 + e) / (1.75 + e), abs=1e-6)
    assert squared.item() == pytest.approx(2 - e / (0.0625 + e) - (1.5 + e) / (1.5625 + e), abs=1e-6)
    assert squared.item() == pytest.approx(1.04, abs=1e-4)              # 1 + (1 - 0.96)
    pred, targ = randn(2, 3, 4, 4), randint(3, 2, 4, 4)                 # p ** 2 < p: never a higher loss
    sq = DiceLoss(reduction="none", square_in_union=True)(pred, targ)
    assert (sq < DiceLoss(reduction="none")(pred, targ)).all()


def test_dice_class_axis_can_be_last_or_negative():
    pred, targ = randn(2, 3, 4, 5), randint(3, 2, 4, 5)
    expected = DiceLoss(reduction="none")(pred, targ)
    assert torch.allclose(DiceLoss(axis=-3, reduction="none")(pred, targ), expected, atol=1e-6)
    channels_last = DiceLoss(axis=-1, reduction="none")
    assert torch.allclose(channels_last(pred.permute(0, 2, 3, 1), targ), expected, atol=1e-6)
    assert torch.equal(channels_last.decodes(pred.permute(0, 2, 3, 1)), pred.argmax(1))


def test_dice_in_half_precision_keeps_the_dtype_and_does_not_overflow_on_large_images():
    pred, targ = randn(1, 2, 300, 300), randint(2, 1, 300, 300)         # sums past float16's 65,504
    full = DiceLoss(reduction="none")(pred, targ)
    half_pred = pred.half().requires_grad_()
    half = DiceLoss(reduction="none")(half_pred, targ)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, atol=2e-3, rtol=0)
    half.sum().backward()
    assert half_pred.grad.dtype == torch.float16 and torch.isfinite(half_pred.grad).all()


def test_dice_targets_of_the_wrong_shape_are_a_clear_error_naming_both_shapes():
    pred = randn(2, 3, 4, 4)
    one_hot = DiceLoss._one_hot(randint(3, 2, 4, 4), 3)
    with pytest.raises(ValueError, match=r"^targ: .*\(2, 4, 4\).*\(2, 3, 4, 4\).*got shape \(2, 3, 4, 4\).*one-hot"):
        DiceLoss()(pred, one_hot)
    with pytest.raises(ValueError, match=r"^targ: .*predictions of shape \(2, 3, 4, 4\).*got shape \(2, 4, 5\)"):
        DiceLoss()(pred, randint(3, 2, 4, 5))


def test_dice_class_axis_must_be_a_dimension_other_than_the_batch():
    pred, targ = randn(2, 3, 4), randint(3, 2, 4)
    with pytest.raises(IndexError, match=r"^axis: 3 .*shape \(2, 3, 4\)"):
        DiceLoss(axis=3)(pred, targ)
    with pytest.raises(ValueError, match="^axis: -3 is the batch dimension"):
        DiceLoss(axis=-3)(pred, targ)


@pytest.mark.parametrize("make, error, start", [
    (lambda: DiceLoss(reduction="avg"), ValueError, "reduction"),
    (lambda: DiceLoss(reduction=None), TypeError, "reduction"),
    (lambda: DiceLoss(smooth=-1.0), ValueError, "smooth"),
    (lambda: DiceLoss(smooth="1e-6"), TypeError, "smooth"),
    (lambda: DiceLoss(axis=1.0), TypeError, "axis"),
    (lambda: DiceLoss(square_in_union="yes"), TypeError, "square_in_union"),
    (lambda: DiceLoss._one_hot(torch.zeros(2, 3), 0), ValueError, "classes"),
    (lambda: DiceLoss._one_hot(torch.zeros(2, 3), 2, axis=3), IndexError, "axis"),
])
def test_dice_bad_arguments_are_errors_naming_the_argument(make, error, start):
    with pytest.raises(error, match=f"^{start}: "):
        make()


def test_dice_bad_reduction_set_later_is_an_error_and_changes_nothing():
    loss = DiceLoss(reduction="mean")
    with pytest.raises(ValueError, match="^reduction: .*'avg'"):
        loss.reduction = "avg"
    assert loss.reduction == "mean"


def test_dice_survives_pickle_and_deepcopy():
    pred, targ = randn(2, 3, 4, 4), randint(3, 2, 4, 4)
    loss = DiceLoss(axis=1, smooth=1e-3, reduction="mean", square_in_union=True)
    assert repr(loss) == "DiceLoss(axis=1, smooth=0.001, reduction='mean', square_in_union=True)"
    for twin in (pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss)):
        assert type(twin) is DiceLoss and repr(twin) == repr(loss)
        assert torch.equal(twin(pred, targ), loss(pred, targ))


# ------------------------------------------------------------------------------- side by side with fastai
def _plain(t: torch.Tensor) -> torch.Tensor:
    """fastai returns its TensorBase subclass; compare as plain tensors."""
    return t.as_subclass(torch.Tensor)


def _parity_cases():
    """(name, fastai class name, kwargs, pred, targ): each loss on flat and image-shaped data, weighted too."""
    w4 = torch.tensor([1.0, 2.0, 0.5, 1.5])
    cls2d, cls4d = (randn(8, 4), randint(4, 8)), (randn(2, 4, 3, 5), randint(4, 2, 3, 5))
    multi, multi4d = (randn(8, 3), randint(2, 8, 3)), (randn(2, 3, 4, 5), randint(2, 2, 3, 4, 5))
    reg = (randn(8, 1), randn(8))
    cases = []
    for red in ("mean", "sum", "none"):
        cases += [
            ("CrossEntropyLossFlat", dict(reduction=red), *cls2d),
            ("CrossEntropyLossFlat", dict(axis=1, weight=w4, reduction=red), *cls4d),
            ("FocalLossFlat", dict(gamma=2.0, reduction=red), *cls2d),
            ("FocalLossFlat", dict(axis=1, gamma=1.5, weight=w4, reduction=red), *cls4d),
            ("LabelSmoothingCrossEntropyFlat", dict(eps=0.1, reduction=red), *cls2d),
            ("LabelSmoothingCrossEntropyFlat", dict(axis=1, eps=0.3, weight=w4, reduction=red), *cls4d),
            ("LabelSmoothingCrossEntropy", dict(eps=0.2, weight=w4, reduction=red), *cls2d),
            ("LabelSmoothingCrossEntropy", dict(eps=0.1, reduction=red), *cls4d),
            ("FocalLoss", dict(gamma=3.0, weight=w4, reduction=red), *cls2d),
            ("FocalLoss", dict(reduction=red), *cls4d),
            ("BCEWithLogitsLossFlat", dict(reduction=red), *multi),
            ("BCEWithLogitsLossFlat", dict(axis=1, reduction=red), *multi4d),
            ("BCEWithLogitsLossFlat", dict(pos_weight=torch.tensor([1.0, 3.0, 0.5]), reduction=red), *multi),
            ("BCELossFlat", dict(reduction=red), multi[0].sigmoid(), multi[1]),
            ("BCELossFlat", dict(axis=1, weight=torch.tensor(2.0), reduction=red), multi4d[0].sigmoid(), multi4d[1]),
            ("MSELossFlat", dict(reduction=red), *reg),
            ("MSELossFlat", dict(axis=1, reduction=red), multi4d[0], multi4d[1]),
            ("L1LossFlat", dict(reduction=red), *reg),
            ("L1LossFlat", dict(axis=1, reduction=red), multi4d[0], multi4d[1]),
        ]
    return cases


PARITY = _parity_cases()


@pytest.mark.parametrize("name, kwargs, pred, targ", PARITY,
                         ids=[f"{c[0]}-{c[1].get('axis', -1)}-{c[1]['reduction']}-{i}" for i, c in enumerate(PARITY)])
def test_same_values_as_fastai(fastai, name, kwargs, pred, targ):
    import fastai.losses as fastai_losses
    import minilearn.losses as ours

    theirs = _plain(getattr(fastai_losses, name)(**kwargs)(pred.clone(), targ.clone()))
    mine = getattr(ours, name)(**kwargs)(pred.clone(), targ.clone())
    assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["CrossEntropyLossFlat", "FocalLossFlat", "LabelSmoothingCrossEntropyFlat",
                                  "LabelSmoothingCrossEntropy", "BCEWithLogitsLossFlat", "BCELossFlat",
                                  "MSELossFlat", "L1LossFlat"])
def test_same_activation_and_decoding_as_fastai(fastai, name):
    import fastai.losses as fastai_losses
    import minilearn.losses as ours

    x = randn(8, 4)
    theirs, mine = getattr(fastai_losses, name)(), getattr(ours, name)()
    torch.testing.assert_close(mine.activation(x), _plain(torch.as_tensor(theirs.activation(x))), atol=1e-6, rtol=0)
    probs = mine.activation(x)
    assert torch.equal(mine.decodes(probs), _plain(torch.as_tensor(theirs.decodes(probs))))


def test_same_image_activation_and_decoding_as_fastai_where_fastai_uses_axis(fastai):
    import fastai.losses as fastai_losses

    x = randn(2, 4, 3, 5)
    for ours, theirs in ((CrossEntropyLossFlat(axis=1), fastai_losses.CrossEntropyLossFlat(axis=1)),
                         (FocalLossFlat(axis=1), fastai_losses.FocalLossFlat(axis=1)),
                         (BCEWithLogitsLossFlat(axis=1, thresh=0.3),
                          fastai_losses.BCEWithLogitsLossFlat(axis=1, thresh=0.3))):
        torch.testing.assert_close(ours.activation(x), _plain(theirs.activation(x)), atol=1e-6, rtol=0)
        assert torch.equal(ours.decodes(ours.activation(x)), _plain(theirs.decodes(ours.activation(x))))


def test_same_repr_and_reduction_switch_as_fastai(fastai):
    import fastai.losses as fastai_losses

    x, y = randn(8, 4), randint(4, 8)
    for ours, theirs in ((CrossEntropyLossFlat(), fastai_losses.CrossEntropyLossFlat()),
                         (MSELossFlat(), fastai_losses.MSELossFlat()),
                         (BCEWithLogitsLossFlat(), fastai_losses.BCEWithLogitsLossFlat())):
        assert repr(ours) == repr(theirs)
    ours, theirs = FocalLossFlat(), fastai_losses.FocalLossFlat()
    ours.reduction = theirs.reduction = "none"
    torch.testing.assert_close(ours(x, y), _plain(theirs(x, y)), atol=1e-6, rtol=0)
    assert ours.reduction == theirs.reduction == "none"


DICE_SHAPES = [(2, 3, 7), (2, 4, 5, 6), (1, 2, 3, 4, 5), (3, 5, 8, 8)]   # (N, C, *spatial): 1-, 2-, 3-d images


@pytest.mark.parametrize("shape", DICE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("square_in_union", [False, True], ids=["plain", "squared"])
def test_dice_same_values_as_fastai(fastai, shape, reduction, square_in_union):
    import fastai.losses as fastai_losses

    seed = sum(shape)
    pred, targ = 2 * randn(*shape, seed=seed), randint(shape[1], shape[0], *shape[2:], seed=seed + 1)
    kwargs = dict(reduction=reduction, square_in_union=square_in_union)
    theirs = _plain(fastai_losses.DiceLoss(**kwargs)(pred.clone(), targ.clone()))
    mine = DiceLoss(**kwargs)(pred.clone(), targ.clone())
    assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    smooth = dict(kwargs, smooth=0.5)                                  # a smooth that shows in the values
    torch.testing.assert_close(DiceLoss(**smooth)(pred, targ), _plain(fastai_losses.DiceLoss(**smooth)(pred, targ)),
                               atol=1e-6, rtol=0)


def test_dice_same_masks_activation_and_decoding_as_fastai(fastai):
    import fastai.losses as fastai_losses

    x, targ = randn(2, 4, 3, 5), randint(4, 2, 3, 5)
    ours, theirs = DiceLoss(), fastai_losses.DiceLoss()
    assert torch.equal(DiceLoss._one_hot(targ, 4), _plain(fastai_losses.DiceLoss._one_hot(targ, 4)))
    torch.testing.assert_close(ours.activation(x), _plain(theirs.activation(x)), atol=1e-6, rtol=0)
    assert torch.equal(ours.decodes(x), _plain(theirs.decodes(x)))
    assert ours.reduction == theirs.reduction == "sum" and ours.smooth == theirs.smooth

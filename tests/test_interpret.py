"""Interpretation and ClassificationInterpretation: what a trained model gets wrong, as in fastai."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from minilearn import BCEWithLogitsLossFlat, CrossEntropyLossFlat, DataLoaders, Learner, MSELossFlat
from minilearn.interpret import ClassificationInterpretation, Interpretation
from minilearn.metrics import mnist_loss

VOCAB = ["cat", "dog", "fish"]
# A fixed set whose predictions we choose: the model is the identity, so each input row is its logits.
TARGS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
PRED_CLASSES = torch.tensor([0, 1, 1, 1, 1, 0, 2, 0, 2, 1])
# By hand, rows actual, columns predicted.
HAND_CM = np.array([[1, 2, 0],
                    [1, 2, 0],
                    [1, 1, 2]])


def fixed_logits() -> torch.Tensor:
    """Logits whose argmax is PRED_CLASSES, with a different margin per item (so the losses differ)."""
    x = torch.zeros(len(TARGS), 3)
    x[torch.arange(len(TARGS)), PRED_CLASSES] = 1 + 0.3 * torch.arange(len(TARGS), dtype=torch.float32)
    x[:, 2] += 0.05 * torch.arange(len(TARGS), dtype=torch.float32)  # break ties between the other two
    return x


def identity_linear(n: int) -> nn.Linear:
    """A Linear layer that returns its input: the predictions are the inputs we wrote."""
    m = nn.Linear(n, n)
    with torch.no_grad():
        m.weight.copy_(torch.eye(n))
        m.bias.zero_()
    return m


def class_learner(loss_func=None, vocab=VOCAB, valid: bool = True, bs: int = 4) -> Learner:
    x = fixed_logits()
    if valid:
        dls = DataLoaders.from_tensors(x, TARGS, x, TARGS, bs=bs, vocab=vocab, seed=0)
    else:
        dls = DataLoaders.from_tensors(x, TARGS, bs=bs, vocab=vocab, seed=0)
    return Learner(dls, identity_linear(3), loss_func if loss_func is not None else CrossEntropyLossFlat())


def interp(**kwargs) -> ClassificationInterpretation:
    return ClassificationInterpretation.from_learner(class_learner(**kwargs))


def binary_set(n: int = 12, seed: int = 0):
    """fastbook's 3-vs-7 shape: rows of 784 pixels, (N, 1) float 0/1 targets; the model's logit is pixel 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    x[:, 0] = torch.linspace(-2, 2, n)
    y = (torch.rand(n, 1, generator=g) > 0.5).float()
    model = nn.Linear(784, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0] = 1.0
        model.bias.zero_()
    return x, y, model


def binary_learner(loss_func=mnist_loss) -> Learner:
    x, y, model = binary_set()
    return Learner(DataLoaders.from_tensors(x, y, x, y, bs=5, vocab=["3", "7"]), model, loss_func)


# ---------------------------------------------------------------- confusion matrix
def test_confusion_matrix_equals_hand_count():
    cm = interp().confusion_matrix()
    assert isinstance(cm, np.ndarray) and cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, HAND_CM)
    assert cm.sum() == len(TARGS)


def test_plain_cross_entropy_is_decoded_by_argmax_with_softmax_probabilities():
    """nn.CrossEntropyLoss has neither `activation` nor `decodes`: argmax over the last dim, softmax probs."""
    i = interp(loss_func=nn.CrossEntropyLoss())
    np.testing.assert_array_equal(i.confusion_matrix(), HAND_CM)
    torch.testing.assert_close(i.probs, F.softmax(fixed_logits(), dim=-1))
    assert torch.equal(i.decoded, PRED_CLASSES)


def test_most_confused_order_and_min_val():
    i = interp()
    assert i.most_confused() == [("cat", "dog", 2), ("dog", "cat", 1), ("fish", "cat", 1), ("fish", "dog", 1)]
    assert i.most_confused(min_val=2) == [("cat", "dog", 2)]
    assert i.most_confused(min_val=3) == []


def test_vocab_defaults_to_class_indices():
    i = interp(vocab=None)
    assert i.vocab == [0, 1, 2]
    assert i.most_confused(min_val=2) == [(0, 1, 2)]


def test_vocab_too_short_for_the_classes_is_an_error():
    with pytest.raises(ValueError, match="vocab"):
        interp(vocab=["cat", "dog"])


# ---------------------------------------------------------------- top losses
def test_top_losses_equal_topk_of_cross_entropy_by_hand():
    i = interp()
    hand = F.cross_entropy(fixed_logits(), TARGS, reduction="none")
    torch.testing.assert_close(i.losses, hand)
    for largest in (True, False):
        values, idx = i.top_losses(4, largest=largest)
        want_values, want_idx = torch.topk(hand, 4, largest=largest)
        torch.testing.assert_close(values, want_values)
        assert torch.equal(idx, want_idx)
    values, idx = i.top_losses()  # all of them, largest first
    assert len(values) == len(TARGS) and torch.all(values[:-1] >= values[1:])


def test_top_losses_items_are_the_datasets_items():
    values, idx, (x, y) = interp().top_losses(3, items=True)
    assert torch.equal(x, fixed_logits()[idx]) and torch.equal(y, TARGS[idx])


def test_top_losses_k_larger_than_the_set_names_k():
    i = interp()
    with pytest.raises(ValueError, match=r"^k: .*10 items"):
        i.top_losses(11)
    with pytest.raises(ValueError, match=r"^k: "):
        i.top_losses(-1)
    with pytest.raises(ValueError, match=r"^k: "):
        i.plot_top_losses(11)


def test_getitem_gives_the_five_at_positions():
    i = interp()
    inputs, preds, targs, decoded, losses = i[[1, 5]]
    assert torch.equal(inputs, fixed_logits()[[1, 5]]) and torch.equal(targs, TARGS[[1, 5]])
    assert torch.equal(decoded, PRED_CLASSES[[1, 5]]) and losses.shape == (2,)
    torch.testing.assert_close(preds, F.softmax(fixed_logits()[[1, 5]], dim=-1))


# ---------------------------------------------------------------- binary, single output
def test_mnist_loss_binary_model():
    """fastbook's mnist_loss has no reduction, activation or decodes: sigmoid > 0.5, losses item by item."""
    i = ClassificationInterpretation.from_learner(binary_learner())
    x, y, _ = binary_set()
    logit = x[:, 0]
    assert torch.equal(i.decoded, (logit > 0).long())
    assert torch.equal(i.targs, y[:, 0].long())
    hand_losses = torch.where(y[:, 0] == 1, 1 - logit.sigmoid(), logit.sigmoid())
    torch.testing.assert_close(i.losses, hand_losses)
    torch.testing.assert_close(i.probs[:, 1], logit.sigmoid())
    hand_cm = np.zeros((2, 2), dtype=int)
    for t, d in zip(y[:, 0].long().tolist(), (logit > 0).long().tolist()):
        hand_cm[t, d] += 1
    np.testing.assert_array_equal(i.confusion_matrix(), hand_cm)
    assert i.vocab == ["3", "7"]


def test_bce_with_logits_single_output_gives_the_same_classes_as_mnist_loss():
    by_bce = ClassificationInterpretation.from_learner(binary_learner(BCEWithLogitsLossFlat()))
    by_mnist = ClassificationInterpretation.from_learner(binary_learner())
    assert torch.equal(by_bce.decoded, by_mnist.decoded)
    np.testing.assert_array_equal(by_bce.confusion_matrix(), by_mnist.confusion_matrix())
    x, y, _ = binary_set()
    torch.testing.assert_close(by_bce.losses, F.binary_cross_entropy_with_logits(x[:, 0], y[:, 0], reduction="none"))


def test_act_overrides_the_loss_activation():
    i = ClassificationInterpretation.from_learner(binary_learner(), act=torch.sigmoid)
    x, _, _ = binary_set()
    torch.testing.assert_close(i.preds[:, 0], x[:, 0].sigmoid())
    torch.testing.assert_close(i.probs[:, 1], x[:, 0].sigmoid())  # not sigmoid applied twice


# ---------------------------------------------------------------- plots
def test_plot_confusion_matrix_figure():
    fig = interp().plot_confusion_matrix(figsize=(4, 4))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "Confusion matrix"
    assert [t.get_text() for t in ax.get_xticklabels()] == VOCAB
    assert [t.get_text() for t in ax.get_yticklabels()] == VOCAB
    assert ax.get_ylabel() == "Actual" and ax.get_xlabel() == "Predicted"
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(ax.texts) == 9
    assert all(texts[i, j] == str(HAND_CM[i, j]) for i in range(3) for j in range(3))
    assert len(interp().plot_confusion_matrix(plot_txt=False).axes[0].texts) == 0


def test_plot_confusion_matrix_normalize_rows_sum_to_one():
    fig = interp().plot_confusion_matrix(normalize=True, norm_dec=3)
    ax = fig.axes[0]
    drawn = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(drawn.sum(axis=1), 1.0)
    np.testing.assert_allclose(drawn, HAND_CM / HAND_CM.sum(axis=1, keepdims=True))
    assert all(len(t.get_text().split(".")[1]) == 3 for t in ax.texts)


def test_plot_confusion_matrix_normalize_shows_zero_for_a_class_without_items():
    i = interp(vocab=["cat", "dog", "fish", "bird"])  # no item is a bird, none predicted one
    drawn = np.asarray(i.plot_confusion_matrix(normalize=True).axes[0].images[0].get_array())
    np.testing.assert_allclose(drawn.sum(axis=1), [1, 1, 1, 0])


def image_learner() -> Learner:
    """(N, 1, 8, 8) images; the model's logit for class c is pixel c of the first row."""
    x = torch.rand(len(TARGS), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0, :3] = fixed_logits()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[[0, 1, 2], [0, 1, 2]] = 1.0
        model[1].bias.zero_()
    dls = DataLoaders.from_tensors(x, TARGS, x, TARGS, bs=4, vocab=VOCAB)
    return Learner(dls, model, CrossEntropyLossFlat())


def test_plot_top_losses_titles_name_the_classes():
    i = ClassificationInterpretation.from_learner(image_learner())
    fig = i.plot_top_losses(4)
    assert isinstance(fig, Figure)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 4 and all(np.asarray(ax.images[0].get_array()).shape == (8, 8) for ax in drawn)
    assert fig._suptitle.get_text() == "Prediction/Actual/Loss/Probability"
    hand = F.cross_entropy(fixed_logits(), TARGS, reduction="none")
    values, idx = torch.topk(hand, 4)
    probs = F.softmax(fixed_logits(), dim=-1)
    want = [f"{VOCAB[PRED_CLASSES[j]]}/{VOCAB[TARGS[j]]} / {hand[j]:.2f} / {probs[j, TARGS[j]]:.2f}"
            for j in idx.tolist()]
    assert [ax.get_title() for ax in drawn] == want
    assert all(ax.get_title().split("/")[0] in VOCAB for ax in drawn)


def test_plot_top_losses_ranks_and_grid():
    i = ClassificationInterpretation.from_learner(image_learner())
    _, idx = i.top_losses()
    fig = i.plot_top_losses(range(2, 5), largest=False, ncols=3)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 3 and len(fig.axes) == 3
    _, smallest = i.top_losses(largest=False)
    assert [ax.get_title() for ax in drawn] == [i._title(j) for j in smallest[2:5].tolist()]


def test_plot_top_losses_draws_flat_mnist_rows_as_28x28():
    fig = ClassificationInterpretation.from_learner(binary_learner()).plot_top_losses(5)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 5
    assert all(np.asarray(ax.images[0].get_array()).shape == (28, 28) for ax in drawn)
    assert all(ax.get_title().split(" / ")[0] in ("3/7", "7/3", "3/3", "7/7") for ax in drawn)


def test_plot_top_losses_rejects_flat_inputs_that_are_not_square():
    i = ClassificationInterpretation.from_learner(wide_learner())  # interpreting works; drawing cannot
    np.testing.assert_array_equal(i.confusion_matrix(), HAND_CM)
    with pytest.raises(ValueError, match=r"^inputs: .*10 values"):
        i.plot_top_losses(3)


def wide_learner() -> Learner:
    x = torch.cat([fixed_logits(), torch.zeros(len(TARGS), 7)], dim=1)  # 10 values per item
    model = nn.Linear(10, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[[0, 1, 2], [0, 1, 2]] = 1.0
        model.bias.zero_()
    return Learner(DataLoaders.from_tensors(x, TARGS, x, TARGS, bs=4), model, CrossEntropyLossFlat())


def test_regression_interpretation_top_losses_and_titles():
    x = torch.linspace(-1, 1, 8).unsqueeze(1).repeat(1, 4)  # 4 = 2x2 "images"
    y = torch.zeros(8, 1)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.fill_(0.25)
        model.bias.zero_()
    learn = Learner(DataLoaders.from_tensors(x, y, x, y, bs=3), model, MSELossFlat())
    i = Interpretation.from_learner(learn)
    torch.testing.assert_close(i.losses, x[:, 0] ** 2)
    values, idx = i.top_losses(2)
    assert set(idx.tolist()) == {0, 7}
    fig = i.plot_top_losses(2)
    assert fig._suptitle.get_text() == "Prediction/Actual/Loss"
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == [f"{x[j, 0].item():.3g}/0 / 1.00" for j in idx.tolist()]  # prediction/target/loss


# ---------------------------------------------------------------- report
def test_classification_report_names_each_class(capsys):
    interp().print_classification_report()
    out = capsys.readouterr().out
    for name in VOCAB:
        assert name in out
    assert "precision" in out and "recall" in out


def test_classification_report_without_sklearn_names_the_method(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    with pytest.raises(ImportError, match="print_classification_report"):
        interp().print_classification_report()


# ---------------------------------------------------------------- which data
def test_ds_idx_0_interprets_the_training_set_in_order():
    learn = class_learner(bs=3)  # a shuffled train loader, whose last batch is short
    i = ClassificationInterpretation.from_learner(learn, ds_idx=0)
    assert torch.equal(i.targs, TARGS) and torch.equal(i.inputs, fixed_logits())
    np.testing.assert_array_equal(i.confusion_matrix(), HAND_CM)
    assert learn.dls.train.shuffle  # the learner's own loader is left as it was


def test_dl_a_test_like_loader_with_labels():
    learn = class_learner()
    dl = learn.dls.test_dl((fixed_logits()[:6], TARGS[:6]))
    i = ClassificationInterpretation.from_learner(learn, dl=dl)
    assert len(i) == 6
    np.testing.assert_array_equal(i.confusion_matrix(), [[1, 2, 0], [1, 2, 0], [0, 0, 0]])


def test_a_loader_without_labels_is_an_error_naming_dl():
    learn = class_learner()
    with pytest.raises(ValueError, match=r"^dl: .*no targets"):
        ClassificationInterpretation.from_learner(learn, dl=learn.dls.test_dl(fixed_logits()))


def test_a_learner_without_validation_data_is_an_error_naming_ds_idx():
    with pytest.raises(ValueError, match=r"^ds_idx: .*no validation loader"):
        ClassificationInterpretation.from_learner(class_learner(valid=False))
    with pytest.raises(ValueError, match=r"^ds_idx: "):
        ClassificationInterpretation.from_learner(class_learner(), ds_idx=2)
    i = ClassificationInterpretation.from_learner(class_learner(valid=False), ds_idx=0)
    np.testing.assert_array_equal(i.confusion_matrix(), HAND_CM)


def test_bad_learn_and_act_are_errors_naming_them():
    with pytest.raises(TypeError, match=r"^learn: "):
        ClassificationInterpretation.from_learner(nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"^act: "):
        ClassificationInterpretation.from_learner(class_learner(), act="softmax")


# ---------------------------------------------------------------- fastai
def test_fastai_parity_on_the_same_predictions(fastai, capsys):
    """fastai's ClassificationInterpretation, fed our pass's predictions, gives the same results."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastai.data.transforms import CategoryMap
        from fastai.interpret import ClassificationInterpretation as FastaiInterp
    ours = interp()
    # fastai's methods call learn.get_preds(...) -> (preds, targs, decoded) and read dl.vocab
    learn = types.SimpleNamespace(get_preds=lambda **kw: (ours.preds, ours.targs, ours.decoded))
    theirs = FastaiInterp(learn, types.SimpleNamespace(vocab=CategoryMap(VOCAB)), ours.losses)
    np.testing.assert_array_equal(ours.confusion_matrix(), theirs.confusion_matrix())
    for min_val in (1, 2):
        assert ours.most_confused(min_val) == [(a, p, int(n)) for a, p, n in theirs.most_confused(min_val)]
    for largest in (True, False):
        for got, want in zip(ours.top_losses(5, largest), theirs.top_losses(5, largest)):
            assert torch.equal(got, torch.as_tensor(want))
    ours.print_classification_report()
    mine = capsys.readouterr().out
    theirs.print_classification_report()
    assert mine == capsys.readouterr().out

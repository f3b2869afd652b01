"""fastai's scikit-learn / scipy metrics (`minilearn.metrics_sklearn`) and the torch metrics of
`minilearn.metrics`, checked against scikit-learn and scipy computed on all the predictions at once.

Every Learner here validates 45 items in batches of 16 (16 + 16 + 13), so an uneven last batch is
always part of the pass; the reference is the library's function applied once to the model's
outputs on the whole validation set (`model(valid_x)`), prepared as fastai prepares them: the
argmax for class metrics, softmax probabilities (or the positive class's) for the ranking metrics
of single-label tasks, sigmoid (unless `sigmoid=False`) then `>= thresh` for the `...Multi`
metrics, sigmoid probabilities for `RocAucMulti` / `APScoreMulti`, the raw outputs for regression.
No expected number is written down: every one is scikit-learn's or scipy's.
"""

from __future__ import annotations

import copy
import functools
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

skm = pytest.importorskip("sklearn.metrics")
scs = pytest.importorskip("scipy.stats")

import minilearn.metrics_sklearn as ms  # noqa: E402
from minilearn import (  # noqa: E402
    BCELossFlat, BCEWithLogitsLossFlat, CrossEntropyLossFlat, DataLoaders, Learner, MSELossFlat,
)
from minilearn.metrics import (  # noqa: E402
    AccumMetric, accuracy_multi, exp_rmspe, mae, mse, msle, rmse, top_k_accuracy,
)
from synthetic import class_data  # noqa: E402

N_TRAIN, N_VALID, BS = 64, 45, 16  # 45 = 16 + 16 + 13: the last validation batch is short
TOL = 1e-6  # the model's outputs are float32


# ---------------------------------------------------------------- data and learners
def task_data(task: str, n: int = N_TRAIN, n_valid: int = N_VALID, seed: int = 0):
    """Train and valid tensors for a task; noisy enough that a briefly trained model errs."""
    g = torch.Generator().manual_seed(seed + 100)
    if task in ("binary", "multiclass", "topk"):
        n_classes = {"binary": 2, "multiclass": 4, "topk": 6}[task]
        x, y, vx, vy = class_data(n, n_valid, n_features=4, n_classes=n_classes, seed=seed)
        x, vx = x + 2.5 * torch.randn(x.shape, generator=g), vx + 2.5 * torch.randn(vx.shape, generator=g)
        return x, y, vx, vy
    xs = torch.randn(n + n_valid, 4, generator=g)
    if task in ("multilabel", "multilabel_prob"):  # 3 labels, float 0/1 targets
        w = torch.randn(4, 3, generator=g)
        ys = ((xs @ w + 1.0 * torch.randn(n + n_valid, 3, generator=g)) > 0).float()
    elif task == "regression":
        w = torch.randn(4, 1, generator=g)
        ys = xs @ w + 0.5 + 0.7 * torch.randn(n + n_valid, 1, generator=g)
    elif task == "positive":  # positive targets spanning a range, for msle
        w = torch.randn(4, 1, generator=g)
        ys = torch.exp(0.5 * (xs @ w) + 0.3 * torch.randn(n + n_valid, 1, generator=g))
    else:
        raise ValueError(task)
    return xs[:n], ys[:n], xs[n:], ys[n:]


def task_model(task: str) -> tuple[nn.Module, Callable]:
    """A model whose outputs fit the task, and its loss."""
    if task == "binary":
        return nn.Linear(4, 2), CrossEntropyLossFlat()
    if task == "multiclass":
        return nn.Linear(4, 4), CrossEntropyLossFlat()
    if task == "topk":
        return nn.Linear(4, 6), CrossEntropyLossFlat()
    if task == "multilabel":
        return nn.Linear(4, 3), BCEWithLogitsLossFlat()
    if task == "multilabel_prob":  # the model gives probabilities: the metrics take sigmoid=False
        return nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()), BCELossFlat()
    if task == "regression":
        return nn.Linear(4, 1), MSELossFlat()
    if task == "positive":
        return nn.Sequential(nn.Linear(4, 1), nn.Softplus()), MSELossFlat()
    raise ValueError(task)


@functools.lru_cache(maxsize=None)
def trained(task: str) -> nn.Module:
    """The task's model after a short fit (so its predictions are informative, not perfect)."""
    x, y, vx, vy = task_data(task)
    torch.manual_seed(0)
    model, loss = task_model(task)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=BS, seed=0), model, loss, lr=3e-2)
    with learn.no_logging():
        learn.fit(3)
    return learn.model.eval()


def make_learner(task: str, metrics, val_bs: int = BS) -> tuple[Learner, torch.Tensor, torch.Tensor]:
    """A Learner with a copy of the task's trained model, and the model's outputs on the whole
    validation set (one forward pass) with its targets."""
    x, y, vx, vy = task_data(task)
    model = copy.deepcopy(trained(task))
    _, loss = task_model(task)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=BS, val_bs=val_bs, seed=0)
    learn = Learner(dls, model, loss, metrics=metrics)
    with torch.no_grad():
        out = model(vx)
    return learn, out, vy


# ---------------------------------------------------------------- fastai's preparations, on all outputs at once
def argmax(o):
    return o.argmax(-1).numpy()


def softmax(o):
    return torch.softmax(o, -1).numpy()


def pos_prob(o):
    return torch.softmax(o, -1)[:, -1].numpy()


def sig(o):
    return torch.sigmoid(o).numpy()


def sig_ge(o, t=0.5):
    return (torch.sigmoid(o) >= t).numpy()


def raw_ge(o, t=0.5):
    return (o >= t).numpy()


def flat(o):
    return o.flatten().numpy()


@dataclass
class Case:
    ctor: str  # a name in minilearn.metrics_sklearn.__all__ (and fastai.metrics)
    task: str
    ref: Callable  # ref(y: numpy targets, out: the model's outputs, a tensor) -> float
    kwargs: dict = field(default_factory=dict)
    fastai_differs: str | None = None  # why fastai's own metric raises or gives another value here

    @property
    def id(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.ctor}({args})-{self.task}"

    def make(self, module=ms):
        return getattr(module, self.ctor)(**self.kwargs)

    @property
    def param(self):
        return pytest.param(self, id=self.id)


FASTAI_ARGMAXES = "fastai 2.8 argmaxes the probabilities too, and scikit-learn raises 'Expected 2D array'"
FASTAI_MCC_2D = ("fastai keeps the (items, labels) array (flatten=False), which matthews_corrcoef rejects "
                 "('multilabel-indicator is not supported'); ours flattens: every (item, label) pair")
FASTAI_BRIER_2D = ("fastai keeps the (items, labels) array (flatten=False), which brier_score_loss reads as one "
                   "multi-class row per item (squared errors summed over the labels); ours flattens: the mean "
                   "over every (item, label) pair")


AVERAGES = ("macro", "micro", "weighted")
CASES = [
    # ------------------------------------------------ binary: 2 logits, class-index targets
    Case("F1Score", "binary", lambda y, o: skm.f1_score(y, argmax(o))),
    Case("FBeta", "binary", lambda y, o: skm.fbeta_score(y, argmax(o), beta=2), {"beta": 2}),
    Case("Precision", "binary", lambda y, o: skm.precision_score(y, argmax(o))),
    Case("Recall", "binary", lambda y, o: skm.recall_score(y, argmax(o))),
    Case("Recall", "binary", lambda y, o: skm.recall_score(y, argmax(o), pos_label=0), {"pos_label": 0}),
    Case("Jaccard", "binary", lambda y, o: skm.jaccard_score(y, argmax(o))),
    Case("BalancedAccuracy", "binary", lambda y, o: skm.balanced_accuracy_score(y, argmax(o))),
    Case("BrierScore", "binary", lambda y, o: skm.brier_score_loss(y, argmax(o))),
    Case("CohenKappa", "binary", lambda y, o: skm.cohen_kappa_score(y, argmax(o))),
    Case("HammingLoss", "binary", lambda y, o: skm.hamming_loss(y, argmax(o))),
    Case("MatthewsCorrCoef", "binary", lambda y, o: skm.matthews_corrcoef(y, argmax(o))),
    Case("RocAucBinary", "binary", lambda y, o: skm.roc_auc_score(y, pos_prob(o))),
    Case("RocAucBinary", "binary", lambda y, o: skm.roc_auc_score(y, pos_prob(o), max_fpr=0.5), {"max_fpr": 0.5}),
    Case("APScoreBinary", "binary", lambda y, o: skm.average_precision_score(y, pos_prob(o))),
    # ------------------------------------------------ multi-class: 4 classes
    *[Case(ctor, "multiclass", lambda y, o, f=f, a=a: f(y, argmax(o), average=a), {"average": a})
      for ctor, f in [("F1Score", skm.f1_score), ("Precision", skm.precision_score),
                      ("Recall", skm.recall_score), ("Jaccard", skm.jaccard_score)]
      for a in AVERAGES],
    *[Case("FBeta", "multiclass", lambda y, o, a=a: skm.fbeta_score(y, argmax(o), beta=0.5, average=a),
           {"beta": 0.5, "average": a}) for a in AVERAGES],
    Case("BalancedAccuracy", "multiclass", lambda y, o: skm.balanced_accuracy_score(y, argmax(o))),
    Case("BalancedAccuracy", "multiclass", lambda y, o: skm.balanced_accuracy_score(y, argmax(o), adjusted=True),
         {"adjusted": True}),
    Case("CohenKappa", "multiclass", lambda y, o: skm.cohen_kappa_score(y, argmax(o))),
    Case("CohenKappa", "multiclass", lambda y, o: skm.cohen_kappa_score(y, argmax(o), weights="quadratic"),
         {"weights": "quadratic"}),
    Case("CohenKappa", "multiclass", lambda y, o: skm.cohen_kappa_score(y, argmax(o), weights="linear"),
         {"weights": "linear"}),
    Case("HammingLoss", "multiclass", lambda y, o: skm.hamming_loss(y, argmax(o))),
    Case("MatthewsCorrCoef", "multiclass", lambda y, o: skm.matthews_corrcoef(y, argmax(o))),
    Case("RocAuc", "multiclass", lambda y, o: skm.roc_auc_score(y, softmax(o), multi_class="ovr")),
    Case("RocAuc", "multiclass", lambda y, o: skm.roc_auc_score(y, softmax(o), multi_class="ovr", average="weighted"),
         {"average": "weighted"}),
    Case("RocAuc", "multiclass", lambda y, o: skm.roc_auc_score(y, softmax(o), multi_class="ovo"),
         {"multi_class": "ovo"}),
    # ------------------------------------------------ multi-label: 3 logits, float 0/1 targets
    *[Case(ctor, "multilabel", lambda y, o, f=f, a=a: f(y, sig_ge(o), average=a), {"average": a})
      for ctor, f in [("F1ScoreMulti", skm.f1_score), ("PrecisionMulti", skm.precision_score),
                      ("RecallMulti", skm.recall_score), ("JaccardMulti", skm.jaccard_score)]
      for a in ("macro", "micro", "samples")],
    Case("F1ScoreMulti", "multilabel", lambda y, o: skm.f1_score(y, sig_ge(o, 0.3), average="macro"),
         {"thresh": 0.3}),
    Case("PrecisionMulti", "multilabel", lambda y, o: skm.precision_score(y, sig_ge(o, 0.7), average="macro"),
         {"thresh": 0.7}),
    Case("RecallMulti", "multilabel", lambda y, o: skm.recall_score(y, sig_ge(o, 0.35), average="weighted"),
         {"thresh": 0.35, "average": "weighted"}),
    Case("FBetaMulti", "multilabel", lambda y, o: skm.fbeta_score(y, sig_ge(o), beta=2, average="macro"),
         {"beta": 2}),
    Case("FBetaMulti", "multilabel", lambda y, o: skm.fbeta_score(y, sig_ge(o, 0.4), beta=0.5, average="micro"),
         {"beta": 0.5, "thresh": 0.4, "average": "micro"}),
    Case("HammingLossMulti", "multilabel", lambda y, o: skm.hamming_loss(y, sig_ge(o))),
    Case("HammingLossMulti", "multilabel", lambda y, o: skm.hamming_loss(y, sig_ge(o, 0.6)), {"thresh": 0.6}),
    Case("MatthewsCorrCoefMulti", "multilabel", lambda y, o: skm.matthews_corrcoef(y.ravel(), sig_ge(o).ravel()),
         fastai_differs=FASTAI_MCC_2D),
    Case("MatthewsCorrCoefMulti", "multilabel",
         lambda y, o: skm.matthews_corrcoef(y.ravel(), sig_ge(o, 0.3).ravel()), {"thresh": 0.3},
         fastai_differs=FASTAI_MCC_2D),
    Case("BrierScoreMulti", "multilabel", lambda y, o: skm.brier_score_loss(y.ravel(), sig_ge(o).ravel()),
         fastai_differs=FASTAI_BRIER_2D),
    Case("BrierScoreMulti", "multilabel", lambda y, o: skm.brier_score_loss(y.ravel(), sig_ge(o, 0.7).ravel()),
         {"thresh": 0.7}, fastai_differs=FASTAI_BRIER_2D),
    Case("RocAucMulti", "multilabel", lambda y, o: skm.roc_auc_score(y, sig(o))),
    Case("RocAucMulti", "multilabel", lambda y, o: skm.roc_auc_score(y, sig(o), average="micro"),
         {"average": "micro"}),
    Case("APScoreMulti", "multilabel", lambda y, o: skm.average_precision_score(y, sig(o))),
    Case("APScoreMulti", "multilabel", lambda y, o: skm.average_precision_score(y, sig(o), average="weighted"),
         {"average": "weighted"}),
    # ------------------------------------------------ multi-label, the model giving probabilities: sigmoid=False
    Case("F1ScoreMulti", "multilabel_prob", lambda y, o: skm.f1_score(y, raw_ge(o, 0.4), average="macro"),
         {"sigmoid": False, "thresh": 0.4}),
    Case("PrecisionMulti", "multilabel_prob", lambda y, o: skm.precision_score(y, raw_ge(o), average="macro"),
         {"sigmoid": False}),
    Case("RecallMulti", "multilabel_prob", lambda y, o: skm.recall_score(y, raw_ge(o), average="macro"),
         {"sigmoid": False}),
    Case("JaccardMulti", "multilabel_prob", lambda y, o: skm.jaccard_score(y, raw_ge(o), average="macro"),
         {"sigmoid": False}),
    Case("FBetaMulti", "multilabel_prob", lambda y, o: skm.fbeta_score(y, raw_ge(o), beta=2, average="macro"),
         {"beta": 2, "sigmoid": False}),
    Case("HammingLossMulti", "multilabel_prob", lambda y, o: skm.hamming_loss(y, raw_ge(o, 0.6)),
         {"sigmoid": False, "thresh": 0.6}),
    Case("MatthewsCorrCoefMulti", "multilabel_prob",
         lambda y, o: skm.matthews_corrcoef(y.ravel(), raw_ge(o).ravel()), {"sigmoid": False},
         fastai_differs=FASTAI_MCC_2D),
    Case("BrierScoreMulti", "multilabel_prob", lambda y, o: skm.brier_score_loss(y.ravel(), raw_ge(o).ravel()),
         {"sigmoid": False}, fastai_differs=FASTAI_BRIER_2D),
    Case("RocAucMulti", "multilabel_prob", lambda y, o: skm.roc_auc_score(y, o.numpy()), {"sigmoid": False}, fastai_differs=FASTAI_ARGMAXES),
    Case("APScoreMulti", "multilabel_prob", lambda y, o: skm.average_precision_score(y, o.numpy()),
         {"sigmoid": False}, fastai_differs=FASTAI_ARGMAXES),
    # ------------------------------------------------ regression: 1 output, float targets
    Case("R2Score", "regression", lambda y, o: skm.r2_score(y.ravel(), flat(o))),
    Case("ExplainedVariance", "regression", lambda y, o: skm.explained_variance_score(y.ravel(), flat(o))),
    Case("PearsonCorrCoef", "regression", lambda y, o: scs.pearsonr(flat(o), y.ravel())[0]),
    Case("SpearmanCorrCoef", "regression", lambda y, o: scs.spearmanr(flat(o), y.ravel())[0]),
]


def test_cases_cover_every_metric():
    assert {c.ctor for c in CASES} == set(ms.__all__)
    assert len({c.id for c in CASES}) == len(CASES)


def _check_informative(task: str, out: torch.Tensor, y: torch.Tensor) -> None:
    """The predictions are neither constant nor perfect, so a wrong metric would show."""
    if task in ("binary", "multiclass"):
        pred = out.argmax(-1)
        assert len(pred.unique()) == out.shape[1] and 0.3 < (pred == y).float().mean() < 0.97
    elif task in ("multilabel", "multilabel_prob"):
        p = out if task == "multilabel_prob" else out.sigmoid()
        dec = p >= 0.5
        assert dec.any(0).all() and (~dec).any(0).all() and 0.3 < (dec == y.bool()).float().mean() < 0.97


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")  # average='samples'
@pytest.mark.parametrize("case", [c.param for c in CASES])
def test_metric_in_learner_is_sklearns_on_the_whole_validation_set(case):
    metric = case.make()
    learn, out, y = make_learner(case.task, [metric])
    _check_informative(case.task, out, y)
    loss, value = learn.validate()
    expected = float(case.ref(y.numpy(), out))
    assert np.isfinite(expected)
    assert value == pytest.approx(expected, abs=TOL)
    with learn.no_logging():  # the same in the table of a fit (validate has metrics of its own)
        learn.fit(1, lr=0.0)
    assert learn.recorder.values[-1][2] == pytest.approx(expected, abs=TOL)
    assert isinstance(metric, AccumMetric) and len(metric.preds) == 3  # three batches (16, 16, 13) kept
    assert sum(t.numel() for t in metric.targs) == y.numel()  # every target kept once


# ---------------------------------------------------------------- exact whatever the batch size
def _chunks(n: int, bs: int):
    return [slice(i, min(i + bs, n)) for i in range(0, n, bs)]


BS_CASES = {  # name: (task, constructor, reference on the whole set)
    "f1_macro": ("multiclass", lambda: ms.F1Score(average="macro"),
                 lambda y, o: skm.f1_score(y, argmax(o), average="macro")),
    "roc_auc_ovr": ("multiclass", lambda: ms.RocAuc(), lambda y, o: skm.roc_auc_score(y, softmax(o), multi_class="ovr")),
    "mcc": ("multiclass", lambda: ms.MatthewsCorrCoef(), lambda y, o: skm.matthews_corrcoef(y, argmax(o))),
    "kappa_quadratic": ("multiclass", lambda: ms.CohenKappa(weights="quadratic"),
                        lambda y, o: skm.cohen_kappa_score(y, argmax(o), weights="quadratic")),
    "r2": ("regression", lambda: ms.R2Score(), lambda y, o: skm.r2_score(y.ravel(), flat(o))),
    "pearson": ("regression", lambda: ms.PearsonCorrCoef(), lambda y, o: scs.pearsonr(flat(o), y.ravel())[0]),
    "roc_auc_multi": ("multilabel", lambda: ms.RocAucMulti(), lambda y, o: skm.roc_auc_score(y, sig(o))),
}


def test_value_does_not_depend_on_the_batch_size_and_is_no_mean_of_batches():
    batch_means_differ = []
    for name, (task, make, ref) in BS_CASES.items():
        values = {}
        for val_bs in (1, BS, N_VALID):  # one item a batch, 16 + 16 + 13, the whole set in one batch
            learn, out, y = make_learner(task, [make()], val_bs=val_bs)
            values[val_bs] = learn.validate()[1]
        whole = float(ref(y.numpy(), out))
        for val_bs, v in values.items():
            assert v == pytest.approx(whole, abs=TOL), f"{name}, val_bs={val_bs}"
        # what a mean of the batch values (weighted by batch size) would have given, with bs=16
        parts = _chunks(N_VALID, BS)
        mean = sum(float(ref(y[s].numpy(), out[s])) * (s.stop - s.start) for s in parts) / N_VALID
        if abs(mean - whole) > 1e-3:
            batch_means_differ.append(name)
    # the test means something: for these metrics a per-batch mean is not the value
    assert {"f1_macro", "roc_auc_ovr", "mcc", "r2"} <= set(batch_means_differ), batch_means_differ


# ---------------------------------------------------------------- names, and fastai's own metrics
SKLEARN_NAMES = {  # fastai's column names: scikit-learn's (or scipy's) function names
    "APScoreBinary": "average_precision_score", "APScoreMulti": "average_precision_score",
    "BalancedAccuracy": "balanced_accuracy_score", "BrierScore": "brier_score_loss",
    "BrierScoreMulti": "brier_score_loss", "CohenKappa": "cohen_kappa_score",
    "ExplainedVariance": "explained_variance_score", "F1Score": "f1_score", "F1ScoreMulti": "f1_score",
    "FBeta": "fbeta_score", "FBetaMulti": "fbeta_score", "HammingLoss": "hamming_loss",
    "HammingLossMulti": "hamming_loss", "Jaccard": "jaccard_score", "JaccardMulti": "jaccard_score",
    "MatthewsCorrCoef": "matthews_corrcoef", "MatthewsCorrCoefMulti": "matthews_corrcoef",
    "PearsonCorrCoef": "pearsonr", "Precision": "precision_score", "PrecisionMulti": "precision_score",
    "R2Score": "r2_score", "Recall": "recall_score", "RecallMulti": "recall_score", "RocAuc": "roc_auc_score",
    "RocAucBinary": "roc_auc_score", "RocAucMulti": "roc_auc_score", "SpearmanCorrCoef": "spearmanr",
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_name_is_sklearns_function_name(case):
    metric = case.make()
    assert set(SKLEARN_NAMES) == set(ms.__all__)
    assert metric.name == SKLEARN_NAMES[case.ctor]
    if case.ctor not in ("PearsonCorrCoef", "SpearmanCorrCoef"):
        assert metric.func is getattr(skm, metric.name)  # the very function, called once on everything
    learn, _, _ = make_learner(case.task, [metric])
    assert [m.name for m in learn.metrics] == [SKLEARN_NAMES[case.ctor]]


@pytest.fixture(scope="module")
def fastai_metrics(fastai):  # `fastai`: conftest's fixture, skipping (failing under CI) without fastai
    return pytest.importorskip("fastai.metrics")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")  # fastai's 2-D BrierScoreMulti
@pytest.mark.parametrize("case", [c.param for c in CASES])
def test_same_name_and_value_as_fastais_metric(case, fastai_metrics):
    """Ours against fastai's same-named constructor, with the same arguments.

    Both metric objects are fed the same raw model outputs in the same uneven batches (16, 16, 13)
    through their own `accumulate(learn)` (a stand-in `learn` holding `pred`, `y`/`yb` and fastai's
    `to_detach`), then read through `.value`. This is fairer than `metric(preds, targs)`: both
    frameworks' `__call__` take predictions already prepared and so would skip the part that
    differs between metrics (activation, argmax, threshold), leaving only scikit-learn's function
    to compare. Here each side prepares the outputs itself, keeps every batch and computes once.
    """
    from fastai.torch_core import to_detach

    ours, theirs = case.make(), case.make(fastai_metrics)
    assert ours.name == theirs.name
    _, out, y = make_learner(case.task, [])
    ours.reset(), theirs.reset()
    for s in _chunks(N_VALID, BS):
        stand_in = SimpleNamespace(pred=out[s], y=y[s], yb=(y[s],), to_detach=to_detach)
        ours.accumulate(stand_in)
        theirs.accumulate(stand_in)
    assert len(ours.preds) == len(theirs.preds) == 3
    expected = float(case.ref(y.numpy(), out))
    if case.fastai_differs is None:
        for a, b in zip(ours.preds, theirs.preds):  # the same prepared predictions, batch by batch
            assert torch.equal(a, b)
        assert float(ours.value) == pytest.approx(float(theirs.value), abs=TOL)
    else:  # a documented difference (FASTAI_*): fastai's metric raises or computes something else
        try:
            theirs_value = float(theirs.value)
        except ValueError:
            theirs_value = None
        assert theirs_value is None or theirs_value != pytest.approx(expected, abs=1e-3), case.fastai_differs
    assert float(ours.value) == pytest.approx(expected, abs=TOL)


def test_fastai_names_for_every_metric(fastai_metrics):
    for ctor in ms.__all__:
        kwargs = {"beta": 2} if ctor.startswith("FBeta") else {}
        assert getattr(ms, ctor)(**kwargs).name == getattr(fastai_metrics, ctor)(**kwargs).name, ctor


# ---------------------------------------------------------------- errors
def test_roc_auc_multi_class_raise_is_a_value_error():
    with pytest.raises(ValueError, match="multi_class"):
        ms.RocAuc(multi_class="raise")
    assert ms.RocAuc(multi_class="ovo").kwargs["multi_class"] == "ovo"


@pytest.mark.parametrize("ctor", ms.__all__)
def test_missing_sklearn_or_scipy_is_an_import_error_naming_the_metric(ctor, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)  # import sklearn.metrics: ImportError
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    package = "scipy" if ctor in ("PearsonCorrCoef", "SpearmanCorrCoef") else "scikit-learn"
    kwargs = {"beta": 2} if ctor.startswith("FBeta") else {}
    with pytest.raises(ImportError, match=rf"^{ctor}: needs {package} ") as err:
        getattr(ms, ctor)(**kwargs)
    assert "pip install" in str(err.value)
    assert isinstance(err.value.__cause__, ImportError)


def test_metrics_work_again_once_sklearn_is_back(monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "sklearn.metrics", None)
        with pytest.raises(ImportError):
            ms.F1Score()
    assert ms.F1Score().func is skm.f1_score  # imported when made, not once at import time


# ---------------------------------------------------------------- the torch metrics of minilearn.metrics
def top_2_accuracy(pred, targ):
    return top_k_accuracy(pred, targ, k=2)


def accuracy_multi_03(pred, targ):
    return accuracy_multi(pred, targ, thresh=0.3)


def accuracy_multi_probs(pred, targ):
    return accuracy_multi(pred, targ, thresh=0.6, sigmoid=False)


TORCH_CASES = {  # task: [(metric, reference on all outputs at once)]
    "regression": [
        (rmse, lambda y, o: np.sqrt(skm.mean_squared_error(y.ravel(), flat(o)))),
        (mse, lambda y, o: skm.mean_squared_error(y.ravel(), flat(o))),
        (mae, lambda y, o: skm.mean_absolute_error(y.ravel(), flat(o))),
        (exp_rmspe, lambda y, o: np.sqrt(np.mean(((np.exp(y.ravel().astype(np.float64))
                                                   - np.exp(flat(o).astype(np.float64)))
                                                  / np.exp(y.ravel().astype(np.float64))) ** 2))),
    ],
    "positive": [
        (msle, lambda y, o: skm.mean_squared_log_error(y.ravel(), flat(o))),
        (rmse, lambda y, o: skm.root_mean_squared_error(y.ravel(), flat(o))),
    ],
    "topk": [
        (top_k_accuracy, lambda y, o: skm.top_k_accuracy_score(y, o.numpy(), k=5, labels=range(6))),
        (top_2_accuracy, lambda y, o: skm.top_k_accuracy_score(y, o.numpy(), k=2, labels=range(6))),
    ],
    "multilabel": [
        (accuracy_multi, lambda y, o: skm.accuracy_score(y.ravel(), (torch.sigmoid(o) > 0.5).numpy().ravel())),
        (accuracy_multi_03, lambda y, o: 1 - skm.hamming_loss(y, (torch.sigmoid(o) > 0.3).numpy())),
    ],
    "multilabel_prob": [
        (accuracy_multi_probs, lambda y, o: skm.accuracy_score(y.ravel(), (o > 0.6).numpy().ravel())),
    ],
}


@pytest.mark.parametrize("task", list(TORCH_CASES))
def test_torch_metrics_against_sklearn_with_an_uneven_last_batch(task):
    metrics, refs = zip(*TORCH_CASES[task])
    learn, out, y = make_learner(task, list(metrics))
    assert len(learn.dls.valid) == 3  # 16 + 16 + 13
    loss, *values = learn.validate()
    if task in ("regression", "positive"):  # the loss is MSE too: a check of the reference itself
        assert loss == pytest.approx(skm.mean_squared_error(y.numpy().ravel(), flat(out)), abs=TOL)
    for m, ref, v in zip(learn.metrics, refs, values):
        expected = float(ref(y.numpy(), out))
        assert np.isfinite(expected) and 0 < expected
        assert v == pytest.approx(expected, rel=TOL, abs=TOL), m.name
    if task == "topk":  # top-2 and top-5 differ, and neither is trivially 1
        assert values[1] < values[0] < 1


def test_rmse_is_no_mean_of_batch_rmses():
    learn, out, y = make_learner("regression", [rmse])
    value = learn.validate()[1]
    batch = [np.sqrt(skm.mean_squared_error(y[s].numpy().ravel(), flat(out[s]))) * (s.stop - s.start)
             for s in _chunks(N_VALID, BS)]
    assert abs(sum(batch) / N_VALID - value) > 1e-4
    assert value == pytest.approx(np.sqrt(skm.mean_squared_error(y.numpy().ravel(), flat(out))), abs=TOL)


# ---------------------------------------------------------------- under torch.distributed: 2 CPU processes
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available")
def test_two_processes_report_sklearns_value_over_the_whole_validation_set(tmp_path):
    from test_distributed_trainer import ROOT, torchrun  # the repo's launcher for 2-process CPU runs

    import metrics_ddp_worker as worker

    proc, _ = torchrun(ROOT / "tests" / "metrics_ddp_worker.py", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    for key, (task, n_valid, bs) in worker.CONFIGS.items():
        r0, r1 = ranks[0][key], ranks[1][key]
        # each rank saw only part of the validation set, unevenly in the last batch
        assert r0["seen"] + r1["seen"] == n_valid and r0["seen"] != r1["seen"], (key, r0["seen"], r1["seen"])
        for k in r0["weights"]:
            assert torch.equal(r0["weights"][k], r1["weights"][k])
        assert r0["validate"] == r1["validate"]  # every rank: the same numbers
        # the reference: the trained weights in one process, scikit-learn on all outputs at once
        learn, vx, vy = worker.make_learner(task, n_valid, bs)
        learn.model.load_state_dict(r0["weights"])
        with torch.no_grad():
            out = learn.model(vx)
        y = vy.numpy()
        refs = worker.references(task, y, out)
        assert [m.name for m in learn.metrics] == list(refs) == r0["names"]
        for r in (r0, r1):
            loss, *values = r["validate"]
            assert values == pytest.approx(list(refs.values()), abs=TOL), key
            assert r["fit_metrics"] == pytest.approx(list(refs.values()), abs=TOL), key  # the fit's own pass

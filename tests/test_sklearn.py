"""NeuralNetClassifier: scikit-learn's estimator checks, iris, cross-validation, pipelines, parameters."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")  # the optional extra; the dev extra installs it, so CI runs these

import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from minilearn import scratch
from minilearn.sklearn import NeuralNetClassifier


# Every check passes with the defaults too (55 checks, about 25 s); 10 epochs keep each check well
# under a second, and still pass check_classifiers_train's accuracy bar.
@parametrize_with_checks([NeuralNetClassifier(max_epochs=10)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris_split():
    x, y = load_iris(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=42)


def test_iris_tutorial_network_reaches_90_percent(iris_split):
    x_train, x_test, y_train, y_test = iris_split
    clf = NeuralNetClassifier(hidden_sizes=(10, 5), activations=("relu", "relu"), random_state=0).fit(x_train, y_train)
    assert [type(m).__name__ for m in clf.model_] == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Softmax"]
    assert [m.out_features for m in clf.model_ if isinstance(m, scratch.Linear)] == [10, 5, 3]
    assert clf.score(x_test, y_test) >= 0.9
    proba = clf.predict_proba(x_test)
    assert proba.shape == (38, 3) and np.allclose(proba.sum(1), 1)
    assert clf.n_iter_ == 100 and len(clf.loss_curve_) == 100 and clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_cross_val_score_and_pipeline(iris_split):
    x, y = load_iris(return_X_y=True)
    scores = cross_val_score(NeuralNetClassifier(max_epochs=30, random_state=0), x, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    x_train, x_test, y_train, y_test = iris_split
    pipe = make_pipeline(StandardScaler(), NeuralNetClassifier(max_epochs=30, random_state=0)).fit(x_train, y_train)
    assert pipe.score(x_test, y_test) >= 0.9


def test_params_round_trip_and_are_stored_unchanged():
    leaky = scratch.LeakyReLU(0.2)
    clf = NeuralNetClassifier(hidden_sizes=[8], activations=(leaky,), lr=0.05, optimizer="sgd", random_state=3)
    assert clf.get_params()["hidden_sizes"] == [8] and clf.get_params()["activations"][0] is leaky
    clf.set_params(max_epochs=5, batch_size=4)
    assert (clf.max_epochs, clf.batch_size) == (5, 4)
    assert clone(clf).get_params()["lr"] == 0.05
    x, y = load_iris(return_X_y=True)
    clf.fit(x, y)
    assert clf.activations[0] is leaky and clf.model_[1] is not leaky and clf.model_[1].a == 0.2


def test_random_state_decides_and_torch_global_rng_is_untouched():
    x, y = load_iris(return_X_y=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = NeuralNetClassifier(max_epochs=3, random_state=7).fit(x, y).predict_proba(x)
    assert torch.equal(torch.get_rng_state(), before)
    b = NeuralNetClassifier(max_epochs=3, random_state=7).fit(x, y).predict_proba(x)
    c = NeuralNetClassifier(max_epochs=3, random_state=8).fit(x, y).predict_proba(x)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("params, match", [
    ({"hidden_sizes": (10, 0)}, "hidden_sizes"),
    ({"hidden_sizes": "10"}, "hidden_sizes"),
    ({"activations": ("relu",)}, "activations: expected one activation, or one per hidden layer"),
    ({"activations": "swish"}, "activations: expected names"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"lr": -1}, "lr"),
    ({"optimizer": "adamw"}, "optimizer"),
    ({"verbose": "yes"}, "verbose"),
])
def test_bad_params_fail_at_fit_naming_the_parameter(params, match):
    clf = NeuralNetClassifier(**params)  # sklearn's rule: __init__ stores, fit checks
    x, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=match):
        clf.fit(x, y)
    assert not hasattr(clf, "model_")


def test_labels_of_any_kind_and_one_class_is_an_error():
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = NeuralNetClassifier(max_epochs=20, random_state=0).fit(x, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert set(clf.predict(x)) <= set(clf.classes_)
    with pytest.raises(ValueError, match="y: expected at least 2 classes, got 1 class"):
        NeuralNetClassifier().fit(x[:10], names[:10])


def test_every_zoo_activation_builds_and_trains():
    x, y = load_iris(return_X_y=True)
    for act in ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "binary_step", scratch.LinearActivation(0.5)):
        clf = NeuralNetClassifier(hidden_sizes=(6,), activations=act, max_epochs=2, random_state=0).fit(x, y)
        assert clf.predict(x).shape == (150,)


def test_verbose_prints_the_learners_table(capsys):
    x, y = load_iris(return_X_y=True)
    NeuralNetClassifier(max_epochs=2, verbose=True, random_state=0).fit(x, y)
    out = capsys.readouterr().out
    assert "epoch     train_loss" in out and len([ln for ln in out.splitlines() if ln[:1].isdigit()]) == 2
    NeuralNetClassifier(max_epochs=2, random_state=0).fit(x, y)
    assert capsys.readouterr().out == ""

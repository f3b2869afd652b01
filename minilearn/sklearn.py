"""A scikit-learn classifier over minilearn: a small MLP built from the scratch layer kit, trained by a Learner.

    from minilearn.sklearn import NeuralNetClassifier
    clf = NeuralNetClassifier(hidden_sizes=(10, 5), activations="relu", random_state=0).fit(X_train, y_train)
    clf.score(X_test, y_test); cross_val_score(clf, X, y); make_pipeline(StandardScaler(), clf)

scikit-learn is an optional extra (`pip install minilearn[sklearn]`): it is imported by this
module only, so `import minilearn` never needs it.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from minilearn import scratch
from minilearn.checks import check_int, check_number
from minilearn.data import DataLoaders
from minilearn.learner import Learner
from minilearn.optim import SGD, Adam, RMSProp

__all__ = ["NeuralNetClassifier", "ACTIVATIONS", "OPTIMIZERS"]

# The activation zoo by name; any scratch layer instance is accepted too (LeakyReLU(0.2, 1.0), ...).
ACTIVATIONS: dict[str, Callable[[], scratch.Layer]] = {
    "identity": scratch.Identity,
    "sigmoid": scratch.Sigmoid,
    "tanh": scratch.Tanh,
    "relu": scratch.ReLU,
    "leaky_relu": scratch.LeakyReLU,
    "binary_step": scratch.BinaryStep,
}

OPTIMIZERS: dict[str, Callable] = {"adam": Adam, "sgd": SGD, "rmsprop": RMSProp}


class NeuralNetClassifier(ClassifierMixin, BaseEstimator):
    """A multi-layer perceptron classifier with scikit-learn's interface, trained by minilearn's Learner.

    The network is `Linear -> activation` for each of `hidden_sizes`, then `Linear -> Softmax`
    over the classes, built from `minilearn.scratch` (hand-written backward, checked against
    autograd) and trained on categorical cross-entropy by a `Learner` with `ScratchBackward`.
    With the defaults, on iris: `NeuralNetClassifier()` is the tutorials' 4-10-5-3 ReLU, ReLU,
    softmax network.

    Parameters (stored unchanged, checked by `fit`, as scikit-learn requires):
    - `hidden_sizes`: widths of the hidden layers, a tuple of ints >= 1 (`()`: softmax regression).
    - `activations`: one activation for every hidden layer, or a tuple with one per hidden layer;
      each a name in `ACTIVATIONS` ('relu', 'leaky_relu', 'tanh', 'sigmoid', 'identity',
      'binary_step') or a scratch layer instance such as `scratch.LeakyReLU(0.2)` (copied at fit).
    - `max_epochs`: epochs of training (the Learner's `fit(max_epochs)`); `n_iter_` after fit.
    - `lr`: the learning rate. `batch_size`: mini-batch size (capped at the number of samples).
    - `optimizer`: 'adam' (minilearn's Adam, fastai's defaults), 'sgd', 'rmsprop', or any
      `opt_func(params, lr=...)` a Learner accepts.
    - `random_state`: None, an int or a `np.random.RandomState`; it seeds the initial weights and
      the shuffling. Training never reads or advances torch's global random number generator.
    - `verbose`: print the Learner's table (one row per epoch) while fitting.

    Fitted attributes: `classes_`, `n_features_in_` (and `feature_names_in_` for DataFrames),
    `model_` (the trained `scratch.Sequential`, in eval mode), `n_iter_`, `loss_curve_` (the
    smoothed training loss at the end of each epoch).

    It computes in float64, scikit-learn's precision (the data sets it meets are small): in
    float32, a row's probabilities could change in the 7th digit with the other rows of the
    batch, as matrix products take different paths for different batch sizes.

    scikit-learn compatibility: `sklearn.utils.estimator_checks.check_estimator` (scikit-learn
    1.9) passes with no expected failure, with the defaults and with `max_epochs=10` (as
    tests/test_sklearn.py runs it): 54 of its 55 checks run and pass; the 55th,
    `check_array_api_input`, is skipped by scikit-learn unless `SCIPY_ARRAY_API=1` is set
    before SciPy is imported, and with it set it passes too.
    """

    def __init__(self, hidden_sizes: tuple[int, ...] = (10, 5), activations: str | tuple = "relu",
                 max_epochs: int = 100, lr: float = 0.01, batch_size: int = 16, optimizer: str | Callable = "adam",
                 random_state=None, verbose: bool = False):
        self.hidden_sizes = hidden_sizes
        self.activations = activations
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn API
    def fit(self, X, y) -> "NeuralNetClassifier":
        """Train a new network on `X` (n_samples, n_features) and class labels `y`; returns self."""
        sizes, acts, opt_func = self._checked_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y: expected at least 2 classes, got 1 class ({self.classes_[0]!r}); "
                             "a classifier has nothing to learn from one")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

        # fork_rng: the initial weights come from `seed`, and torch's global generator is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._network(X.shape[1], sizes, acts, len(self.classes_)).double()
        x_t = torch.tensor(X, dtype=torch.float64)
        y_t = torch.tensor(y_idx, dtype=torch.long)
        dls = DataLoaders.from_tensors(x_t, y_t, bs=min(self.batch_size, len(X)), seed=seed)
        learn = Learner(dls, model, scratch.CrossEntropy(), opt_func=opt_func, lr=float(self.lr),
                        cbs=scratch.ScratchBackward())
        if self.verbose:
            with learn.no_bar():
                learn.fit(self.max_epochs)
        else:
            with learn.no_logging():
                learn.fit(self.max_epochs)
        model.eval()
        self.model_ = model
        self.n_iter_ = self.max_epochs
        self.loss_curve_ = learn.recorder.column("train_loss")
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of `classes_`."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with torch.no_grad():
            return self.model_(torch.tensor(X, dtype=torch.float64)).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample, as a label from `classes_`."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before `classes_` is read
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ helpers
    def _checked_params(self) -> tuple[list[int], list, Callable]:
        """The parameters, checked with errors that name them, before any work is done."""
        sizes = self.hidden_sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not all(
                isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in sizes):
            raise ValueError(f"hidden_sizes: expected a tuple of ints >= 1, got {sizes!r}")
        sizes = [int(n) for n in sizes]
        acts = self.activations
        acts = [acts] * len(sizes) if isinstance(acts, str) or isinstance(acts, scratch.Layer) else acts
        if not isinstance(acts, Sequence) or len(acts) != len(sizes):
            raise ValueError(f"activations: expected one activation, or one per hidden layer ({len(sizes)}), "
                             f"got {self.activations!r}")
        for a in acts:
            if not (isinstance(a, scratch.Layer) or a in ACTIVATIONS):
                raise ValueError(f"activations: expected names from {sorted(ACTIVATIONS)} or scratch layers, got {a!r}")
        check_int("max_epochs", self.max_epochs, low=1)  # a wrong type is a ValueError too, as scikit-learn wants
        check_int("batch_size", self.batch_size, low=1)
        check_number("lr", self.lr, low=0, low_open=True)
        if callable(self.optimizer):
            opt_func = self.optimizer
        elif self.optimizer in OPTIMIZERS:
            opt_func = OPTIMIZERS[self.optimizer]
        else:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or an opt_func, got {self.optimizer!r}")
        if not isinstance(self.verbose, (bool, np.bool_)):
            raise ValueError(f"verbose: expected True or False, got {self.verbose!r}")
        check_random_state(self.random_state)  # raises naming what it got
        return sizes, acts, opt_func

    @staticmethod
    def _network(n_in: int, sizes: list[int], acts: list, n_classes: int) -> scratch.Sequential:
        """Linear -> activation per hidden layer, then Linear -> Softmax."""
        layers: list[scratch.Layer] = []
        for n_out, act in zip(sizes, acts):
            layers += [scratch.Linear(n_in, n_out), copy.deepcopy(act) if isinstance(act, scratch.Layer)
                       else ACTIVATIONS[act]()]
            n_in = n_out
        return scratch.Sequential(*layers, scratch.Linear(n_in, n_classes), scratch.Softmax())

"""Tutorial e: iris with the activation-zoo network 4-10-5-3 (ReLU, ReLU, softmax) as a scikit-learn estimator.

    python examples/tutorial_e_iris_sklearn.py                   # 100 epochs, then 5-fold cross-validation
    python examples/tutorial_e_iris_sklearn.py --epochs 30 --cv 0  # shorter, no cross-validation
    python examples/tutorial_e_iris_sklearn.py --scale           # StandardScaler first, in a Pipeline

`minilearn.sklearn.NeuralNetClassifier` builds the network from the scratch layer kit (every
backward written by hand) and trains it on categorical cross-entropy with a Learner and Adam;
it is a scikit-learn classifier, so `score`, `cross_val_score` and `Pipeline` take it as it
is. The split is the tutorial's: `train_test_split(test_size=0.25, random_state=42)`, 112
flowers to train on and 38 to test. Needs scikit-learn (`pip install minilearn[sklearn]`).
"""

from __future__ import annotations

import argparse
import sys

from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from minilearn.sklearn import NeuralNetClassifier


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, test and cross-validate; return accuracy (test split) and cv_accuracy (mean over folds, or None)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (100)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (0.01)")
    parser.add_argument("--bs", type=int, default=16, help="batch size (16)")
    parser.add_argument("--seed", type=int, default=0, help="random_state: initial weights and shuffling (0)")
    parser.add_argument("--cv", type=int, default=5, help="folds of cross-validation on all 150 flowers (5; 0: none)")
    parser.add_argument("--scale", action="store_true", help="standardise the features first, in a Pipeline")
    parser.add_argument("--quiet", action="store_true", help="no table while training")
    args = parser.parse_args(argv)
    if args.cv == 1 or args.cv < 0:
        parser.error(f"--cv: expected 0 (none) or at least 2 folds, got {args.cv}")

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=42)
    print(f"iris: {len(x_train)} training and {len(x_test)} test flowers, 4 features, 3 species", flush=True)

    net = NeuralNetClassifier(hidden_sizes=(10, 5), activations=("relu", "relu"), max_epochs=args.epochs,
                              lr=args.lr, batch_size=args.bs, optimizer="adam", random_state=args.seed,
                              verbose=not args.quiet)
    clf = make_pipeline(StandardScaler(), net) if args.scale else net
    print(f"\n{clf}", flush=True)
    clf.fit(x_train, y_train)
    acc = clf.score(x_test, y_test)

    cv_acc = None
    if args.cv:
        quiet = clone(clf).set_params(**{("neuralnetclassifier__" if args.scale else "") + "verbose": False})
        scores = cross_val_score(quiet, x, y, cv=args.cv)
        cv_acc = float(scores.mean())
        print(f"\n{args.cv}-fold cross-validation accuracy: {cv_acc:.4f} (folds: {', '.join(f'{s:.4f}' for s in scores)})")
    print(f"\ntest accuracy {acc:.6f} ({round(acc * len(x_test))} of {len(x_test)} flowers)")
    return {"accuracy": float(acc), "cv_accuracy": cv_acc}


if __name__ == "__main__":
    main(sys.argv[1:])

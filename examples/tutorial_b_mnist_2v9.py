"""Tutorial b: MNIST 2s vs 9s by the seven steps: a linear model, then a two-layer ReLU net, mini-batch SGD.

    python examples/tutorial_b_mnist_2v9.py                                  # 10 + 40 epochs
    python examples/tutorial_b_mnist_2v9.py --linear-epochs 2 --net-epochs 3  # shorter

fastbook chapter 4's recipe on another pair of digits: this is `mnist_basics.py --digits 2 9`
(init, predict, loss `mnist_loss`, gradient, step with SGD at bs 256, repeat, stop; the linear
model at lr 1.0, the 784-30-1 ReLU net at lr 0.1). 2 is label 1, 9 is label 0. Every option of
mnist_basics.py applies.
"""

from __future__ import annotations

import sys

import mnist_basics  # examples/ is on the path when a script in it runs


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train both models on 2s vs 9s and return their final validation accuracies: linear, relu_net."""
    return mnist_basics.main(["--digits", "2", "9", *(argv if argv is not None else [])])


if __name__ == "__main__":
    main(sys.argv[1:])

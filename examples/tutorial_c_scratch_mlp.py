"""Tutorial c: full MNIST with a 784-32-16-10 ReLU/softmax net whose backward pass is written by hand.

    python examples/tutorial_c_scratch_mlp.py                          # 3 epochs
    python examples/tutorial_c_scratch_mlp.py --epochs 1 --limit 20000  # shorter

The network is built from `minilearn.scratch` (Linear, ReLU, Softmax, CrossEntropy: forward and
backward over plain tensors, each backward checked against autograd in tests/test_scratch.py).
A Learner trains it as any model: `ScratchBackward` fills the gradients from the layers' own
backward instead of autograd's, and SGD with fastai's one-cycle schedule takes the steps.
Pixels are standardised with the training set's mean and standard deviation.

Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import sys

import torch

from minilearn import SGD, Learner, accuracy, scratch
from mnist_cli import mnist_dls, mnist_parser


def scratch_mlp() -> scratch.Sequential:
    """784 -> 32 -> 16 -> 10, ReLU between, softmax at the end: every backward hand-written."""
    return scratch.Sequential(
        scratch.Linear(28 * 28, 32), scratch.ReLU(),
        scratch.Linear(32, 16), scratch.ReLU(),
        scratch.Linear(16, 10), scratch.Softmax(),
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train and return the final figures: valid_loss and accuracy (validation)."""
    parser = mnist_parser(__doc__, epochs=3, lr=0.2)
    args = parser.parse_args(argv)
    dls = mnist_dls(args)

    torch.manual_seed(args.seed)
    learn = Learner(dls, scratch_mlp(), scratch.CrossEntropy(), opt_func=SGD, metrics=accuracy,
                    cbs=scratch.ScratchBackward())
    print(f"\nscratch 784-32-16-10 (hand-written backward): fit_one_cycle({args.epochs}, {args.lr}) with SGD",
          flush=True)
    learn.fit_one_cycle(args.epochs, args.lr)

    valid_loss, acc = learn.recorder.column("valid_loss")[-1], learn.recorder.column("accuracy")[-1]
    print(f"\nvalid loss {valid_loss:.6f}, valid accuracy {acc:.6f}")
    return {"valid_loss": valid_loss, "accuracy": acc}


if __name__ == "__main__":
    main(sys.argv[1:])

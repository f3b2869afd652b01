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

import argparse
import sys

import torch

from minilearn import SGD, DataLoaders, Learner, accuracy, datasets
from minilearn import scratch


def scratch_mlp() -> scratch.Sequential:
    """784 -> 32 -> 16 -> 10, ReLU between, softmax at the end: every backward hand-written."""
    return scratch.Sequential(
        scratch.Linear(28 * 28, 32), scratch.ReLU(),
        scratch.Linear(32, 16), scratch.ReLU(),
        scratch.Linear(16, 10), scratch.Softmax(),
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train and return the final figures: valid_loss and accuracy (validation)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of fit_one_cycle (3)")
    parser.add_argument("--lr", type=float, default=0.2, help="peak learning rate of the cycle (0.2)")
    parser.add_argument("--bs", type=int, default=64, help="batch size (64)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--limit", type=int, default=None, help="train on only the first N training images")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, ...")
    args = parser.parse_args(argv)

    # standardised with the training images' statistics: an MLP learns much faster on zero-mean inputs
    x, y, valid_x, valid_y = datasets.mnist_train_valid(root=args.root, standardize=True, limit=args.limit)
    print(f"MNIST: {len(x)} training and {len(valid_x)} validation images, 10 classes", flush=True)
    dls = DataLoaders.from_tensors(x, y, valid_x, valid_y, bs=args.bs, seed=args.seed, device=args.device)

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

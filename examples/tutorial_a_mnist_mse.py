"""Tutorial a: MNIST 3s vs 7s with one linear layer and a sigmoid, mean squared error, full-batch gradient descent.

    python examples/tutorial_a_mnist_mse.py                      # 2000 steps at lr 1.0, as 20 epochs of 100
    python examples/tutorial_a_mnist_mse.py --steps 200          # shorter
    python examples/tutorial_a_mnist_mse.py --lr 0.001           # the tutorial's learning rate

The tutorial this comes from trained 2000 full-batch steps at lr 0.001 and reached a loss of
0.6805, with its 7s labelled 2 instead of 0 (so a sigmoid, at most 1, could never reach them).
Here 3s are 1 and 7s are 0; the gradient of MSE through a sigmoid is small, so a learning rate
of 1.0 suits it far better than 0.001. Every step sees all 12396 training images; an epoch of
the table is `--steps-per-epoch` such steps, so 2000 steps print 20 rows, not 2000.

Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader as TorchDataLoader, Dataset

from minilearn import SGD, DataLoader, DataLoaders, Learner, accuracy_multi, datasets, mse


class RepeatedFullBatch(Dataset):
    """`steps` items, each the whole training set: a loader over it gives `steps` full-batch steps per epoch."""

    def __init__(self, x: Tensor, y: Tensor, steps: int):
        self.x, self.y, self.steps = x, y, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x, self.y


def binary_accuracy(prob: Tensor, targ: Tensor) -> Tensor:
    """Accuracy of probabilities (the model ends in a sigmoid) thresholded at 0.5."""
    return accuracy_multi(prob, targ, thresh=0.5, sigmoid=False)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train and return the final figures: train_loss, valid_loss (MSE) and accuracy (validation)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="full-batch gradient steps (2000, as the tutorial)")
    parser.add_argument("--steps-per-epoch", type=int, default=100, help="steps per row of the table (100)")
    parser.add_argument("--lr", type=float, default=1.0, help="learning rate (1.0; the tutorial used 0.001)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights (42)")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, ...")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.steps_per_epoch < 1 or args.steps % args.steps_per_epoch:
        parser.error(f"--steps ({args.steps}) must be a positive multiple of --steps-per-epoch ({args.steps_per_epoch})")

    train_x, train_y, valid_x, valid_y = datasets.mnist_3v7(root=args.root)
    print(f"MNIST 3s (label 1) vs 7s (label 0): {len(train_x)} training and {len(valid_x)} validation images",
          flush=True)
    # batch_size=None: the torch loader hands each item (the whole set) over as it is, uncollated
    train = TorchDataLoader(RepeatedFullBatch(train_x, train_y, args.steps_per_epoch), batch_size=None)
    valid = DataLoader((valid_x, valid_y), bs=len(valid_x))
    dls = DataLoaders(train, valid, device=args.device)

    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(28 * 28, 1), nn.Sigmoid())
    learn = Learner(dls, model, loss_func=mse, opt_func=SGD, lr=args.lr, metrics=binary_accuracy)
    print(f"\nlinear + sigmoid, MSE, {args.steps} full-batch steps at lr {args.lr}", flush=True)
    learn.fit(args.steps // args.steps_per_epoch)

    # the exact full-batch training loss (the table's train_loss is fastai's smoothed one)
    train_loss = learn.validate(DataLoader((train_x, train_y), bs=len(train_x), device=args.device))[0]
    valid_loss, acc = learn.validate()
    print(f"\nafter {args.steps} steps: train loss {train_loss:.6f}, valid loss {valid_loss:.6f}, "
          f"valid accuracy {acc:.6f}")
    return {"train_loss": train_loss, "valid_loss": valid_loss, "accuracy": acc}


if __name__ == "__main__":
    main(sys.argv[1:])

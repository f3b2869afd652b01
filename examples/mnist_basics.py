"""fastbook chapter 4 on MNIST 3s vs 7s (or any two digits): a linear model, then a 784-30-1 ReLU net.

    python examples/mnist_basics.py                 # the full runs: 10 + 40 epochs
    python examples/mnist_basics.py --linear-epochs 2 --net-epochs 3   # shorter

Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
fastai printed 0.967615 (linear, 10 epochs) and 0.982826 (ReLU net, 40 epochs) for these runs.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from minilearn import SGD, DataLoaders, Learner, batch_accuracy, datasets, mnist_loss


def train(model: nn.Module, dls: DataLoaders, n_epoch: int, lr: float, title: str) -> float:
    """Fit `model` as fastbook does (SGD, mnist_loss, batch_accuracy); return the last accuracy."""
    print(f"\n{title}: {n_epoch} epochs at lr {lr}", flush=True)
    learn = Learner(dls, model, loss_func=mnist_loss, opt_func=SGD, lr=lr, metrics=batch_accuracy)
    learn.fit(n_epoch)
    return learn.recorder.column("batch_accuracy")[-1]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--linear-epochs", type=int, default=10, help="epochs for the linear model (10)")
    parser.add_argument("--net-epochs", type=int, default=40, help="epochs for the ReLU net (40)")
    parser.add_argument("--bs", type=int, default=256, help="batch size (256)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="train on the batches in file order, as fastbook's DataLoader(dset, batch_size=256)")
    parser.add_argument("--digits", type=int, nargs=2, default=[3, 7], metavar=("A", "B"),
                        help="the two digits to tell apart; A is label 1 (default: 3 7, fastbook's)")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, cuda:1, ...")
    args = parser.parse_args(argv)

    a, b = args.digits
    train_x, train_y, valid_x, valid_y = datasets.mnist_pair(a, b, root=args.root)
    print(f"MNIST {a}s (label 1) vs {b}s (label 0): {len(train_x)} training and {len(valid_x)} validation images",
          flush=True)

    def loaders() -> DataLoaders:
        return DataLoaders.from_tensors(train_x, train_y, valid_x, valid_y, bs=args.bs,
                                        shuffle=not args.no_shuffle, seed=args.seed, device=args.device)

    torch.manual_seed(args.seed)
    linear_acc = train(nn.Linear(28 * 28, 1), loaders(), args.linear_epochs, 1.0, "Linear model 784 -> 1")
    torch.manual_seed(args.seed)
    net = nn.Sequential(nn.Linear(28 * 28, 30), nn.ReLU(), nn.Linear(30, 1))
    net_acc = train(net, loaders(), args.net_epochs, 0.1, "ReLU net 784 -> 30 -> 1")

    print(f"\nvalid accuracy: linear {linear_acc:.6f}, relu net {net_acc:.6f}")
    return {"linear": linear_acc, "relu_net": net_acc}


if __name__ == "__main__":
    main(sys.argv[1:])

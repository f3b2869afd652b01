"""Tutorial b: MNIST 2s vs 9s by the seven steps: a linear model, then a two-layer ReLU net, mini-batch SGD.

    python examples/tutorial_b_mnist_2v9.py                                  # 10 + 40 epochs
    python examples/tutorial_b_mnist_2v9.py --linear-epochs 2 --net-epochs 3  # shorter

fastbook chapter 4's recipe, on another pair of digits: init, predict, loss (`mnist_loss`),
gradient, step (SGD, bs 256), repeat, stop, all run by `Learner.fit`. The linear model trains at
lr 1.0, the 784-30-1 ReLU net at lr 0.1, as in fastbook. 2 is label 1, 9 is label 0.

Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from minilearn import SGD, DataLoaders, Learner, batch_accuracy, datasets, mnist_loss


def train(model: nn.Module, dls: DataLoaders, n_epoch: int, lr: float, title: str) -> float:
    """Fit `model` by the seven steps (SGD, mnist_loss, batch_accuracy); return the last validation accuracy."""
    print(f"\n{title}: {n_epoch} epochs at lr {lr}", flush=True)
    learn = Learner(dls, model, loss_func=mnist_loss, opt_func=SGD, lr=lr, metrics=batch_accuracy)
    learn.fit(n_epoch)
    return learn.recorder.column("batch_accuracy")[-1]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train both models and return their final validation accuracies: linear, relu_net."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--linear-epochs", type=int, default=10, help="epochs for the linear model (10)")
    parser.add_argument("--net-epochs", type=int, default=40, help="epochs for the ReLU net (40)")
    parser.add_argument("--bs", type=int, default=256, help="batch size (256)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, ...")
    args = parser.parse_args(argv)

    train_x, train_y, valid_x, valid_y = datasets.mnist_pair(2, 9, root=args.root)
    print(f"MNIST 2s (label 1) vs 9s (label 0): {len(train_x)} training and {len(valid_x)} validation images",
          flush=True)

    def loaders() -> DataLoaders:
        return DataLoaders.from_tensors(train_x, train_y, valid_x, valid_y, bs=args.bs, seed=args.seed,
                                        device=args.device)

    torch.manual_seed(args.seed)
    linear_acc = train(nn.Linear(28 * 28, 1), loaders(), args.linear_epochs, 1.0, "Linear model 784 -> 1")
    torch.manual_seed(args.seed)
    net = nn.Sequential(nn.Linear(28 * 28, 30), nn.ReLU(), nn.Linear(30, 1))
    net_acc = train(net, loaders(), args.net_epochs, 0.1, "ReLU net 784 -> 30 -> 1")

    print(f"\nvalid accuracy: linear {linear_acc:.6f}, relu net {net_acc:.6f}")
    return {"linear": linear_acc, "relu_net": net_acc}


if __name__ == "__main__":
    main(sys.argv[1:])

"""Full MNIST (10 classes) with a 784-256-10 ReLU MLP: lr_find, then fit_one_cycle with Adam.

    python examples/mnist_one_cycle.py                     # 3 epochs
    python examples/mnist_one_cycle.py --epochs 1 --limit 10000   # shorter
    python examples/mnist_one_cycle.py --plot lr_find.png  # also save the LR finder's plot

Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from minilearn import Adam, DataLoaders, Learner, accuracy, datasets


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of fit_one_cycle (3)")
    parser.add_argument("--bs", type=int, default=64, help="batch size (64)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--limit", type=int, default=None, help="train on only the first N training images")
    parser.add_argument("--plot", default=None, help="save the LR finder's plot to this file")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, ...")
    args = parser.parse_args(argv)

    # standardised with the training images' statistics: an MLP learns much faster on zero-mean inputs
    x, y, valid_x, valid_y = datasets.mnist_train_valid(root=args.root, standardize=True, limit=args.limit)
    print(f"MNIST: {len(x)} training and {len(valid_x)} validation images, 10 classes", flush=True)
    dls = DataLoaders.from_tensors(x, y, valid_x, valid_y, bs=args.bs, seed=args.seed, device=args.device)

    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(28 * 28, 256), nn.ReLU(), nn.Linear(256, 10))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), opt_func=Adam, metrics=accuracy)

    suggestion = learn.lr_find(show_plot=False, plot_path=args.plot)
    print(f"lr_find suggests lr {suggestion.valley:.2e} (valley)", flush=True)
    learn.fit_one_cycle(args.epochs, suggestion.valley)

    acc = learn.recorder.column("accuracy")[-1]
    print(f"\nvalid accuracy: {acc:.6f}")
    return {"lr": suggestion.valley, "accuracy": acc}


if __name__ == "__main__":
    main(sys.argv[1:])

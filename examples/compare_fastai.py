"""fastbook chapter 4's two models trained by fastai and by minilearn, side by side.

Both frameworks get a copy of the same initial weights and loaders built with the same seed,
so they see the same batches in the same order; the tables should agree to float rounding.

    pip install -e ".[compare]"
    python examples/compare_fastai.py                                  # 10 + 40 epochs
    python examples/compare_fastai.py --linear-epochs 2 --net-epochs 2  # shorter
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from minilearn import DataLoaders, batch_accuracy, datasets, mnist_loss
from minilearn.compare import compare_with_fastai


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--linear-epochs", type=int, default=10, help="epochs for the linear model (10)")
    parser.add_argument("--net-epochs", type=int, default=40, help="epochs for the ReLU net (40)")
    parser.add_argument("--opt", default="sgd", help="sgd (fastbook's), adam, rmsprop, radam or lamb")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    args = parser.parse_args(argv)

    data = datasets.mnist_3v7(root=args.root)

    def loaders() -> DataLoaders:
        return DataLoaders.from_tensors(*data, bs=256, seed=args.seed)

    torch.manual_seed(args.seed)
    runs = {
        "linear": (nn.Linear(28 * 28, 1), args.linear_epochs, 1.0),
        "relu_net": (nn.Sequential(nn.Linear(28 * 28, 30), nn.ReLU(), nn.Linear(30, 1)), args.net_epochs, 0.1),
    }
    diffs = {}
    for name, (model, n_epoch, lr) in runs.items():
        print(f"\n{name}: {n_epoch} epochs at lr {lr} with {args.opt}, minilearn (ml) and fastai", flush=True)
        comparison = compare_with_fastai(loaders, model, mnist_loss, [batch_accuracy], n_epoch=n_epoch, lr=lr,
                                         opt=args.opt)
        print(comparison.table(), flush=True)
        diffs[name] = comparison.max_diffs()
    return diffs


if __name__ == "__main__":
    main(sys.argv[1:])

"""What the full-MNIST examples share: their command-line options and their data."""

from __future__ import annotations

import argparse

from minilearn import DataLoaders, datasets


def mnist_parser(doc: str, epochs: int, lr: float | None = None) -> argparse.ArgumentParser:
    """The options every full-MNIST example takes: --epochs, --lr (when it has a default), --bs,
    --seed, --limit, --root, --device; an example adds its own to the parser it returns."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs of fit_one_cycle ({epochs})")
    if lr is not None:
        parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate of the cycle ({lr})")
    parser.add_argument("--bs", type=int, default=64, help="batch size (64)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--limit", type=int, default=None, help="train on only the first N training images")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, ...")
    return parser


def mnist_dls(args: argparse.Namespace) -> DataLoaders:
    """Full MNIST as the options say, standardised with the training images' statistics (an MLP
    learns much faster on zero-mean inputs)."""
    x, y, valid_x, valid_y = datasets.mnist_train_valid(root=args.root, standardize=True, limit=args.limit)
    print(f"MNIST: {len(x)} training and {len(valid_x)} validation images, 10 classes", flush=True)
    return DataLoaders.from_tensors(x, y, valid_x, valid_y, bs=args.bs, seed=args.seed, device=args.device)

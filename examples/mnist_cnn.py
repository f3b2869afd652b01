"""Full MNIST with a small CNN (fastbook chapter 13's, with BatchNorm), trained by fit_one_cycle.

    python examples/mnist_cnn.py              # 4 epochs on 60000 images: >= 99.2% on the 10000 test images
    python examples/mnist_cnn.py --quick      # 2000 / 1000 images, 1 epoch: seconds (the test suite's run)
    python examples/mnist_cnn.py --fastai     # also train fastai's Learner on the same recipe, and time both

The recipe: inputs standardised with MNIST's statistics, five stride-2 3x3 convolutions (the first
5x5) 1-16-32-64-128-10 with BatchNorm and ReLU (fastbook's widths doubled), Adam (fastai's defaults), bs 512, one cycle to lr
0.06, cross-entropy. With --fastai both frameworks get loaders built the same way (same seed: the
same batches) and copies of the same initial weights; the wall time of each fit is printed.
Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from torch import nn

from minilearn import Adam, DataLoaders, Learner, accuracy, datasets


def conv(ni: int, nf: int, ks: int = 3, act: bool = True) -> nn.Sequential:
    """fastbook's conv block: a stride-2 convolution, then BatchNorm and ReLU (not after the last)."""
    layers = [nn.Conv2d(ni, nf, ks, stride=2, padding=ks // 2)]
    if act:
        layers += [nn.BatchNorm2d(nf), nn.ReLU()]
    return nn.Sequential(*layers)


def simple_cnn(w: int = 16) -> nn.Sequential:
    """28x28 -> 14 -> 7 -> 4 -> 2 -> 1: ten class scores; `w` channels after the first conv,
    doubling with each (fastbook's is w=8; w=16 reaches 99.2% in 4 epochs)."""
    return nn.Sequential(conv(1, w, ks=5), conv(w, 2 * w), conv(2 * w, 4 * w), conv(4 * w, 8 * w),
                         conv(8 * w, 10, act=False), nn.Flatten())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs (4)")
    parser.add_argument("--width", type=int, default=16, help="channels of the first conv, doubled in each next (16)")
    parser.add_argument("--lr", type=float, default=0.06, help="one cycle's peak learning rate (0.06)")
    parser.add_argument("--bs", type=int, default=512, help="batch size (512)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the weights and the shuffle (42)")
    parser.add_argument("--quick", action="store_true", help="2000 training and 1000 test images, 1 epoch, bs 64")
    parser.add_argument("--fastai", action="store_true", help="also train with fastai's Learner and time both")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, ...")
    args = parser.parse_args(argv)

    x, y = datasets.mnist(root=args.root, train=True)
    test_x, test_y = datasets.mnist(root=args.root, train=False)
    if args.quick:
        x, y, test_x, test_y, args.epochs, args.bs = x[:2000], y[:2000], test_x[:1000], test_y[:1000], 1, 64
    mean, std = x.mean(), x.std()  # standardised with the training images' statistics (0.1307, 0.3081)
    x, test_x = ((x - mean) / std).unsqueeze(1), ((test_x - mean) / std).unsqueeze(1)
    print(f"MNIST: {len(x)} training and {len(test_x)} test images, {args.epochs} epochs, bs {args.bs}, "
          f"lr {args.lr}", flush=True)

    def make_dls() -> DataLoaders:
        return DataLoaders.from_tensors(x, y, test_x, test_y, bs=args.bs, seed=args.seed, device=args.device)

    torch.manual_seed(args.seed)
    model = simple_cnn(args.width)
    result: dict[str, float] = {}
    if not args.fastai:
        learn = Learner(make_dls(), model, nn.CrossEntropyLoss(), opt_func=Adam, metrics=accuracy)
        start = time.perf_counter()
        learn.fit_one_cycle(args.epochs, args.lr)
        result = {"accuracy": learn.recorder.column("accuracy")[-1], "seconds": time.perf_counter() - start}
    else:
        from minilearn.compare import make_learners

        ml, fa = make_learners(make_dls, model, nn.CrossEntropyLoss(), metrics=[accuracy], opt="adam")
        for name, learn in (("minilearn", ml), ("fastai", fa)):
            learn.model.load_state_dict(copy.deepcopy(model.state_dict()))
            start = time.perf_counter()
            learn.fit_one_cycle(args.epochs, args.lr)
            seconds = time.perf_counter() - start
            acc = float(learn.recorder.values[-1][2])
            print(f"{name:10s} accuracy {acc:.6f}  fit time {seconds:.1f} s", flush=True)
            result[f"{name}_accuracy"], result[f"{name}_seconds"] = acc, seconds
        result["accuracy"], result["seconds"] = result["minilearn_accuracy"], result["minilearn_seconds"]
        print(f"fastai / minilearn wall time: {result['fastai_seconds'] / result['minilearn_seconds']:.2f}x")
    print(f"\ntest accuracy: {result['accuracy']:.6f} ({result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

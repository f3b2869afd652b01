"""Full MNIST (10 classes) with a 784-256-10 ReLU MLP: lr_find, then fit_one_cycle with Adam.

    python examples/mnist_one_cycle.py                     # 3 epochs
    python examples/mnist_one_cycle.py --epochs 1 --limit 10000   # shorter
    python examples/mnist_one_cycle.py --plot lr_find.png  # also save the LR finder's plot

Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from minilearn import Adam, Learner, accuracy
from mnist_cli import mnist_dls, mnist_parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = mnist_parser(__doc__, epochs=3)
    parser.add_argument("--plot", default=None, help="save the LR finder's plot to this file")
    args = parser.parse_args(argv)
    dls = mnist_dls(args)

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

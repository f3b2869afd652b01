"""Full MNIST with a 784-256-10 ReLU MLP on one process or several (DDP), same script either way.

    python examples/train_ddp.py                                   # one process
    torchrun --standalone --nproc_per_node 2 examples/train_ddp.py # two processes on this machine
    torchrun --standalone --nproc_per_node 2 examples/train_ddp.py --epochs 1 --limit 10000   # shorter

`--bs` is the global batch size: each of N processes trains on bs/N items of every batch, and the
steps are those of one process with batch size bs (same seed: same weights, up to rounding), so
the learning rate does not change with N. Only rank 0 prints; `--save NAME` writes the weights
(rank 0) to models/NAME.pth, which loads in a single process. Data comes from $MINILEARN_DATA
(a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from minilearn import Adam, DataLoaders, Learner, accuracy, datasets
from minilearn.distributed import is_rank0, num_distrib


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of fit_one_cycle (2)")
    parser.add_argument("--bs", type=int, default=256, help="global batch size, over all processes (256)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the cycle (2e-3)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--limit", type=int, default=None, help="train on only the first N training images")
    parser.add_argument("--save", default=None, help="save the trained weights as models/NAME.pth (rank 0)")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: under torchrun, each process "
                                                        "takes the GPU of its LOCAL_RANK")
    args = parser.parse_args(argv)

    # standardised with the training images' statistics: an MLP learns much faster on zero-mean inputs
    x, y, valid_x, valid_y = datasets.mnist_train_valid(root=args.root, standardize=True, limit=args.limit)
    # every process builds the same loaders and model; distrib_ctx gives each its share of every batch
    dls = DataLoaders.from_tensors(x, y, valid_x, valid_y, bs=args.bs, seed=args.seed, device=args.device)
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(28 * 28, 256), nn.ReLU(), nn.Linear(256, 10))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), opt_func=Adam, metrics=accuracy)

    n_proc = num_distrib()
    if is_rank0():
        print(f"MNIST: {len(x)} training and {len(valid_x)} validation images; {n_proc} process(es), "
              f"global batch {args.bs} ({args.bs / n_proc:g} per process)", flush=True)
    start = time.perf_counter()
    with learn.distrib_ctx():
        learn.fit_one_cycle(args.epochs, args.lr)
        if args.save is not None:
            learn.save(args.save, with_opt=False)
    seconds = time.perf_counter() - start

    acc = learn.recorder.column("accuracy")[-1]
    if is_rank0():
        print(f"\nvalid accuracy: {acc:.6f}; trained in {seconds:.1f} s on {n_proc} process(es)", flush=True)
    return {"accuracy": acc, "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])

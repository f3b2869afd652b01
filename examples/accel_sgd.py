"""fastbook chapter 16 ("The Training Process"): optimisers built from step functions, on MNIST,
trained by minilearn and by fastai side by side.

    python examples/accel_sgd.py                                   # the five experiments, 3 epochs each
    python examples/accel_sgd.py --epochs 1 --limit 5000 --valid-limit 2000   # shorter
    python examples/accel_sgd.py --no-fastai                       # minilearn alone

What it reproduces. Every optimiser the chapter trains, with the chapter's own code for the
step functions and the `opt_func`s (below, under "the book's code", as the book writes it; only
the imports differ: `Optimizer`, `SGD`, `Learner` come from minilearn), each trained the way the
chapter trains it:

  1. Adam, fastai's default:   learn = get_learner(); learn.fit_one_cycle(3, 0.003)
  2. SGD:                      learn = get_learner(opt_func=SGD); learn.lr_find()
                               learn.fit_one_cycle(3, 0.03, moms=(0,0,0))
  3. sgd_cb:                   opt_func = partial(Optimizer, cbs=[sgd_cb]); learn.fit(3, 0.03)
  4. momentum:                 opt_func = partial(Optimizer, cbs=[average_grad,momentum_step], mom=0.9)
                               learn.fit_one_cycle(3, 0.03); learn.recorder.plot_sched()
  5. RMSProp:                  opt_func = partial(Optimizer, cbs=[average_sqr_grad,rms_prop_step],
                                                  sqr_mom=0.99, eps=1e-7)
                               learn.fit_one_cycle(3, 0.003)

(The chapter's Adam section trains nothing beyond experiment 1, and its Callback examples are out
of scope here.) Each experiment is then run again on fastai: the same step functions through
`fastai.optimizer.Optimizer` (fastai's own `SGD` / `Adam` for 1 and 2), fastai's
`CrossEntropyLossFlat` and `accuracy`, from the same initial weights, on loaders built the same
way (fastai's Learner takes minilearn's DataLoaders, as in `minilearn.compare`), so both see the
same batches in the same order. The script prints minilearn's table as the book shows it, both
tables side by side with the largest difference per column, and a summary.

The check. For every column (train_loss, valid_loss, accuracy) it takes the largest ABSOLUTE
difference |minilearn - fastai| over all epochs, and likewise per batch for the learning rate,
the momentum and the smoothed training loss, and for lr_find's learning rates and smoothed
losses; lr_find's suggestion, a learning rate that may lie anywhere in 1e-7..10, is compared by
RELATIVE difference. The script exits with status 1 if any of these exceeds --tol (1e-5), but
for experiment 1: Adam is held to a drift bound instead (see ADAM_DRIFT for why).
Over hundreds of batches a difference in the last bit of a scheduled lr, or rounding in an
optimiser's step, can grow well past that (training is chaotic); so for each experiment it also
prints at how many batches lr (and mom) differ once rounded to float32, what the step computes
with, and the first batch at which the smoothed losses part by more than --tol.

What changed from the book, and why:
  * data: MNIST (60,000 training and 10,000 test images, 10 digits, standardised with the training
    images' mean and std, bs 128 as the book's `get_data`) instead of Imagenette at 160/128 px:
    these machines have no internet, and the chapter's resnet34 would take hours per experiment on
    a CPU. --limit / --valid-limit train and validate on the first N images.
  * model: instead of `cnn_learner(dls, resnet34, pretrained=False, metrics=accuracy).to_fp16()`,
    a 784-100-10 MLP with a BatchNorm layer (BatchNorm, as in the resnet, so that fastai's rule of
    no weight decay on norm layers and biases is exercised by Adam's wd), or with --arch cnn a
    small CNN of stride-2 convolutions with BatchNorm (in the spirit of chapter 13's MNIST CNN,
    several times slower on a CPU). No `to_fp16`: this runs on a CPU. The loss is cross-entropy
    and the metric accuracy, what `cnn_learner` picks for these labels.
  * initial weights: every experiment starts from the same seeded weights (the book draws new
    random ones each time), which makes the experiments comparable with each other as well.
  * epochs: 3, as the book (--epochs changes it for every experiment).
  * `learn.lr_find()` is called with `show_plot=False` (this is a script) and its suggestion is
    printed; `learn.recorder.plot_sched()` is compared number by number (lr and mom per batch)
    rather than drawn. --plots DIR saves minilearn's two figures there.
  * the book's step functions use the old overloads `add_(Number, Tensor)` and
    `addcdiv_(Number, Tensor, Tensor)`; PyTorch 2 still runs them but warns that they are
    deprecated, so that one warning is silenced here. The code itself is kept as written.
  * one known difference between the frameworks is bridged: minilearn's `lr_find` leaves no trace
    (weights, optimiser and the loaders' shuffling are put back), fastai's puts the weights back but
    leaves the loaders' shuffle one lr_find further on. After fastai's lr_find the fastai learner
    gets fresh loaders (same seed), so that its fit_one_cycle sees the same batches as minilearn's.

Data comes from $MINILEARN_DATA (a folder holding MNIST/raw/), else torchvision's download.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from minilearn import SGD, CrossEntropyLossFlat, DataLoaders, Learner, Optimizer, accuracy, datasets
from minilearn.compare import Comparison, import_fastai, run_of



# ------------------------------------------------------------------ the book's code
# fastbook chapter 16, the cells that define step functions, as written there.

def sgd_cb(p, lr, **kwargs): p.data.add_(-lr, p.grad.data)


def average_grad(p, mom, grad_avg=None, **kwargs):
    if grad_avg is None: grad_avg = torch.zeros_like(p.grad.data)
    return {'grad_avg': grad_avg*mom + p.grad.data}


def momentum_step(p, lr, grad_avg, **kwargs): p.data.add_(-lr, grad_avg)


def average_sqr_grad(p, sqr_mom, sqr_avg=None, **kwargs):
    if sqr_avg is None: sqr_avg = torch.zeros_like(p.grad.data)
    return {'sqr_avg': sqr_mom*sqr_avg + (1-sqr_mom)*p.grad.data**2}


def rms_prop_step(p, lr, sqr_avg, eps, grad_avg=None, **kwargs):
    denom = sqr_avg.sqrt().add_(eps)
    p.data.addcdiv_(-lr, p.grad, denom)


# The chapter's training cells, in order. Each is run once with minilearn's `get_learner` and once
# with fastai's (which turns minilearn's `Optimizer` / `SGD` in `opt_func` into fastai's). `n` is
# the number of epochs (the book's 3). They return the learner, for the comparison.

def adam_default(get_learner, n):
    learn = get_learner()
    learn.fit_one_cycle(n, 0.003)
    return learn


def plain_sgd(get_learner, n):
    learn = get_learner(opt_func=SGD)
    learn.lr_find(show_plot=False)
    learn.fit_one_cycle(n, 0.03, moms=(0,0,0))
    return learn


def sgd_from_scratch(get_learner, n):
    opt_func = partial(Optimizer, cbs=[sgd_cb])
    learn = get_learner(opt_func=opt_func)
    learn.fit(n, 0.03)
    return learn


def momentum(get_learner, n):
    opt_func = partial(Optimizer, cbs=[average_grad,momentum_step], mom=0.9)
    learn = get_learner(opt_func=opt_func)
    learn.fit_one_cycle(n, 0.03)
    return learn  # the book then draws learn.recorder.plot_sched(): compared per batch below


def rms_prop(get_learner, n):
    opt_func = partial(Optimizer, cbs=[average_sqr_grad,rms_prop_step],
                       sqr_mom=0.99, eps=1e-7)
    learn = get_learner(opt_func=opt_func)
    learn.fit_one_cycle(n, 0.003)
    return learn


# minilearn's Adam rounds as torch's AdamW (bit for bit), fastai's a little differently: the two
# agree to 1e-6 over 100 float64 steps (tests/test_optim_steps.py) and to 1e-7 in the table over
# 240 float32 batches, but training amplifies the last-bit differences, and over the 1,407 batches
# of three full-MNIST epochs the tables part by about 6e-3. So experiment 1 is held to the bound
# below instead of --tol; the others compute with the same arithmetic in both and are held to --tol.
ADAM_DRIFT = dict(loss_rel=0.1, accuracy=0.005)

EXPERIMENTS = [
    ("1. Adam (fastai's default)", "learn = get_learner(); learn.fit_one_cycle({n}, 0.003)", adam_default),
    ("2. SGD", "learn = get_learner(opt_func=SGD); learn.lr_find(); "
               "learn.fit_one_cycle({n}, 0.03, moms=(0,0,0))", plain_sgd),
    ("3. sgd_cb", "opt_func = partial(Optimizer, cbs=[sgd_cb]); learn.fit({n}, 0.03)", sgd_from_scratch),
    ("4. momentum", "opt_func = partial(Optimizer, cbs=[average_grad,momentum_step], mom=0.9); "
                    "learn.fit_one_cycle({n}, 0.03)", momentum),
    ("5. RMSProp", "opt_func = partial(Optimizer, cbs=[average_sqr_grad,rms_prop_step], sqr_mom=0.99, "
                   "eps=1e-7); learn.fit_one_cycle({n}, 0.003)", rms_prop),
]


# ------------------------------------------------------------------ data and model (changed from the book)
def mnist_loaders(args) -> Callable[[], DataLoaders]:
    """A function building MNIST's DataLoaders, the same batches in the same order at every call."""
    x, y, valid_x, valid_y = datasets.mnist_train_valid(root=args.root, flatten=args.arch == "mlp",
                                                        standardize=True, limit=args.limit)
    if args.valid_limit is not None:
        valid_x, valid_y = valid_x[:args.valid_limit], valid_y[:args.valid_limit]
    if args.arch == "cnn":
        x, valid_x = x.unsqueeze(1), valid_x.unsqueeze(1)  # one channel
    print(f"MNIST: {len(x)} training and {len(valid_x)} validation images, 10 classes", flush=True)
    return lambda: DataLoaders.from_tensors(x, y, valid_x, valid_y, bs=args.bs, seed=args.seed)


def conv(ni, nf, ks=3, act=True):
    """A stride-2 convolution (halving the image), ReLU, BatchNorm."""
    layers = [nn.Conv2d(ni, nf, stride=2, kernel_size=ks, padding=ks // 2)]
    if act:
        layers.append(nn.ReLU())
    layers.append(nn.BatchNorm2d(nf))
    return nn.Sequential(*layers)


def make_model(arch: str, seed: int) -> nn.Module:
    """The experiments' initial weights, the same for every experiment and both frameworks."""
    torch.manual_seed(seed)
    if arch == "cnn":  # 28 -> 14 -> 7 -> 4 -> 2 -> 1
        return nn.Sequential(conv(1, 4), conv(4, 8), conv(8, 16), conv(16, 32), conv(32, 10, act=False), nn.Flatten())
    return nn.Sequential(nn.Linear(28 * 28, 100), nn.ReLU(), nn.BatchNorm1d(100), nn.Linear(100, 10))


# ------------------------------------------------------------------ the two frameworks' get_learner
def minilearn_get_learner(make_dls, model, path):
    """The book's `get_learner(**kwargs)`, for minilearn (it prints the book's table as it trains)."""
    def get_learner(**kwargs):
        return Learner(make_dls(), copy.deepcopy(model), CrossEntropyLossFlat(), metrics=accuracy, path=path, **kwargs)
    return get_learner


def fastai_get_learner(make_dls, model, path):
    """The book's `get_learner(**kwargs)`, for fastai: the same loaders and initial weights; minilearn's
    `SGD` and `partial(Optimizer, ...)` become fastai's, with the same step functions. Quiet."""
    fastai_learner = import_fastai()
    import fastai.optimizer as fo
    from fastai.callback.progress import ProgressCallback
    from fastai.losses import CrossEntropyLossFlat as FastaiCrossEntropyLossFlat
    from fastai.metrics import accuracy as fastai_accuracy

    def to_fastai(opt_func):
        if opt_func is SGD:
            return fo.SGD
        if isinstance(opt_func, partial) and opt_func.func is Optimizer:
            return partial(fo.Optimizer, *opt_func.args, **opt_func.keywords)
        raise ValueError(f"no fastai twin for opt_func={opt_func!r}")

    class FastaiLearner(fastai_learner.Learner):
        def lr_find(self, *args, **kwargs):
            suggestion = super().lr_find(*args, **kwargs)
            # kept before fit_one_cycle resets the recorder
            self.lr_find_record = ([float(v) for v in self.recorder.lrs], [float(v) for v in self.recorder.losses],
                                   float(suggestion.valley))
            # minilearn's lr_find puts the loaders' shuffle back, fastai's leaves it moved on: fresh
            # loaders (the same seed) make fastai's next fit see the batches minilearn's sees
            self.dls = make_dls()
            return suggestion

    def get_learner(opt_func=None, **kwargs):
        if opt_func is not None:
            kwargs["opt_func"] = to_fastai(opt_func)
        learn = FastaiLearner(make_dls(), copy.deepcopy(model), loss_func=FastaiCrossEntropyLossFlat(),
                              metrics=fastai_accuracy, path=path, **kwargs)
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *args: None  # without its progress fastai would print the raw epoch lists
        return learn

    return get_learner


# ------------------------------------------------------------------ comparison
def max_abs_diff(a, b) -> float:
    if len(a) != len(b):
        return math.inf  # a different number of values fails the check
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def where_they_part(comparison: Comparison, tol: float) -> str:
    """Where two runs begin to differ: at how many batches a scheduled hyper-parameter differs once
    rounded to float32 (what the step computes with), and the first batch at which the smoothed
    losses part by more than `tol`. A one-ulp difference in lr, or rounding in an optimiser's step,
    can grow over hundreds of batches; these say which came first."""
    ml, fa = comparison.minilearn, comparison.fastai
    parts = []
    for name, a, b in [("lr", ml.lrs, fa.lrs)] + [(k, ml.hps[k], fa.hps.get(k, [])) for k in ml.hps if k != "lr"]:
        if len(a) != len(b):
            parts.append(f"{name}: {len(a)} and {len(b)} batches")
            continue
        differ = (torch.tensor(a, dtype=torch.float32) != torch.tensor(b, dtype=torch.float32)).nonzero().flatten()
        first = f" (first: batch {int(differ[0])})" if len(differ) else ""
        parts.append(f"{name} differs in float32 at {len(differ)} of {len(a)} batches{first}")
    apart = next((i for i, (a, b) in enumerate(zip(ml.losses, fa.losses)) if abs(a - b) > tol), None)
    parts.append("smoothed losses within tol at every batch" if apart is None else
                 f"smoothed losses first part by more than {tol:g} at batch {apart}")
    return "per batch: " + "; ".join(parts)


def lr_find_diffs(ml, fa) -> dict[str, float]:
    """lr_find's learning rates and smoothed losses (absolute), its suggestion (relative)."""
    fa_lrs, fa_losses, fa_valley = fa.lr_find_record
    ml_valley = float(ml.lr_finder.suggestions.valley)
    print(f"lr_find suggests lr {ml_valley:.4g} (minilearn), {fa_valley:.4g} (fastai), "
          f"after {len(ml.lr_finder.lrs)} and {len(fa_lrs)} batches")
    return {"lr_find lr (per batch)": max_abs_diff(ml.lr_finder.lrs, fa_lrs),
            "lr_find smooth loss (per batch)": max_abs_diff(ml.lr_finder.losses, fa_losses),
            "lr_find suggestion (relative)": abs(ml_valley - fa_valley) / fa_valley}


def print_summary(results: dict, tol: float) -> None:
    names = ["train_loss", "valid_loss", "accuracy"]
    head = f"{'experiment':<28}" + "".join(f"{n + ' (ml)':>18}{n + ' (fastai)':>20}" for n in names)
    print(f"\nsummary: final epoch, minilearn (ml) and fastai; 'largest' is the largest absolute difference "
          f"over every epoch and batch (relative for lr_find's suggestion), against tol {tol:g}")
    print(head + f"{'largest':>12}  verdict")
    for title, (comparison, diffs) in results.items():
        ml, fa = comparison.minilearn.values[-1], comparison.fastai.values[-1]
        cells = "".join(f"{a:>18.6f}{b:>20.6f}" for a, b in zip(ml, fa))
        worst = max(diffs.values())
        verdict = ("ok" if worst <= tol else "DIFFERS") if title not in DRIFTS else \
            ("ok (Adam's rounding: within the drift bound)" if within_drift(comparison) else "DIFFERS")
        print(f"{title:<28}{cells}{worst:>12.2e}  {verdict}")


DRIFTS = {EXPERIMENTS[0][0]}  # held to ADAM_DRIFT, not --tol


def within_drift(comparison: Comparison) -> bool:
    """Final losses within ADAM_DRIFT's relative bound, accuracies within its absolute one."""
    (ml_train, ml_valid, ml_acc), (fa_train, fa_valid, fa_acc) = comparison.minilearn.values[-1], comparison.fastai.values[-1]
    rel = max(abs(ml_train - fa_train) / fa_train, abs(ml_valid - fa_valid) / fa_valid)
    return rel <= ADAM_DRIFT["loss_rel"] and abs(ml_acc - fa_acc) <= ADAM_DRIFT["accuracy"]


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    """Run the experiments; 0 if minilearn and fastai agree within --tol (or with --no-fastai), 1 if not."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every experiment (3, the book's)")
    parser.add_argument("--limit", type=int, default=None, help="train on only the first N training images")
    parser.add_argument("--valid-limit", type=int, default=None, help="validate on only the first N test images")
    parser.add_argument("--arch", choices=("mlp", "cnn"), default="mlp",
                        help="mlp: 784-100-BatchNorm-10 (default); cnn: stride-2 convolutions with BatchNorm (slower)")
    parser.add_argument("--bs", type=int, default=128, help="batch size (128, the book's)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the initial weights and the shuffle (42)")
    parser.add_argument("--tol", type=float, default=1e-5,
                        help="largest absolute difference allowed (relative for lr_find's suggestion) (1e-5)")
    parser.add_argument("--no-fastai", action="store_true", help="run minilearn only, no comparison")
    parser.add_argument("--plots", default=None, metavar="DIR",
                        help="save minilearn's lr_find plot (2.) and plot_sched (4.) as PNGs in DIR")
    parser.add_argument("--root", default=None, help="data folder (default: $MINILEARN_DATA)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs: expected at least 1")

    make_dls = mnist_loaders(args)
    results, start = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="accel-sgd-") as path, warnings.catch_warnings():
        # The book's step functions call `add_(Number, Tensor)` and `addcdiv_(Number, Tensor, Tensor)`,
        # overloads PyTorch 2 still runs but calls deprecated; the code is kept as the book writes it.
        warnings.filterwarnings("ignore", message=r"This overload of (add|addcdiv)_ is deprecated",
                                category=UserWarning)
        for title, code, cell in EXPERIMENTS:
            print(f"\n{title}: {code.format(n=args.epochs)}", flush=True)
            model = make_model(args.arch, args.seed)
            t0 = time.perf_counter()
            ml = cell(minilearn_get_learner(make_dls, model, path), args.epochs)
            t_ml = time.perf_counter() - t0
            save_plots(args.plots, cell, ml)
            if args.no_fastai:
                if cell is plain_sgd:
                    print(f"lr_find suggests lr {float(ml.lr_finder.suggestions.valley):.4g}")
                continue
            t0 = time.perf_counter()
            fa = cell(fastai_get_learner(make_dls, model, path), args.epochs)
            t_fa = time.perf_counter() - t0
            comparison = Comparison(run_of("minilearn", ml), run_of("fastai", fa))
            diffs = comparison.max_diffs()
            if cell is plain_sgd:
                diffs.update(lr_find_diffs(ml, fa))
            print(f"minilearn {t_ml:.1f}s, fastai {t_fa:.1f}s; side by side (ml = minilearn):")
            print(comparison.table())
            print(where_they_part(comparison, args.tol))
            if cell is plain_sgd:
                print("largest difference in lr_find: " + ", ".join(
                    f"{k} {v:.2e}" for k, v in diffs.items() if k.startswith("lr_find")))
            results[title] = (comparison, diffs)

    if args.no_fastai:
        print(f"\n{len(EXPERIMENTS)} experiments in {time.perf_counter() - start:.0f}s (minilearn only)")
        return 0
    print_summary(results, args.tol)
    worst = max(max(d.values()) for t, d in ((t, d) for t, (_, d) in results.items()) if t not in DRIFTS)
    ok = worst <= args.tol and all(within_drift(c) for t, (c, _) in results.items() if t in DRIFTS)
    print(f"\n{'all differences within' if ok else 'DIFFERENCE ABOVE'} tol {args.tol:g} (largest {worst:.2e}, "
          f"Adam's drift aside); "
          f"{len(EXPERIMENTS)} experiments in {time.perf_counter() - start:.0f}s")
    return 0 if ok else 1


def save_plots(folder, cell, learn) -> None:
    """With --plots: minilearn's lr_find curve (experiment 2) and schedule (experiment 4), as the book draws them."""
    if folder is None or cell not in (plain_sgd, momentum):
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    fig = learn.plot_lr_find() if cell is plain_sgd else learn.recorder.plot_sched()
    out = Path(folder) / ("lr_find.png" if cell is plain_sgd else "plot_sched.png")
    fig.savefig(out)
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

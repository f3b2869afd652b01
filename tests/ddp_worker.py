"""Tiny trainings for tests/test_distributed_trainer.py: under torchrun (several ranks), or imported (one process).

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py train OUT   # each rank writes OUT/rank<r>.pt
    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py fail OUT    # rank 1 raises in epoch 1

`run_all(out)` is what one process runs for the same numbers; the test compares the two.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from minilearn import AccumMetric, Callback, DataLoaders, Learner, SaveModelCallback, StatefulMetric, accuracy
from minilearn.callbacks.distributed import distrib_ctx
from minilearn.distributed import rank_distrib
from synthetic import class_data

# name: (train items, valid items, global batch size, epochs). Global batches of the last two
# end unevenly: 37 = 2*16 + 5 (split 3 + 2 over two ranks), 49 = 3*16 + 1 (fewer items than ranks).
CONFIGS = {
    "even": (64, 45, 16, 3),
    "odd_end": (37, 45, 16, 2),
    "tiny_end": (49, 45, 16, 2),
}


def macro_recall(preds: torch.Tensor, targs: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the recall: not a mean over items, so it needs AccumMetric."""
    return torch.stack([(preds[targs == c] == c).float().mean() for c in targs.unique()]).mean()


def make_learner(n: int, n_valid: int, bs: int, path) -> Learner:
    """An MLP on 3 Gaussian clusters with a metric of each kind: a function, AccumMetric, torchmetrics."""
    x, y, vx, vy = class_data(n, n_valid)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=bs, seed=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 3))
    metrics = [accuracy, AccumMetric(macro_recall, dim_argmax=-1)]
    try:  # torchmetrics syncs its own states across processes
        from torchmetrics.classification import MulticlassAccuracy
        metrics.append(StatefulMetric(MulticlassAccuracy(num_classes=3, average="macro"), name="tm_macro_acc"))
    except ImportError:
        pass
    return Learner(dls, model, nn.CrossEntropyLoss(), metrics=metrics, path=path)


def train(name: str, out: Path) -> dict:
    """lr_find (first config), fit_one_cycle with SaveModelCallback, validate and get_preds."""
    n, n_valid, bs, epochs = CONFIGS[name]
    learn = make_learner(n, n_valid, bs, out)
    result = {}
    with distrib_ctx(learn):
        if name == "even":
            suggestion = learn.lr_find(num_it=12, show_plot=False)
            result["lr_find"] = (suggestion.valley, list(learn.lr_finder.losses))
        learn.fit_one_cycle(epochs, 1e-2, cbs=SaveModelCallback(fname=f"{name}_best"))
        result["values"] = learn.recorder.values
        result["validate"] = learn.validate()
        result["preds"] = learn.get_preds()
        learn.save(f"{name}_rank{rank_distrib()}")  # only rank 0 writes
    result["weights"] = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    return result


def run_all(out: Path) -> dict:
    return {name: train(name, Path(out)) for name in CONFIGS}


class FailOnRank1(Callback):
    def after_batch(self):
        if rank_distrib() == 1 and self.learn.epoch == 1 and self.learn.iter == 1:
            raise ValueError("deliberate failure on rank 1")


@record
def main(argv: list[str]) -> None:
    mode, out = argv[0], Path(argv[1])
    if mode == "train":
        torch.save(run_all(out), out / f"rank{rank_distrib()}.pt")
    elif mode == "fail":
        learn = make_learner(64, 45, 16, out)
        with distrib_ctx(learn):
            learn.fit(50, 1e-2, cbs=FailOnRank1())
    else:
        raise SystemExit(f"mode: expected 'train' or 'fail', got {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

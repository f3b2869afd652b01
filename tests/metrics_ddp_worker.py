"""scikit-learn metrics under torch.distributed, for tests/test_metrics_sklearn.py (run under torchrun):

    torchrun --standalone --nproc_per_node 2 tests/metrics_ddp_worker.py OUT   # each rank writes OUT/rank<r>.pt

Each rank fits a learner for an epoch and validates it inside `distrib_ctx`; it saves the metric
values it reports, the trained weights and how many validation items it saw itself. The test
rebuilds the learner in one process (`make_learner`), loads the weights and compares the values
with scikit-learn's on the whole validation set (`references`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from minilearn import Callback, CrossEntropyLossFlat, DataLoaders, Learner, MSELossFlat
from minilearn.callbacks.distributed import distrib_ctx
from minilearn.distributed import num_distrib, rank_distrib
from minilearn.metrics import rmse
from minilearn.metrics_sklearn import F1Score, MatthewsCorrCoef, PearsonCorrCoef, R2Score, RocAuc
from synthetic import class_data

# name: (task, valid items, batch size). 45 = 16 + 16 + 13: the last batch splits 7 + 6 over two
# ranks; 33 = 16 + 16 + 1: one item in the last batch, which only rank 0 holds.
CONFIGS = {
    "class_45": ("class", 45, 16),
    "class_33": ("class", 33, 16),
    "reg_45": ("reg", 45, 16),
    "reg_33": ("reg", 33, 16),
}
N_TRAIN = 40


def _data(task: str, n_valid: int):
    if task == "class":  # 4 noisy classes
        x, y, vx, vy = class_data(N_TRAIN, n_valid, n_features=4, n_classes=4, seed=2)
        g = torch.Generator().manual_seed(7)
        return x + 2.5 * torch.randn(x.shape, generator=g), y, vx + 2.5 * torch.randn(vx.shape, generator=g), vy
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(N_TRAIN + n_valid, 4, generator=g)
    ys = xs @ torch.randn(4, 1, generator=g) + 0.7 * torch.randn(N_TRAIN + n_valid, 1, generator=g)
    return xs[:N_TRAIN], ys[:N_TRAIN], xs[N_TRAIN:], ys[N_TRAIN:]


def make_learner(task: str, n_valid: int, bs: int):
    """The learner (AccumMetric-based metrics only) and its validation tensors."""
    x, y, vx, vy = _data(task, n_valid)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=bs, seed=1)
    torch.manual_seed(0)
    if task == "class":
        learn = Learner(dls, nn.Linear(4, 4), CrossEntropyLossFlat(), lr=3e-2,
                        metrics=[F1Score(average="macro"), RocAuc(), MatthewsCorrCoef()])
    else:
        learn = Learner(dls, nn.Linear(4, 1), MSELossFlat(), lr=3e-2, metrics=[R2Score(), PearsonCorrCoef(), rmse])
    return learn, vx, vy


def references(task: str, y, out: torch.Tensor) -> dict:
    """scikit-learn's (scipy's) values of the learner's metrics on all outputs at once, by name."""
    import numpy as np
    import scipy.stats as scs
    import sklearn.metrics as skm

    if task == "class":
        pred = out.argmax(-1).numpy()
        return {"f1_score": skm.f1_score(y, pred, average="macro"),
                "roc_auc_score": skm.roc_auc_score(y, torch.softmax(out, -1).numpy(), multi_class="ovr"),
                "matthews_corrcoef": skm.matthews_corrcoef(y, pred)}
    o = out.flatten().numpy()
    return {"r2_score": skm.r2_score(y.ravel(), o), "pearsonr": scs.pearsonr(o, y.ravel())[0],
            "rmse": float(np.sqrt(skm.mean_squared_error(y.ravel(), o)))}


class CountValid(Callback):
    """How many validation items this rank's own batches held (in the last validation pass)."""

    def before_validate(self):
        self.seen = 0

    def after_batch(self):
        if not self.learn.training:
            self.seen += len(self.learn.yb[0])


def run(name: str) -> dict:
    task, n_valid, bs = CONFIGS[name]
    learn, _, _ = make_learner(task, n_valid, bs)
    count = CountValid()
    with distrib_ctx(learn):
        learn.fit(1, cbs=count)
        fit_metrics = learn.recorder.values[-1][2:]  # [train_loss, valid_loss, *metrics]
        values = learn.validate(cbs=count)
    return {"validate": [float(v) for v in values], "fit_metrics": [float(v) for v in fit_metrics],
            "names": [m.name for m in learn.metrics], "seen": count.seen,
            "weights": {k: v.detach().clone() for k, v in learn.model.state_dict().items()}}


@record
def main(argv: list[str]) -> None:
    out = Path(argv[0])
    result = {name: run(name) for name in CONFIGS}
    result["world"] = num_distrib()
    torch.save(result, out / f"rank{rank_distrib()}.pt")


if __name__ == "__main__":
    main(sys.argv[1:])

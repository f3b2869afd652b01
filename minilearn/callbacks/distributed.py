"""Training on several processes or machines: torch.distributed and DDP, under fastai's names.

    torchrun --nproc_per_node 2 train.py        # train.py:  with distrib_ctx(learn): learn.fit(3, 1e-3)

`distrib_ctx(learn)` initialises the process group from torchrun's environment (gloo on the CPU,
nccl on CUDA, each process on the GPU of its `LOCAL_RANK`), adds a `DistributedTrainer`, and
off rank 0 removes the progress output. Run as a plain single process it changes nothing, so one
script serves both. The `DistributedTrainer`:

- wraps the model in `DistributedDataParallel` for the training phase of each epoch only: the
  Learner holds the plain model everywhere else, so `save`, `validate`, the trackers and lr_find's
  restore see ordinary weights, and a checkpoint loads in a single process as it is;
- splits every loader across the ranks with `DistributedDL` (below): together the ranks see each
  item once per epoch, in the order one process would, shuffled by rank 0's generator, which is
  sent to every rank at the start of each pass;
- weights each rank's loss and all-reduces each training batch's loss (`sync_loss`), so every
  rank holds the loss of the whole global batch: the train_loss column, lr_find's curve and any
  callback that decides on the loss (lr_find's stop, TerminateOnNaN) agree across ranks, and no
  rank leaves the loop while the others wait for it;
- reduces the validation loss and metrics exactly: each accumulator combines itself across the
  ranks (`sync()`: sums and counts all-reduced for `AvgMetric` and the valid loss, predictions
  gathered for `AccumMetric` and `get_preds`; torchmetrics metrics sync themselves). A metric
  object without `sync` keeps each rank's share, with a warning.

The guarantee. N processes take the optimiser steps of one process on the same data, seed
and initial weights, up to float rounding, for any dataset size (an uneven last batch included):
each global batch is split across the ranks and each rank's loss weighted (see
`minilearn.distributed`), provided that the loss is a mean over the batch's items (as torch's
losses are by default) and the forward pass neither draws random numbers (dropout trains
correctly, but each rank draws its own masks) nor uses batch statistics (BatchNorm sees each
rank's part only; `nn.SyncBatchNorm.convert_sync_batchnorm` fixes that on CUDA). A rank with
no item in a batch trains on a copy of one with weight 0, which changes no gradient (but enters
that rank's training metrics, if `train_metrics`).

Inside the block every rank must make the same calls (`fit`, `lr_find`, `validate`, `get_preds`):
they exchange numbers, and a call made on rank 0 alone waits for the others until `timeout`;
`load` on every rank too, or the ranks' weights part ways.

Only rank 0 prints the table and bar; checkpoints are written by rank 0 alone (`Learner.save`),
and the trainer waits for every rank at the end of a fit, so a checkpoint saved during the fit
is complete before any rank loads it. A rank that raises ends its process; torchrun then stops
the others (a rank waiting in a collective on a dead peer fails within seconds; one stuck for
another reason, after `timeout`), and prints the failing rank's traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from minilearn.callback import Callback, add_note
from minilearn.callbacks.preds import GatherPredsCallback
from minilearn.checks import check_bool
from minilearn.data import DataLoader
# the layer below, re-exported here too: scripts written for this module import them from it
from minilearn.distributed import (
    DEFAULT_TIMEOUT, DistributedDL, broadcast_generator, check_shardable, distrib_barrier, group_size, is_rank0,
    num_distrib, rank_distrib, setup_distrib, teardown_distrib, torch_sampler,
)
from minilearn.metrics import AvgMetric, sync_metric

__all__ = [
    "DistributedDL", "DistributedTrainer", "distrib_ctx", "setup_distrib", "teardown_distrib", "rank_distrib",
    "num_distrib", "is_rank0", "distrib_barrier",
]


# ---------------------------------------------------------------- the callback
class DistributedTrainer(Callback):
    """Trains with DistributedDataParallel on the process group torchrun started (see the module's notes).

    Needs an initialised process group: use `distrib_ctx(learn)`, which sets one up, or call
    `setup_distrib()` first. `sync_loss=False` skips the all-reduce of each training batch's loss
    (one scalar a batch): the train_loss column then shows rank 0's share, and callbacks deciding
    on the loss must not stop one rank alone. Other keyword arguments go to
    `DistributedDataParallel` (e.g. `find_unused_parameters=True`).
    """

    order = 11      # after MixedPrecision (10), before the Recorder (50) reads the reduced metrics
    run_valid = False  # nothing to do per validation batch

    def __init__(self, sync_loss: bool = True, **ddp_kwargs):
        self.sync_loss, self.ddp_kwargs = check_bool("sync_loss", sync_loss), ddp_kwargs
        self.ddp: DistributedDataParallel | None = None
        self._weight = 1.0

    # -- fit: the DDP wrapper exists for the fit, and holds the Learner's model while it trains
    def before_fit(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("DistributedTrainer: no torch.distributed process group; use `with distrib_ctx(learn):` "
                               "(or call setup_distrib() first) in a script started by torchrun")
        for i, dl in enumerate(self.learn.dls.loaders):
            check_shardable(f"dls.loaders[{i}]", dl)
        model = self.learn.model
        param = next(model.parameters(), None)
        device_ids = [param.device] if param is not None and param.device.type == "cuda" else None
        # building it checks the model has the same shapes on every rank and copies rank 0's weights
        self.ddp = DistributedDataParallel(model, device_ids=device_ids, **self.ddp_kwargs)

    def before_train(self) -> None:
        self._shard(training=True)
        if self.ddp is not None:
            self.learn.model = self.ddp

    def before_batch(self) -> None:
        dl = self.learn.dl
        self._weight = dl.batch_weight(self.learn.iter) if isinstance(dl, DistributedDL) else 1.0

    def after_loss(self) -> None:
        learn = self.learn
        if learn.loss_grad is None:
            return
        if self._weight != 1.0:
            learn.loss_grad = learn.loss_grad * self._weight
        if self.sync_loss:
            loss = learn.loss.detach().float().mean() * self._weight
            dist.all_reduce(loss)  # identical on every rank, so decisions on it are too
            learn.loss = (loss / group_size()).to(learn.loss.dtype)

    def after_train(self) -> None:
        self._unwrap()
        recorder = getattr(self.learn, "recorder", None)
        if recorder is not None and getattr(recorder, "train_metrics", False):
            for m in self.learn.metrics:
                sync_metric(m)

    def before_validate(self) -> None:
        self._unwrap()
        self._shard(training=False)

    def after_validate(self) -> None:
        # every accumulator of this pass combines itself across the ranks: exact numbers everywhere
        recorder = getattr(self.learn, "recorder", None)
        if recorder is not None and isinstance(getattr(recorder, "valid_loss", None), AvgMetric):
            recorder.valid_loss.sync()
        for m in self.learn.metrics:
            sync_metric(m)
        for cb in self.learn.cbs:
            if isinstance(cb, GatherPredsCallback):
                cb.sync()

    def after_fit(self) -> None:
        self._unwrap()
        self.ddp = None
        distrib_barrier()  # a checkpoint rank 0 saved during the fit is on disk before any rank loads it

    def cleanup_fit(self) -> None:
        self._unwrap()  # also when the fit raised
        self.ddp = None

    # -- helpers
    def _unwrap(self) -> None:
        if isinstance(self.learn.model, DistributedDataParallel):
            self.learn.model = self.learn.model.module

    def _shard(self, training: bool) -> None:
        """Replace the loader of this pass by this rank's share of it."""
        dl = self.learn.dl
        if dl is None or isinstance(dl, DistributedDL):
            return
        if not isinstance(dl, DataLoader):
            raise TypeError(f"dl: expected a minilearn DataLoader to split across processes, got {type(dl).__name__}")
        check_shardable("dl", dl)
        if dl.torch_loader is not None:  # split by its DistributedSampler
            if training:
                torch_sampler(dl).set_epoch(self.learn.epoch)
            return
        broadcast_generator(dl)
        self.learn.dl = DistributedDL(dl, dist.get_rank(), dist.get_world_size(), training=training)


# ---------------------------------------------------------------- the context manager
def _learner_device(learn) -> torch.device:
    device = getattr(learn.dls, "device", None)
    if device is not None:
        return torch.device(device)
    param = next(learn.model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def distrib_ctx(learn, sync_loss: bool = True, backend: str | None = None, timeout: timedelta = DEFAULT_TIMEOUT,
                **ddp_kwargs):
    """Inside the block `learn` trains on every process torchrun started; alone, nothing changes.

    Sets up the process group if there is none (gloo on the CPU, nccl when the learner is on
    CUDA, each process then on the GPU of its `LOCAL_RANK`; it lasts until the process exits, so
    later blocks reuse it), adds a `DistributedTrainer(sync_loss, **ddp_kwargs)`, hides the table
    and bar off rank 0, and undoes that on leaving, error or not. An error is noted with the
    rank it arose on. The arguments are checked on one process too, so a typo shows before torchrun.
    """
    check_bool("sync_loss", sync_loss)
    if backend is not None and backend not in ("gloo", "nccl", "mpi", "ucc"):
        raise ValueError(f"backend: expected None, 'gloo', 'nccl', 'mpi' or 'ucc', got {backend!r}")
    if not isinstance(timeout, timedelta):
        raise TypeError(f"timeout: expected a datetime.timedelta, got {timeout!r}")
    known = set(inspect.signature(DistributedDataParallel.__init__).parameters) - {"self", "module"}
    unknown = sorted(set(ddp_kwargs) - known)
    if unknown:
        raise TypeError(f"ddp_kwargs: DistributedDataParallel takes no {unknown}")
    if num_distrib() <= 1:
        yield learn
        return
    device = _learner_device(learn)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    setup_distrib(backend, timeout)
    trainer = DistributedTrainer(sync_loss=sync_loss, **ddp_kwargs)
    quiet = contextlib.ExitStack()  # off rank 0: no table, bar or logged rows
    dls_device = getattr(learn.dls, "device", None)
    try:
        if device.type == "cuda":
            local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            learn.model.to(local)
            if dls_device is not None:
                learn.dls.to(local)
        if not is_rank0():
            quiet.enter_context(learn.no_logging())
        learn.add_cb(trainer)
        yield learn
    except BaseException as e:
        add_note(e, f"minilearn: raised on rank {rank_distrib()} of {num_distrib()}")
        raise
    finally:
        if isinstance(learn.model, DistributedDataParallel):
            learn.model = learn.model.module
        learn.remove_cb(trainer)
        quiet.close()
        if device.type == "cuda" and dls_device is not None:
            learn.dls.to(dls_device)

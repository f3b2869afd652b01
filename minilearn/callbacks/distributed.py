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
- reduces the validation loss and metrics exactly: sums and counts are all-reduced
  (`AvgMetric`, the valid loss), predictions gathered (`AccumMetric`, `get_preds`); torchmetrics
  metrics sync themselves. Other metric objects keep each rank's share, with a warning.

The guarantee. With a global batch size G (the loader's `bs`: unchanged, whatever the number of
processes N), each step trains on the global batch one process would draw, split into N
contiguous parts, one per rank; rank r's mean loss is weighted by N·n_r/b (n_r of its items in a
global batch of b), so DDP's mean of the ranks' gradients is exactly the gradient of the mean loss
over the b items. N processes therefore take the optimiser steps of one process on the same data,
seed and initial weights, up to float rounding, for any dataset size (an uneven last batch
included), provided that the loss is a mean over the batch's items (as torch's losses are by
default) and the forward pass neither draws random numbers (dropout trains correctly, but each
rank draws its own masks) nor uses batch statistics (BatchNorm sees each rank's part only;
`nn.SyncBatchNorm.convert_sync_batchnorm` fixes that on CUDA). Every rank
runs the same number of steps, as DDP requires: when a global batch has fewer items than ranks
(b < N), a rank without items trains on a copy of the batch's first item with weight 0, which
changes no gradient (but enters that rank's training metrics, if `train_metrics`).

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

import atexit
import contextlib
import math
import os
import warnings
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from minilearn.callback import Callback, GatherPredsCallback, add_note
from minilearn.callbacks.progress import ProgressCallback
from minilearn.data import DataLoader
from minilearn.metrics import AccumMetric, AvgMetric, StatefulMetric

__all__ = [
    "DistributedDL", "DistributedTrainer", "distrib_ctx", "setup_distrib", "teardown_distrib", "rank_distrib",
    "num_distrib", "is_rank0", "distrib_barrier",
]

DEFAULT_TIMEOUT = timedelta(minutes=10)


# ---------------------------------------------------------------- where this process stands
def rank_distrib() -> int:
    """This process's rank: from the process group, else torchrun's `RANK`, else 0 (fastai's name)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def num_distrib() -> int:
    """How many processes train together: the process group's size, else torchrun's `WORLD_SIZE`, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def is_rank0() -> bool:
    """True on the process that prints, draws and saves (always true for a single process)."""
    return rank_distrib() == 0


def distrib_barrier() -> None:
    """Wait until every rank gets here (nothing to do without a process group)."""
    if _group_size() > 1:
        dist.barrier()


def _group_size() -> int:
    """The process group's size, or 1 when there is none."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# ---------------------------------------------------------------- the process group
def setup_distrib(backend: str | None = None, timeout: timedelta = DEFAULT_TIMEOUT) -> bool:
    """Initialise torch.distributed from torchrun's environment; True when this call did it.

    Nothing happens for a single process or when a group already exists. `backend`: "gloo"
    (CPU), "nccl" (CUDA; each process then uses the GPU of its `LOCAL_RANK`), or None for nccl
    when CUDA is available, else gloo. A collective that waits longer than `timeout` fails
    instead of hanging. The group lasts until the process exits (or `teardown_distrib()`):
    torch.distributed cannot reliably set up a second default group in the same process.
    """
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend: expected 'gloo', 'nccl' or None, got {backend!r}")
    if not isinstance(timeout, timedelta):
        raise TypeError(f"timeout: expected a datetime.timedelta, got {type(timeout).__name__}")
    if not dist.is_available() or dist.is_initialized() or num_distrib() <= 1:
        return False
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"setup_distrib: WORLD_SIZE is {num_distrib()} but {missing} are not set; "
                           "start the script with torchrun, which sets them")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=timeout)
    atexit.register(teardown_distrib)
    return True


def teardown_distrib() -> None:
    """Destroy the process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where tensors for collectives live: the current GPU under nccl, else the CPU."""
    if "nccl" in str(dist.get_backend()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------- splitting the data
def _split_sizes(b: int, world_size: int) -> list[int]:
    """Sizes of `world_size` contiguous parts of `b` items: the first `b % world_size` get one more."""
    base, extra = divmod(b, world_size)
    return [base + (r < extra) for r in range(world_size)]


class DistributedDL:
    """Rank `rank`'s share of a minilearn `DataLoader`: all ranks together see each item once a pass.

    `training=True` (for training): the loader's own batches, in the order one process would get
    them (`dl.epoch_order()`), each split into `world_size` contiguous parts, rank r taking part r.
    Every rank yields `len(dl)` batches, so DDP's ranks step together; `batch_weight(k)` is what
    rank r's mean loss on batch k must be multiplied by for DDP's mean of gradients to be the
    global batch's gradient (1 when the batch divides evenly). A rank with no item in a batch
    (fewer items than ranks) gets a copy of the batch's first item and the weight 0.

    `training=False` (for validation): the pass's order cut into `world_size` contiguous blocks,
    rank r's block batched by ceil(bs / world_size). Ranks may run different numbers of batches
    (validation has no collective per batch), and the blocks put together in rank order are the
    original order, so gathered predictions line up with the dataset.
    """

    def __init__(self, dl: DataLoader, rank: int, world_size: int, training: bool = True):
        if not isinstance(dl, DataLoader) or dl.torch_loader is not None:
            raise TypeError(f"dl: expected a minilearn DataLoader batching its own data, got {dl!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank, world_size: expected 0 <= rank < world_size, got {rank!r}, {world_size!r}")
        self.dl, self.rank, self.world_size, self.training = dl, rank, world_size, training
        self._stop = min(dl.n, len(dl) * dl.bs)  # items in one pass (drop_last leaves the rest out)
        if training:
            self._n_batches = len(dl)
        else:
            sizes = _split_sizes(self._stop, world_size)
            self._start, self._size = sum(sizes[:rank]), sizes[rank]
            self.bs = max(1, math.ceil(dl.bs / world_size))
            self._n_batches = math.ceil(self._size / self.bs)

    def __len__(self) -> int:
        """Batches this rank runs in a pass."""
        return self._n_batches

    @property
    def device(self) -> torch.device | None:
        return self.dl.device

    @property
    def dataset(self):
        """The whole dataset (every rank holds it; each reads its share)."""
        return self.dl.dataset

    def _global_batch(self, k: int) -> tuple[int, int, int]:
        """(b, start, n): global batch k's size, and where this rank's part starts and its length."""
        bs = self.dl.bs
        b = min(bs, self._stop - k * bs)
        sizes = _split_sizes(b, self.world_size)
        return b, sum(sizes[:self.rank]), sizes[self.rank]

    def batch_weight(self, k: int) -> float:
        """The factor for this rank's mean loss on training batch `k`: world_size * n_r / b."""
        if not self.training:
            raise ValueError("batch_weight: only a training DistributedDL weights its batches")
        b, _, n = self._global_batch(k)
        return self.world_size * n / b

    def global_batch_size(self, k: int) -> int:
        """Items in training batch `k` over all ranks (the same on every rank, unlike the local size)."""
        if not self.training:
            raise ValueError("global_batch_size: only a training DistributedDL splits global batches")
        return self._global_batch(k)[0]

    def __iter__(self) -> Iterator[tuple]:
        order = self.dl.epoch_order()[: self._stop]
        if self.training:
            bs = self.dl.bs
            for k in range(self._n_batches):
                idx = order[k * bs: (k + 1) * bs]
                _, start, n = self._global_batch(k)
                yield self.dl.fetch(idx[start: start + n] if n else idx[:1])
        else:
            mine = order[self._start: self._start + self._size]
            for i in range(0, self._size, self.bs):
                yield self.dl.fetch(mine[i: i + self.bs])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.dl!r}, rank={self.rank}, world_size={self.world_size}, "
                f"training={self.training})")


# ---------------------------------------------------------------- collectives on tensors
def _sync_generator(dl) -> None:
    """Give every rank rank 0's shuffling generator, so all draw the same permutation."""
    g = getattr(dl, "generator", None)
    if g is None or not getattr(dl, "shuffle", False):
        return
    state = g.get_state().to(_comm_device())
    dist.broadcast(state, src=0)
    g.set_state(state.cpu())


def _all_gather_cat(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """Every rank's `tensors`, concatenated along dim 0 in rank order (ranks may hold none)."""
    local = torch.cat(tensors) if tensors else None
    metas: list = [None] * _group_size()
    dist.all_gather_object(metas, None if local is None else (tuple(local.shape), local.dtype, str(local.device)))
    known = [m for m in metas if m is not None]
    if not known:
        return None
    trailing, dtype = known[0][0][1:], known[0][1]
    dev = _comm_device()
    if local is not None:
        home = local.device
    else:  # a rank with nothing keeps the result where the others hold theirs: the CPU, or its own GPU
        home = torch.device("cpu") if known[0][2] == "cpu" else dev
    wire = torch.uint8 if dtype == torch.bool else dtype  # gloo has no bool
    sizes = [m[0][0] if m is not None else 0 for m in metas]
    padded = torch.zeros((max(sizes), *trailing), dtype=wire, device=dev)
    if local is not None:
        padded[: len(local)] = local.to(dev, wire)
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, sizes)]).to(home, dtype)


_warned: set[str] = set()


def _reduce_metrics(metrics: list, gather_cbs: list) -> None:
    """Make every rank's accumulators hold the whole pass: sums all-reduced, predictions gathered."""
    avg = [m for m in metrics if isinstance(m, AvgMetric)]
    if avg:
        dev = _comm_device()
        sums = torch.stack([torch.stack([torch.as_tensor(m.total).to(dev, torch.float64).reshape(()),
                                         torch.tensor(float(m.count), dtype=torch.float64, device=dev)])
                            for m in avg])
        dist.all_reduce(sums)
        for m, (total, count) in zip(avg, sums.cpu().tolist()):
            m.total, m.count = total, int(round(count))
    for m in metrics:
        if isinstance(m, AvgMetric):
            continue
        if isinstance(m, AccumMetric):
            preds, targs = _all_gather_cat(m.preds), _all_gather_cat(m.targs)
            m.preds, m.targs = ([preds], [targs]) if preds is not None else ([], [])
        elif isinstance(m, StatefulMetric) and getattr(m.metric, "sync_on_compute", False):
            pass  # torchmetrics gathers its states across ranks in compute()
        elif m.name not in _warned:
            _warned.add(m.name)
            warnings.warn(f"metric {m.name!r}: minilearn cannot combine its state across processes, so each "
                          "rank reports its own share of the data; use a function f(pred, targ), AccumMetric "
                          "or a torchmetrics metric", RuntimeWarning, stacklevel=2)
    for cb in gather_cbs:
        preds, targs = _all_gather_cat(cb.preds), _all_gather_cat(cb.targs)
        cb.preds = [preds] if preds is not None else []
        cb.targs = [targs] if targs is not None else []


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
        if not isinstance(sync_loss, bool):
            raise TypeError(f"sync_loss: expected True or False, got {sync_loss!r}")
        self.sync_loss, self.ddp_kwargs = sync_loss, ddp_kwargs
        self.ddp: DistributedDataParallel | None = None
        self._weight = 1.0

    # -- fit: the DDP wrapper exists for the fit, and holds the Learner's model while it trains
    def before_fit(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("DistributedTrainer: no torch.distributed process group; use `with distrib_ctx(learn):` "
                               "(or call setup_distrib() first) in a script started by torchrun")
        for i, dl in enumerate(self.learn.dls.loaders):
            _check_shardable(f"dls.loaders[{i}]", dl)
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
            learn.loss = (loss / _group_size()).to(learn.loss.dtype)

    def after_train(self) -> None:
        self._unwrap()
        recorder = getattr(self.learn, "recorder", None)
        if recorder is not None and getattr(recorder, "train_metrics", False):
            _reduce_metrics(list(self.learn.metrics), [])

    def before_validate(self) -> None:
        self._unwrap()
        self._shard(training=False)

    def after_validate(self) -> None:
        recorder = getattr(self.learn, "recorder", None)
        losses = [recorder.valid_loss] if recorder is not None and isinstance(getattr(recorder, "valid_loss", None),
                                                                              AvgMetric) else []
        gathers = [cb for cb in self.learn.cbs if isinstance(cb, GatherPredsCallback)]
        _reduce_metrics(losses + list(self.learn.metrics), gathers)

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
        _check_shardable("dl", dl)
        if dl.torch_loader is not None:  # split by its DistributedSampler
            if training:
                _torch_sampler(dl).set_epoch(self.learn.epoch)
            return
        _sync_generator(dl)
        self.learn.dl = DistributedDL(dl, dist.get_rank(), dist.get_world_size(), training=training)


def _torch_sampler(dl: DataLoader):
    """The sampler that orders a wrapped torch DataLoader's items."""
    tl = dl.torch_loader
    sampler = getattr(tl.batch_sampler, "sampler", None)
    return sampler if sampler is not None else tl.sampler


def _check_shardable(name: str, dl) -> None:
    """A minilearn loader splits itself; a wrapped torch one must bring a DistributedSampler."""
    if isinstance(dl, DataLoader) and dl.torch_loader is not None and \
            not isinstance(_torch_sampler(dl), torch.utils.data.DistributedSampler):
        raise ValueError(
            f"{name}: a wrapped torch DataLoader cannot be split across processes by minilearn; build it with "
            "sampler=torch.utils.data.DistributedSampler(dataset) (the trainer calls its set_epoch; it pads the last "
            "batch with repeats, so its metrics are not exact), or pass the dataset to DataLoaders.from_dsets")


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
    rank it arose on.
    """
    if num_distrib() <= 1:
        yield learn
        return
    device = _learner_device(learn)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    setup_distrib(backend, timeout)
    trainer = DistributedTrainer(sync_loss=sync_loss, **ddp_kwargs)
    hidden = [cb for cb in learn.cbs if isinstance(cb, ProgressCallback)] if not is_rank0() else []
    dls_device = getattr(learn.dls, "device", None)
    try:
        if device.type == "cuda":
            local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            learn.model.to(local)
            if dls_device is not None:
                learn.dls.to(local)
        learn.remove_cbs(hidden)
        learn.add_cb(trainer)
        yield learn
    except BaseException as e:
        add_note(e, f"minilearn: raised on rank {rank_distrib()} of {num_distrib()}")
        raise
    finally:
        if isinstance(learn.model, DistributedDataParallel):
            learn.model = learn.model.module
        learn.remove_cb(trainer)
        learn.add_cbs(hidden)
        if device.type == "cuda" and dls_device is not None:
            learn.dls.to(dls_device)

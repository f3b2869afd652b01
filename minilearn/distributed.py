"""Several processes through torch.distributed, without the Learner: where this process stands,
the process group, each rank's share of a loader, and the collectives metrics use.

    torchrun --nproc_per_node 2 train.py

Everything here works on plain torch objects and minilearn loaders; `minilearn.callbacks.distributed`
builds the training side on it (`DistributedTrainer`, `distrib_ctx`). Run as a single process,
the rank helpers answer "rank 0 of 1" and nothing waits.

How the data is split (`DistributedDL`). With a global batch size G (the loader's `bs`: unchanged,
whatever the number of processes N), each training step draws the global batch one process
would draw, split into N contiguous parts, one per rank; rank r's mean loss is to be weighted by
N·n_r/b (n_r of its items in a global batch of b, see `batch_weight`), so DDP's mean of the ranks'
gradients is exactly the gradient of the mean loss over the b items. Every rank yields the same
number of training batches, as DDP requires: when a global batch has fewer items than ranks
(b < N), a rank without items gets a copy of the batch's first item with weight 0. Validation
cuts the pass's order into N contiguous blocks, so gathered predictions line up with the dataset.
"""

from __future__ import annotations

import atexit
import math
import os
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from minilearn.data import DataLoader

__all__ = [
    "DistributedDL", "setup_distrib", "teardown_distrib", "rank_distrib", "num_distrib", "is_rank0",
    "distrib_barrier", "group_size", "all_gather_cat", "all_reduce_sum", "broadcast_generator", "check_shardable",
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
    if group_size() > 1:
        dist.barrier()


def group_size() -> int:
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


def comm_device() -> torch.device:
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
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[tuple]:
        """This rank's batches of the pass from batch `first` on, those before never fetched (the
        order drawn as for a whole pass; a run resumed mid-epoch). Training passes only."""
        if first and not self.training:
            raise ValueError("first: a validation pass always starts at its first batch")
        order = self.dl.epoch_order()[: self._stop]
        if self.training:
            bs = self.dl.bs
            for k in range(first, self._n_batches):
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


# ---------------------------------------------------------------- loaders wrapping torch's
def torch_sampler(dl: DataLoader):
    """The sampler that orders a wrapped torch DataLoader's items."""
    tl = dl.torch_loader
    sampler = getattr(tl.batch_sampler, "sampler", None)
    return sampler if sampler is not None else tl.sampler


def check_shardable(name: str, dl) -> None:
    """A minilearn loader splits itself; a wrapped torch one must bring a DistributedSampler."""
    if isinstance(dl, DataLoader) and dl.torch_loader is not None and \
            not isinstance(torch_sampler(dl), torch.utils.data.DistributedSampler):
        raise ValueError(
            f"{name}: a wrapped torch DataLoader cannot be split across processes by minilearn; build it with "
            "sampler=torch.utils.data.DistributedSampler(dataset) (the trainer calls its set_epoch; it pads the last "
            "batch with repeats, so its metrics are not exact), or pass the dataset to DataLoaders.from_dsets")


# ---------------------------------------------------------------- collectives on tensors
def broadcast_generator(dl) -> None:
    """Give every rank rank 0's shuffling generator, so all draw the same permutation."""
    g = getattr(dl, "generator", None)
    if g is None or not getattr(dl, "shuffle", False):
        return
    state = g.get_state().to(comm_device())
    dist.broadcast(state, src=0)
    g.set_state(state.cpu())


def all_gather_object(obj) -> list:
    """Every rank's `obj` (any picklable value), in rank order."""
    out: list = [None] * group_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_cat(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """Every rank's `tensors`, concatenated along dim 0 in rank order (ranks may hold none)."""
    local = torch.cat(tensors) if tensors else None
    metas = all_gather_object(None if local is None else (tuple(local.shape), local.dtype, str(local.device)))
    known = [m for m in metas if m is not None]
    if not known:
        return None
    trailing, dtype = known[0][0][1:], known[0][1]
    dev = comm_device()
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


def all_reduce_sum(*values) -> list[float]:
    """Each of `values` (numbers or one-element tensors) added up over every rank, in float64; as floats."""
    dev = comm_device()
    sums = torch.stack([torch.as_tensor(v).to(dev, torch.float64).reshape(()) for v in values])
    dist.all_reduce(sums)
    return sums.cpu().tolist()

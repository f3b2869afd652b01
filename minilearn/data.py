"""Batching data for training: `DataLoader` and `DataLoaders`, fastai's names over plain torch.

One batching path serves tensors and map-style datasets alike: each pass draws an order
(`epoch_order()`: a permutation from the loader's generator, or 0..n-1) and fetches every run of
`bs` indices of it (`fetch(idx)`); `minilearn.distributed` shards a pass by calling the same two.
Tensors held in memory (the common case: fastbook chapter 4's MNIST sample) are fetched by
indexing every tensor with the run, not item by item, which is what makes a small model train at
the speed of a hand-written loop; an in-order pass indexes with plain slices, so its batches are
views. A map-style dataset's items are fetched by index and joined by a collate function.

A torch `DataLoader` is accepted as well, so nothing has to be rewritten to use minilearn:
`DataLoader(torch_dl)` builds a `TorchLoader`, the subclass that iterates the torch loader as it
is (its sampler decides the order).
"""

import itertools
import math
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import IterableDataset, RandomSampler, TensorDataset, default_collate

from minilearn.checks import check_bool, check_callable, check_device, check_int
from minilearn.torch_basics import _move, _non_blocking, to_device  # to_device: still importable from here

__all__ = ["to_device", "DataLoader", "TfmdDL", "TorchLoader", "DataLoaders"]

_ACCEPTED = (
    "a tensor, a tuple/list of tensors of equal length, a TensorDataset, a map-style dataset "
    "(with __len__ and __getitem__, e.g. a list of (x, y) tuples) or a torch DataLoader"
)
_ACCEPTED_DATASET = "a map-style dataset (with __len__ and __getitem__) or a TensorDataset"


# -- checking a loader's arguments (before any work)

DEFAULT_BS = 64  # fastai's: the batch size when neither `bs` nor `batch_size` is given



def _given_bs(bs: Any, batch_size: Any) -> tuple[str, int | None]:
    """The batch size the caller gave and the name it was given under: `bs`, or its alias
    `batch_size` (torch's name); None (under "bs") when neither was given."""
    if bs is not None:
        bs = check_int("bs", bs, 1)
    if batch_size is None:
        return "bs", bs
    batch_size = check_int("batch_size", batch_size, 1)
    if bs is not None and bs != batch_size:
        raise ValueError(f"bs and batch_size are the same setting; give one, got bs={bs} and batch_size={batch_size}")
    return "batch_size", batch_size


def _check_options(shuffle: Any, drop_last: Any, seed: Any, generator: Any, collate_fn: Any) -> int | None:
    """Check the options every loader takes, naming the bad one; returns `seed` as an int (or None)."""
    check_bool("shuffle", shuffle)
    check_bool("drop_last", drop_last)
    if seed is not None:
        seed = check_int("seed", seed)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator: must be a CPU generator (permutations are drawn on the CPU), got one on {generator.device}")
        if seed is not None:
            raise ValueError("seed and generator: give one or the other, not both")
    if collate_fn is not None:
        check_callable("collate_fn", collate_fn, "a callable or None")
    return seed


def _tensors_of(data: Any) -> tuple | None:
    """The tensors batched by indexing when `data` is a tensor, a TensorDataset or a tuple/list
    holding tensors; None for anything else (a map-style dataset, or bad input)."""
    if isinstance(data, torch.Tensor):
        return (data,)
    if isinstance(data, TensorDataset):
        return tuple(data.tensors)
    if isinstance(data, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in data):
        return tuple(data)
    return None


def _check_tensors(name: str, tensors: tuple) -> int:
    """Check `tensors` can be batched together and return their common length."""
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            kinds = ", ".join(type(o).__name__ for o in tensors)
            raise TypeError(f"{name}: a tuple/list of tensors must hold only tensors, got ({kinds})")
        if t.dim() == 0:
            raise ValueError(f"{name}: tensors need at least one dimension to batch along, got a 0-d tensor")
    lengths = [t.shape[0] for t in tensors]
    if len(set(lengths)) > 1:
        raise ValueError(f"{name}: tensors must have the same length along dim 0, got {lengths}")
    devices = list(dict.fromkeys(t.device for t in tensors))
    if len(devices) > 1:
        # one permutation is indexed into every tensor, so it can only live on one device
        raise ValueError(f"{name}: tensors must be on the same device, got {[str(d) for d in devices]}")
    return lengths[0]


def _check_data(name: str, data: Any, accepted: str) -> tuple[tuple | None, int]:
    """`data`'s tensors (None for a map-style dataset) and its number of items, checked non-empty."""
    tensors = _tensors_of(data)
    if tensors is not None:
        n = _check_tensors(name, tensors)
    else:
        # str/bytes/dict have __len__ and __getitem__ but are not datasets indexed 0..n-1
        not_a_dataset = isinstance(data, (str, bytes, dict, IterableDataset))
        if not_a_dataset or not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            raise TypeError(f"{name}: expected {accepted}; got {type(data).__name__}")
        n = len(data)
    if n == 0:
        raise ValueError(f"{name}: the dataset is empty (0 items)")
    return tensors, n


def _check_xy(x_name: str, y_name: str, x: Any, y: Any) -> None:
    """Check `x` and `y` are tensors of the same length, naming them in the error."""
    for name, t in ((x_name, x), (y_name, y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise ValueError(f"{name}: expected a tensor with at least one dimension, got a 0-d tensor")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x_name} and {y_name}: must have the same length, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{x_name} and {y_name}: are empty (0 items)")


# -- small helpers of the batching path


def _new_generator(seed: int | None, draw_from_global: bool) -> torch.Generator:
    """A CPU generator for shuffling: seeded with `seed`, else from the global RNG when asked."""
    g = torch.Generator()
    if seed is not None:
        g.manual_seed(seed)
    elif draw_from_global:
        # Drawing the seed from torch's global RNG makes an unseeded loader random per process
        # yet reproducible after `torch.manual_seed(...)`, while later epochs use only `g`.
        g.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    return g


def _as_tuple(b: Any) -> tuple:
    """Make a batch a tuple: collate functions return lists for tuples of items."""
    if isinstance(b, tuple):
        return b
    if isinstance(b, list):
        return tuple(b)
    return (b,)


class _InOrder:
    """The order 0, 1, ..., n-1 as slices (`_IN_ORDER[i:j]` is `slice(i, j)`): tensors indexed by
    a slice give a view, not a copy, so an in-order pass copies nothing."""

    def __getitem__(self, run: slice) -> slice:
        return run


_IN_ORDER = _InOrder()


# -- the loaders


class _PicksItsClass:
    """DataLoader's base, holding only `__new__`: `DataLoader(torch_dl, ...)` builds a `TorchLoader`
    (as `pathlib.Path(...)` builds a `PosixPath`). It is not on DataLoader itself so that
    `inspect.signature(DataLoader)` (a notebook's help) shows `__init__`'s arguments."""

    def __new__(cls, data: Any = None, *args: Any, **kwargs: Any) -> "DataLoader":
        if cls is DataLoader and isinstance(data, TorchDataLoader):
            cls = TorchLoader
        return super().__new__(cls)


class DataLoader(_PicksItsClass):
    """Iterate over data in batches of `bs` tuples, optionally shuffled and moved to `device`.

    `data` may be:
    - a tensor or a tuple/list of tensors of equal length (e.g. `(x, y)`), or a `TensorDataset`:
      the fast path. A batch is `tuple(t[idx] for t in data)` for a run `idx` of the pass's order.
      Unshuffled batches are plain slices, i.e. *views* of the data: change them out of place
      (`xb = xb * 2`), not in place (`xb *= 2`).
    - any other map-style dataset (`__len__` and `__getitem__`, such as fastbook's
      `list(zip(x, y))`): items are fetched by index and joined by `collate_fn`
      (`torch.utils.data.default_collate` by default).
    - a torch `DataLoader`: `DataLoader(torch_dl)` returns a `TorchLoader` (a subclass; see there).

    Each pass draws `epoch_order()` and yields `fetch` of each run of `bs` indices of it (the last
    run shorter, or left out with `drop_last`). Shuffling uses the loader's own CPU
    `torch.Generator` (`generator`, else one seeded with `seed`, else one seeded from torch's
    global RNG when the loader is built), so a seed gives the same batches every run while each
    epoch still gets a new order. An unshuffled loader leaves the global RNG untouched, so
    building it does not shift a model's random init.
    `bs` is 64 (fastai's default) unless given, as `bs` or as its alias `batch_size` (torch's
    name); giving both with different values is an error.
    """

    def __init__(
        self,
        data: Any,
        bs: int | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        collate_fn: Callable[[list], Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        # -- check every argument before doing any work
        bs_name, bs = _given_bs(bs, batch_size)
        seed = _check_options(shuffle, drop_last, seed, generator, collate_fn)
        device = check_device("device", device)
        self._setup(data, bs_name, bs, shuffle, drop_last, seed, generator, collate_fn)
        self.device = device

    def _setup(self, data: Any, bs_name: str, bs: int | None, shuffle: bool, drop_last: bool, seed: int | None,
               generator: torch.Generator | None, collate_fn: Callable | None) -> None:
        """Check `data` (the other arguments are checked) and set up to batch it (`bs` None: 64)."""
        bs = DEFAULT_BS if bs is None else bs
        tensors, n = _check_data("data", data, _ACCEPTED)
        if tensors is not None and collate_fn is not None:
            raise ValueError(
                "collate_fn: tensors are batched by indexing and never collated; "
                "pass a map-style dataset (e.g. list(zip(x, y))) to use a collate_fn"
            )
        n_batches = n // bs if drop_last else math.ceil(n / bs)
        if n_batches == 0:
            raise ValueError(f"drop_last: with {n} items and bs={bs} every item is dropped; lower bs or set drop_last=False")

        self._tensors = tensors  # None for a map-style dataset
        # a tensor gives (tensor,), a list of tensors a tuple; a TensorDataset or another dataset stays as given
        self.dataset = tensors if tensors is not None and not isinstance(data, TensorDataset) else data
        self._data_device = tensors[0].device if tensors is not None else None
        self._collate = collate_fn if collate_fn is not None else default_collate
        self.n, self.bs, self.shuffle, self.drop_last = n, bs, shuffle, drop_last
        self.generator = generator if generator is not None else _new_generator(seed, draw_from_global=shuffle)
        self._n_batches = n_batches
        self._stop = n_batches * bs  # runs of the order start at 0, bs, 2*bs, ... below this

    @property
    def device(self) -> torch.device | None:
        """Where batches are moved to (None: leave them where the data is)."""
        return self._device

    @device.setter
    def device(self, device: torch.device | str | None) -> None:
        self._device = check_device("device", device)
        # decided here, once, so that each batch only asks "move or not": tensors already on
        # `device` stay put, a dataset's collated batches (whose device is unknown) are moved
        self._move_to = None if self._device == self._data_device else self._device
        self._non_blocking = self._move_to is not None and _non_blocking(self._move_to)

    @property
    def torch_loader(self) -> TorchDataLoader | None:
        """The wrapped torch DataLoader (a `TorchLoader`'s), or None when minilearn batches the data itself."""
        return None

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return self._n_batches

    def __iter__(self) -> Iterator[tuple]:
        """Yield one epoch of batches (tuples), every item once unless `drop_last` cuts the remainder."""
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[tuple]:
        """The pass's batches from batch `first` on: the order drawn as for a whole pass, the
        batches before `first` never fetched (a run resumed mid-epoch, see BackupCallback)."""
        order, bs = self._pass_order(), self.bs
        for i in range(first * bs, self._stop, bs):
            yield self._batch(order[i : i + bs])

    # -- the batching path, public for splitting a pass across processes (minilearn.distributed)
    def epoch_order(self) -> torch.Tensor:
        """One pass's item order, drawn as `iter(self)` draws it: a permutation from `generator`
        when shuffling (advancing it, as an epoch does), else 0..n-1. Batch k is the k-th run of
        `bs` indices; `len(self)` batches, so `drop_last` leaves the remainder out."""
        if self.shuffle:
            return torch.randperm(self.n, generator=self.generator)
        return torch.arange(self.n)

    def fetch(self, idx: torch.Tensor) -> tuple:
        """The batch of the items at indices `idx` (a 1-d int64 tensor, on any device), as a tuple on `device`."""
        return self._batch(self._as_index(idx))

    def _as_index(self, idx: torch.Tensor) -> torch.Tensor | list[int]:
        """`idx` in the form `_batch` takes: on the tensors' device, or a list of ints for a dataset."""
        return idx.to(self._data_device) if self._tensors is not None else idx.tolist()

    def _pass_order(self) -> torch.Tensor | list[int] | range | _InOrder:
        """This pass's `epoch_order()` in the form `_batch` takes, converted once per pass, not per batch."""
        if self.shuffle:
            # the permutation goes to the tensors' device here, so no batch copies an index
            return self._as_index(self.epoch_order())
        # in order: plain slices, so tensor batches are views of the data
        return _IN_ORDER if self._tensors is not None else range(self.n)

    def _batch(self, idx: Any) -> tuple:
        """The batch at `idx` (from `_as_index`, or a run of `_pass_order()`) as a tuple on `device`.

        This is the hot loop: all the deciding (which data, whether to move) was done before."""
        move = self._move_to
        if self._tensors is not None:
            b = tuple([t[idx] for t in self._tensors])
            return b if move is None else tuple([t.to(move, non_blocking=self._non_blocking) for t in b])
        b = _as_tuple(self._collate([self.dataset[j] for j in idx]))
        return b if move is None else _move(b, move, self._non_blocking)

    def new(self, shuffle: bool | None = None, drop_last: bool | None = None, bs: int | None = None) -> "DataLoader":
        """A loader over the same data with the settings given changed (fastai's `dl.new`), e.g. an
        in-order pass for predictions; a shuffled one shares this loader's generator."""
        shuffle = self.shuffle if shuffle is None else check_bool("shuffle", shuffle)
        collate = None if self._tensors is not None or self._collate is default_collate else self._collate
        return DataLoader(self.dataset, bs=self.bs if bs is None else bs, shuffle=shuffle,
                          drop_last=self.drop_last if drop_last is None else drop_last,
                          generator=self.generator if shuffle else None, device=self.device, collate_fn=collate)

    def one_batch(self) -> tuple:
        """The first batch of a fresh epoch, leaving the shuffling generator where it was.

        Peeking at a batch thus does not change the training order (a wrapped torch DataLoader
        built without a generator still draws its order from the global RNG).
        """
        state = self.generator.get_state() if self.generator is not None else None
        try:
            return next(iter(self))
        finally:
            if state is not None:
                self.generator.set_state(state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.n}, bs={self.bs}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, device={self._device})"
        )


class TorchLoader(DataLoader):
    """A torch `DataLoader` as a minilearn one: what `DataLoader(torch_dl, ...)` returns.

    The torch loader is iterated as it is (its sampler decides the order, its `batch_size`,
    `drop_last`, `collate_fn` and workers are used) and each batch is made a tuple and moved to
    `device`. It takes DataLoader's arguments so `DataLoader(torch_dl, device=...)` works; the
    settings the torch loader owns (shuffle, seed, generator, collate_fn, a different batch size,
    drop_last) are errors. `bs`, `shuffle`, `drop_last`, `generator`, `dataset` and `n` are read from
    it; `torch_loader` is it. It has no `epoch_order` / `fetch`: its sampler orders and fetches.
    """

    def _setup(self, data: TorchDataLoader, bs_name: str, given_bs: int | None, shuffle: bool, drop_last: bool,
               seed: int | None, generator: torch.Generator | None, collate_fn: Callable | None) -> None:
        """Check what the torch loader owns against the arguments, and take its settings."""
        if not isinstance(data, TorchDataLoader):
            raise TypeError(f"data: expected a torch DataLoader, got {type(data).__name__}")
        dl = data
        if shuffle or seed is not None or generator is not None:
            raise ValueError(
                "shuffle, seed and generator: a torch DataLoader's own sampler decides the order; "
                "build it with shuffle=True (and its generator=) instead"
            )
        if collate_fn is not None:
            raise ValueError("collate_fn: a torch DataLoader collates with its own collate_fn")
        if given_bs is not None and given_bs != dl.batch_size:
            raise ValueError(f"{bs_name}: a torch DataLoader sets its own batch_size ({dl.batch_size}), got {bs_name}={given_bs}")
        if drop_last and not dl.drop_last:
            raise ValueError("drop_last: a torch DataLoader sets its own drop_last (False); build it with drop_last=True")
        try:
            n, n_batches = len(dl.dataset), len(dl)
        except TypeError as e:
            raise TypeError(
                f"data: the torch DataLoader's dataset ({type(dl.dataset).__name__}) has no length; "
                "minilearn needs the number of batches per epoch"
            ) from e
        if n == 0:
            raise ValueError("data: the torch DataLoader's dataset is empty (0 items)")
        if n_batches == 0:
            raise ValueError(f"data: the torch DataLoader yields no batches ({n} items, batch_size={dl.batch_size}, drop_last=True)")

        self._loader, self.dataset, self.n, self._n_batches = dl, dl.dataset, n, n_batches
        # batch_size is None for a loader built with its own batch_sampler (or without batching)
        self.bs = dl.batch_size
        self.drop_last = dl.drop_last
        sampler = getattr(dl.batch_sampler, "sampler", dl.sampler)
        self.shuffle = isinstance(sampler, RandomSampler)
        self.generator = dl.generator
        self._data_device = None  # the torch loader's batches may land anywhere: move them when asked

    @property
    def torch_loader(self) -> TorchDataLoader:
        """The wrapped torch DataLoader."""
        return self._loader

    def __iter__(self) -> Iterator[tuple]:
        """Iterate the wrapped torch DataLoader, making batches tuples on `device`."""
        for b in self._loader:
            b = _as_tuple(b)
            yield b if self._move_to is None else _move(b, self._move_to, self._non_blocking)

    def batches_from(self, first: int) -> Iterator[tuple]:
        """The pass's batches from batch `first` on: the torch loader's own, the first ones read and
        dropped (its sampler decides the order, so they cannot be skipped unread)."""
        return itertools.islice(iter(self), first, None)

    def epoch_order(self) -> torch.Tensor:
        """Not available: a torch DataLoader's own sampler decides its order."""
        raise TypeError("epoch_order: a wrapped torch DataLoader's own sampler decides its order")

    def new(self, shuffle: bool | None = None, drop_last: bool | None = None, bs: int | None = None) -> "DataLoader":
        """Not available: a torch DataLoader's settings are its own (build another one)."""
        raise TypeError("new: a wrapped torch DataLoader's sampler and batch size are its own; build a new one")

    def fetch(self, idx: torch.Tensor) -> tuple:
        """Not available: a torch DataLoader fetches its own batches."""
        raise TypeError("fetch: a wrapped torch DataLoader fetches its own batches")


# fastai's name for its loader with item and batch transforms; minilearn's DataLoader is that
# loader (it takes fastai's `bs`, `shuffle`, `drop_last`), so code written with it runs
TfmdDL = DataLoader


def inputs_of(n_elements: int) -> int:
    """fastai's rule for how many of a batch's `n_elements` are inputs: all but the last (the
    target), and the only one of a one-element batch."""
    return 1 if n_elements <= 1 else n_elements - 1


def _n_elements(dl: DataLoader) -> int | None:
    """How many elements `dl`'s batches have, read off its data without fetching a batch; None
    when only a batch would tell (an iterable dataset, a dataset without items)."""
    tensors = getattr(dl, "_tensors", None)  # a TorchLoader has none: its dataset tells
    if tensors is not None:
        return len(tensors)
    ds = dl.dataset
    if isinstance(ds, TensorDataset):
        return len(ds.tensors)
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__") or not len(ds):
        return None
    item = ds[0]
    return len(item) if isinstance(item, (tuple, list)) else 1


def as_loader(name: str, dl: Any) -> DataLoader:
    """Return `dl` as a minilearn DataLoader, wrapping a torch one in a `TorchLoader`."""
    if isinstance(dl, DataLoader):
        return dl
    if isinstance(dl, TorchDataLoader):
        return TorchLoader(dl)
    raise TypeError(f"{name}: expected a minilearn or torch DataLoader, got {type(dl).__name__}")


class DataLoaders:
    """A train loader and optional validation (and more) loaders, as fastai's `DataLoaders(train, valid)`.

    `vocab`: the class names, index i naming class i (fastai's `dls.vocab`; `dls.c` is their
    number), which `learn.predict` uses to name its decoded prediction.
    """

    def __init__(self, *loaders: DataLoader | TorchDataLoader, device: torch.device | str | None = None,
                 vocab=None, n_inp: int | None = None) -> None:
        if not loaders:
            raise ValueError("loaders: expected at least one DataLoader (the training one), got none")
        device = check_device("device", device)
        self.n_inp = n_inp
        if vocab is not None and (isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__len__")):
            raise TypeError(f"vocab: expected a list of class names, got {type(vocab).__name__}")
        self.vocab = list(vocab) if vocab is not None else None
        self.loaders: list[DataLoader] = [as_loader(f"loaders[{i}]", dl) for i, dl in enumerate(loaders)]
        self._device = device
        if device is not None:
            for dl in self.loaders:
                dl.device = device

    @property
    def n_inp(self) -> int | None:
        """How many leading elements of a batch are the model's inputs; the rest are its targets.

        Unless set (`DataLoaders(..., n_inp=2)` or `dls.n_inp = 2`), fastai's rule: every element
        but the last, and a one-element batch is all input. The rule is read off the training
        data without drawing a batch (so no random number is used): the number of tensors, or the
        first item of a map-style dataset. None when that cannot be known (an iterable dataset);
        the Learner then applies the rule to the first batch of each fit or prediction pass.
        """
        if self._n_inp is not None:
            return self._n_inp
        n = _n_elements(self.train)
        return None if n is None else inputs_of(n)

    @n_inp.setter
    def n_inp(self, n: int | None) -> None:
        self._n_inp = None if n is None else check_int("n_inp", n, low=1)

    @property
    def train(self) -> DataLoader:
        """The training loader (the first one)."""
        return self.loaders[0]

    @property
    def valid(self) -> DataLoader | None:
        """The validation loader (the second one), or None when there is none."""
        return self.loaders[1] if len(self.loaders) > 1 else None

    @property
    def train_ds(self) -> Any:
        """The training loader's dataset."""
        return self.train.dataset

    @property
    def valid_ds(self) -> Any:
        """The validation loader's dataset, or None when there is no validation loader."""
        return self.valid.dataset if self.valid is not None else None

    @property
    def device(self) -> torch.device | None:
        """The device given, else the training loader's device, else None."""
        return self._device if self._device is not None else self.train.device

    @device.setter
    def device(self, device: torch.device | str | None) -> None:
        self.to(device)

    def to(self, device: torch.device | str | None) -> "DataLoaders":
        """Send every loader's batches to `device` (as fastai's `dls.to`); returns self."""
        device = check_device("device", device)
        self._device = device
        for dl in self.loaders:
            dl.device = device
        return self

    def __getitem__(self, i: int) -> DataLoader:
        """The `i`-th loader: `dls[0]` is train, `dls[1]` is valid, as in fastai."""
        return self.loaders[i]

    def __len__(self) -> int:
        """Number of loaders."""
        return len(self.loaders)

    def check_alike(self) -> None:
        """Raise, before a fit trains, if another loader's items differ in shape from the training
        loader's (known without drawing a batch for tensors held in memory): a validation set with
        another feature count would otherwise fail only after a whole epoch."""
        ref = getattr(self.train, "_tensors", None)
        for i, dl in enumerate(self.loaders[1:], 1):
            other = getattr(dl, "_tensors", None)
            if ref is None or other is None or len(other) != len(ref):
                continue
            for k, (a, b) in enumerate(zip(ref, other)):
                if a.shape[1:] != b.shape[1:]:
                    raise ValueError(f"dls: loader {i}'s element {k} has items of shape {tuple(b.shape[1:])}, the "
                                     f"training loader's {tuple(a.shape[1:])}")

    def one_batch(self) -> tuple:
        """The first batch of the training loader, to look at shapes or try a model."""
        return self.train.one_batch()

    @property
    def c(self) -> int | None:
        """The number of classes (the vocab's length), or None without a vocab."""
        return len(self.vocab) if self.vocab is not None else None

    def test_dl(self, items, bs: int | None = None) -> DataLoader:
        """A loader for new data, batched as the validation loader (in order, on the loaders'
        device): a tensor of inputs needs no labels; a tuple (x, y) or a dataset works too. For
        DataLoaders built from files, a list of image paths (or a folder) gives their images, with
        the validation set's transforms (`data_files.test_dl`)."""
        if self._files is not None:
            from minilearn import data_files  # imported here: data_files imports this module

            if data_files.is_file_list(items):
                return data_files.test_dl(self, items, bs)
        ref = self.valid if self.valid is not None else self.train
        bs = bs if bs is not None else (ref.bs if ref.bs is not None else DEFAULT_BS)
        return DataLoader(items, bs=bs, shuffle=False, device=self.device)

    def __repr__(self) -> str:
        inner = ", ".join(repr(dl) for dl in self.loaders)
        return f"{type(self).__name__}({inner})"

    @classmethod
    def from_tensors(
        cls,
        x: torch.Tensor,
        y: torch.Tensor,
        valid_x: torch.Tensor | None = None,
        valid_y: torch.Tensor | None = None,
        bs: int = 64,
        val_bs: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
        device: torch.device | str | None = None,
        vocab=None,
    ) -> "DataLoaders":
        """Loaders over in-memory tensors: a shuffled train loader and an ordered valid loader."""
        _check_xy("x", "y", x, y)
        if (valid_x is None) != (valid_y is None):
            given, missing = ("valid_x", "valid_y") if valid_y is None else ("valid_y", "valid_x")
            raise ValueError(f"{missing}: {given} was given without {missing}; pass both or neither")
        if valid_x is not None:
            _check_xy("valid_x", "valid_y", valid_x, valid_y)
            if valid_x.shape[1:] != x.shape[1:]:
                raise ValueError(f"valid_x: its items have shape {tuple(valid_x.shape[1:])}, the training items "
                                 f"(x) {tuple(x.shape[1:])}")
        bs = check_int("bs", bs, 1)
        val_bs = bs if val_bs is None else check_int("val_bs", val_bs, 1)
        check_device("device", device)
        train = DataLoader((x, y), bs=bs, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device)
        if valid_x is None:
            return cls(train, device=device, vocab=vocab)
        # validation sees every item, in order, so its numbers are exact and comparable run to run
        valid = DataLoader((valid_x, valid_y), bs=val_bs, shuffle=False, drop_last=False, device=device)
        return cls(train, valid, device=device, vocab=vocab)

    @classmethod
    def from_dsets(
        cls,
        train_ds: Any,
        valid_ds: Any = None,
        bs: int = 64,
        val_bs: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
        device: torch.device | str | None = None,
        collate_fn: Callable[[list], Any] | None = None,
        vocab=None,
    ) -> "DataLoaders":
        """Loaders over map-style datasets (or TensorDatasets): shuffled train, ordered valid."""
        bs = check_int("bs", bs, 1)
        val_bs = bs if val_bs is None else check_int("val_bs", val_bs, 1)
        check_device("device", device)
        for name, ds in (("train_ds", train_ds), ("valid_ds", valid_ds)):
            if isinstance(ds, TorchDataLoader):
                raise TypeError(f"{name}: expected a dataset, got a torch DataLoader; pass it to DataLoaders(...) instead")
        # both checked before a loader is built, so bad input fails before any work
        _check_data("train_ds", train_ds, _ACCEPTED_DATASET)
        if valid_ds is not None:
            _check_data("valid_ds", valid_ds, _ACCEPTED_DATASET)
        train = DataLoader(train_ds, bs=bs, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device, collate_fn=collate_fn)
        if valid_ds is None:
            return cls(train, device=device, vocab=vocab)
        valid = DataLoader(valid_ds, bs=val_bs, shuffle=False, drop_last=False, device=device, collate_fn=collate_fn)
        return cls(train, valid, device=device, vocab=vocab)

    # -- data from files: thin entry points into minilearn.data_files (imported when called, as it imports this module)

    _files = None  # set by data_files on DataLoaders built from files: their transforms, for test_dl
    skipped: tuple | list = ()  # the bad files skipped with skip_bad=True (DataLoaders built from files)

    @classmethod
    def from_folder(cls, path, train: str = "train", valid: str = "valid", valid_pct: float | None = None,
                    seed: int | None = None, vocab=None, item_tfms=None, batch_tfms=None, bs: int = 64,
                    val_bs: int | None = None, shuffle: bool = True, num_workers: int | None = None,
                    device: torch.device | str | None = None, pos_label=None, skip_bad: bool = False,
                    splitter: Callable | None = None) -> "DataLoaders":
        """Images labelled by their parent folder, in fastai's `train/` and `valid/` layout or split at
        random with `valid_pct`, decoded in worker processes (see `minilearn.data_files`)."""
        from minilearn import data_files

        return data_files.from_folder(cls, path, train=train, valid=valid, valid_pct=valid_pct, seed=seed, vocab=vocab,
                                      item_tfms=item_tfms, batch_tfms=batch_tfms, bs=bs, val_bs=val_bs, shuffle=shuffle,
                                      num_workers=num_workers, device=device, pos_label=pos_label, skip_bad=skip_bad,
                                      splitter=splitter)

    @classmethod
    def from_csv(cls, path, csv_fname="labels.csv", folder: str | None = None, fn_col=0, label_col=1, valid_col=None,
                 suff: str = "", valid_pct: float = 0.2, seed: int | None = None, header="infer",
                 delimiter: str | None = None, vocab=None, item_tfms=None, batch_tfms=None, bs: int = 64,
                 val_bs: int | None = None, shuffle: bool = True, num_workers: int | None = None,
                 device: torch.device | str | None = None, pos_label=None, skip_bad: bool = False,
                 splitter: Callable | None = None) -> "DataLoaders":
        """Images named in a CSV file with their labels, split by `valid_col` or at random (see
        `minilearn.data_files`)."""
        from minilearn import data_files

        return data_files.from_csv(cls, path, csv_fname=csv_fname, folder=folder, fn_col=fn_col, label_col=label_col,
                                   valid_col=valid_col, suff=suff, valid_pct=valid_pct, seed=seed, header=header,
                                   delimiter=delimiter, vocab=vocab, item_tfms=item_tfms, batch_tfms=batch_tfms, bs=bs,
                                   val_bs=val_bs, shuffle=shuffle, num_workers=num_workers, device=device,
                                   pos_label=pos_label, skip_bad=skip_bad, splitter=splitter)

    @classmethod
    def from_lists(cls, path, fnames, labels, valid_pct: float = 0.2, seed: int | None = None, vocab=None,
                   item_tfms=None, batch_tfms=None, bs: int = 64, val_bs: int | None = None, shuffle: bool = True,
                   num_workers: int | None = None, device: torch.device | str | None = None, pos_label=None,
                   skip_bad: bool = False, splitter: Callable | None = None) -> "DataLoaders":
        """Images from a list of files (relative to `path`) and a list of labels, split at random
        (see `minilearn.data_files`)."""
        from minilearn import data_files

        return data_files.from_lists(cls, path, fnames, labels, valid_pct=valid_pct, seed=seed, vocab=vocab,
                                     item_tfms=item_tfms, batch_tfms=batch_tfms, bs=bs, val_bs=val_bs, shuffle=shuffle,
                                     num_workers=num_workers, device=device, pos_label=pos_label, skip_bad=skip_bad,
                                     splitter=splitter)

    def show_batch(self, max_n: int = 9, nrows: int | None = None, ncols: int | None = None,
                   figsize: tuple[float, float] | None = None, **kwargs):
        """A grid of the first training images with their labels' names; returns the Figure (see
        `data_files.show_batch`)."""
        from minilearn import data_files

        return data_files.show_batch(self, max_n=max_n, nrows=nrows, ncols=ncols, figsize=figsize, **kwargs)

    def close(self) -> None:
        """Stop the worker processes of loaders that have them (DataLoaders built from files)."""
        for dl in self.loaders:
            if hasattr(dl, "close"):
                dl.close()

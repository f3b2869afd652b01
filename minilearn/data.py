"""Batching data for training: `DataLoader` and `DataLoaders`, fastai's names over plain torch.

Tensors held in memory (the common case: fastbook chapter 4's MNIST sample) are batched by
slicing one permutation per epoch rather than item by item, which is what makes a small model
train at the speed of a hand-written loop. Any map-style dataset and any torch `DataLoader` is
accepted as well, so nothing has to be rewritten to use minilearn.
"""

import math
import operator
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import IterableDataset, RandomSampler, TensorDataset, default_collate

__all__ = ["to_device", "DataLoader", "DataLoaders"]

_ACCEPTED = (
    "a tensor, a tuple/list of tensors of equal length, a TensorDataset, a map-style dataset "
    "(with __len__ and __getitem__, e.g. a list of (x, y) tuples) or a torch DataLoader"
)


def _check_device(name: str, device: Any) -> torch.device | None:
    """Turn `device` into a `torch.device` (or None), raising an error that names `name`."""
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, (str, int)) and not isinstance(device, bool):
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"{name}: not a valid device, got {device!r}") from e
    raise TypeError(f"{name}: expected a torch.device, a str such as 'cuda' or None, got {type(device).__name__}")


def _move(b: Any, device: torch.device, non_blocking: bool) -> Any:
    """Recursive worker behind `to_device`, with the device already checked."""
    if isinstance(b, torch.Tensor):
        return b.to(device, non_blocking=non_blocking)
    if isinstance(b, tuple):
        moved = [_move(o, device, non_blocking) for o in b]
        # namedtuples take their fields as positional arguments, plain tuples take one iterable
        return type(b)(*moved) if hasattr(b, "_fields") else type(b)(moved)
    if isinstance(b, list):
        return [_move(o, device, non_blocking) for o in b]
    if isinstance(b, dict):
        return {k: _move(v, device, non_blocking) for k, v in b.items()}
    return b


def _non_blocking(device: torch.device) -> bool:
    """Whether copies to `device` may be asynchronous."""
    # A non-blocking copy *to the CPU* can be read before it has landed, so only copies towards
    # an accelerator (which orders them on its stream) are made asynchronous.
    return device.type != "cpu"


def to_device(b: Any, device: torch.device | str | None) -> Any:
    """Move a tensor, or tuples/lists/dicts of tensors (recursively), to `device`; others pass through.

    `device=None` returns `b` unchanged, so code can call it whether or not a device was chosen.
    """
    device = _check_device("device", device)
    if device is None:
        return b
    return _move(b, device, _non_blocking(device))


def _check_bs(name: str, bs: Any) -> int:
    """Return `bs` as an int, or raise naming `name` unless it is a positive integer."""
    if isinstance(bs, bool):
        raise TypeError(f"{name}: expected a positive int, got a bool ({bs})")
    try:
        value = operator.index(bs)  # accepts ints and integer scalars (numpy, 0-d tensors), not 2.0
    except TypeError:
        raise TypeError(f"{name}: expected a positive int, got {bs!r} ({type(bs).__name__})") from None
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    """Return `value`, or raise a TypeError naming `name` unless it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")
    return value


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


def _check_seed(seed: Any) -> int:
    """Return `seed` as an int, or raise a TypeError naming it."""
    if isinstance(seed, bool):
        raise TypeError(f"seed: expected an int or None, got a bool ({seed})")
    try:
        return operator.index(seed)
    except TypeError:
        raise TypeError(f"seed: expected an int or None, got {seed!r} ({type(seed).__name__})") from None


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


def _map_style_len(name: str, data: Any, accepted: str) -> int:
    """Return the length of a map-style dataset, or raise a TypeError saying what is accepted."""
    # str/bytes/dict have __len__ and __getitem__ but are not datasets indexed 0..n-1
    not_a_dataset = isinstance(data, (str, bytes, dict, IterableDataset))
    if not_a_dataset or not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"{name}: expected {accepted}; got {type(data).__name__}")
    return len(data)


class DataLoader:
    """Iterate over data in batches of `bs` tuples, optionally shuffled and moved to `device`.

    `data` may be:
    - a tensor or a tuple/list of tensors of equal length (e.g. `(x, y)`), or a `TensorDataset`:
      the fast path. Each epoch draws one permutation and yields `tuple(t[idx] for t in data)`
      for consecutive slices `idx` of it. Unshuffled batches are plain slices, i.e. *views* of the
      data: change them out of place (`xb = xb * 2`), not in place (`xb *= 2`).
    - any other map-style dataset (`__len__` and `__getitem__`, such as fastbook's
      `list(zip(x, y))`): items are fetched by index and joined by `collate_fn`
      (`torch.utils.data.default_collate` by default).
    - a torch `DataLoader`: it is iterated as is (its sampler decides the order, its
      `batch_size`/`drop_last` are used) and each batch is made a tuple and moved to `device`.

    Shuffling uses the loader's own CPU `torch.Generator` (`generator`, else one seeded with
    `seed`, else one seeded from torch's global RNG when the loader is built), so a seed gives the
    same batches every run while each epoch still gets a new order. An unshuffled loader leaves the
    global RNG untouched, so building it does not shift a model's random init.
    `batch_size` is an alias of `bs`; `bs` counts as not given while it has its default, 64.
    """

    def __init__(
        self,
        data: Any,
        bs: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        collate_fn: Callable[[list], Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        # -- check every argument before doing any work
        bs = _check_bs("bs", bs)
        if batch_size is not None:
            batch_size = _check_bs("batch_size", batch_size)
            if bs != 64 and bs != batch_size:
                raise ValueError(f"bs and batch_size are the same setting; got bs={bs} and batch_size={batch_size}")
            bs = batch_size
        _check_bool("shuffle", shuffle)
        _check_bool("drop_last", drop_last)
        if seed is not None:
            seed = _check_seed(seed)
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
            if generator.device.type != "cpu":
                raise ValueError(f"generator: must be a CPU generator (permutations are drawn on the CPU), got one on {generator.device}")
            if seed is not None:
                raise ValueError("seed and generator: give one or the other, not both")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn: expected a callable or None, got {type(collate_fn).__name__}")
        self._device = _check_device("device", device)

        self._tensors: tuple | None = None  # the fast path's tensors
        self._loader: TorchDataLoader | None = None  # a wrapped torch DataLoader
        if isinstance(data, TorchDataLoader):
            self._init_from_torch_loader(data, bs, batch_size, shuffle, drop_last, seed, generator, collate_fn)
            return

        if isinstance(data, torch.Tensor):
            tensors, self.dataset = (data,), (data,)
        elif isinstance(data, TensorDataset):
            tensors, self.dataset = tuple(data.tensors), data
        elif isinstance(data, (tuple, list)) and len(data) > 0 and any(isinstance(o, torch.Tensor) for o in data):
            tensors = tuple(data)
            self.dataset = tensors
        else:
            tensors = None
            self.dataset = data
        if tensors is not None:
            if collate_fn is not None:
                raise ValueError(
                    "collate_fn: tensors are batched by indexing and never collated; "
                    "pass a map-style dataset (e.g. list(zip(x, y))) to use a collate_fn"
                )
            n = _check_tensors("data", tensors)
        else:
            n = _map_style_len("data", data, _ACCEPTED)
        if n == 0:
            raise ValueError("data: the dataset is empty (0 items)")
        n_batches = n // bs if drop_last else math.ceil(n / bs)
        if n_batches == 0:
            raise ValueError(f"drop_last: with {n} items and bs={bs} every item is dropped; lower bs or set drop_last=False")

        self._tensors = tensors
        self._collate = collate_fn if collate_fn is not None else default_collate
        self.n, self.bs, self.shuffle, self.drop_last = n, bs, shuffle, drop_last
        self.generator = generator if generator is not None else _new_generator(seed, draw_from_global=shuffle)
        self._n_batches = n_batches

    def _init_from_torch_loader(self, dl, bs, batch_size, shuffle, drop_last, seed, generator, collate_fn) -> None:
        """Wrap a torch DataLoader: its own sampler, batch size and collate function decide."""
        if shuffle or seed is not None or generator is not None:
            raise ValueError(
                "shuffle, seed and generator: a torch DataLoader's own sampler decides the order; "
                "build it with shuffle=True (and its generator=) instead"
            )
        if collate_fn is not None:
            raise ValueError("collate_fn: a torch DataLoader collates with its own collate_fn")
        # bs=64 is the default, so only a different bs counts as given
        name, given_bs = ("batch_size", batch_size) if batch_size is not None else ("bs", bs if bs != 64 else None)
        if given_bs is not None and given_bs != dl.batch_size:
            raise ValueError(f"{name}: a torch DataLoader sets its own batch_size ({dl.batch_size}), got {name}={given_bs}")
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
        self._collate = None

    @property
    def device(self) -> torch.device | None:
        """Where batches are moved to (None: leave them where the data is)."""
        return self._device

    @device.setter
    def device(self, device: torch.device | str | None) -> None:
        self._device = _check_device("device", device)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return self._n_batches

    def __iter__(self) -> Iterator[tuple]:
        """Yield one epoch of batches (tuples), every item once unless `drop_last` cuts the remainder."""
        if self._tensors is not None:
            return self._iter_tensors()
        if self._loader is not None:
            return self._iter_torch_loader()
        return self._iter_map_style()

    def _iter_tensors(self) -> Iterator[tuple]:
        """The fast path: slice one permutation (or plain ranges) into every tensor."""
        tensors, bs, device = self._tensors, self.bs, self._device
        stop = self._n_batches * bs
        data_device = tensors[0].device
        move = device is not None and device != data_device
        non_blocking = move and _non_blocking(device)
        if self.shuffle:
            perm = torch.randperm(self.n, generator=self.generator)
            if data_device.type != "cpu":
                perm = perm.to(data_device)  # once per epoch, so each batch indexes on the data's device
            for i in range(0, stop, bs):
                idx = perm[i : i + bs]
                b = tuple([t[idx] for t in tensors])
                yield tuple([t.to(device, non_blocking=non_blocking) for t in b]) if move else b
        else:
            for i in range(0, stop, bs):
                b = tuple([t[i : i + bs] for t in tensors])
                yield tuple([t.to(device, non_blocking=non_blocking) for t in b]) if move else b

    def _iter_map_style(self) -> Iterator[tuple]:
        """Fetch items by index and collate them, for datasets that are not tensors."""
        data, bs, collate, device = self.dataset, self.bs, self._collate, self._device
        stop = self._n_batches * bs
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else range(self.n)
        for i in range(0, stop, bs):
            b = _as_tuple(collate([data[j] for j in order[i : i + bs]]))
            yield b if device is None else _move(b, device, _non_blocking(device))

    def _iter_torch_loader(self) -> Iterator[tuple]:
        """Iterate the wrapped torch DataLoader, making batches tuples on `device`."""
        device = self._device
        for b in self._loader:
            b = _as_tuple(b)
            yield b if device is None else _move(b, device, _non_blocking(device))

    # -- by index, for splitting a loader's batches across processes (minilearn.callbacks.distributed)
    @property
    def torch_loader(self) -> TorchDataLoader | None:
        """The wrapped torch DataLoader, or None when minilearn batches the data itself."""
        return self._loader

    def epoch_order(self) -> torch.Tensor:
        """One pass's item order, drawn as `iter(self)` draws it: a permutation from `generator`
        when shuffling (advancing it, as an epoch does), else 0..n-1. Batch k is the k-th run of
        `bs` indices; `len(self)` batches, so `drop_last` leaves the remainder out."""
        if self._loader is not None:
            raise TypeError("epoch_order: a wrapped torch DataLoader's own sampler decides its order")
        if self.shuffle:
            return torch.randperm(self.n, generator=self.generator)
        return torch.arange(self.n)

    def fetch(self, idx: torch.Tensor) -> tuple:
        """The batch of the items at indices `idx` (a 1-d int64 tensor), as a tuple on `device`."""
        if self._loader is not None:
            raise TypeError("fetch: a wrapped torch DataLoader fetches its own batches")
        device = self._device
        if self._tensors is not None:
            data_device = self._tensors[0].device
            b = tuple([t[idx.to(data_device)] for t in self._tensors])
            move = device is not None and device != data_device
        else:
            b = _as_tuple(self._collate([self.dataset[j] for j in idx.tolist()]))
            move = device is not None
        return _move(b, device, _non_blocking(device)) if move else b

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


def _as_loader(name: str, dl: Any) -> DataLoader:
    """Return `dl` as a minilearn DataLoader, wrapping a torch one."""
    if isinstance(dl, DataLoader):
        return dl
    if isinstance(dl, TorchDataLoader):
        return DataLoader(dl)
    raise TypeError(f"{name}: expected a minilearn or torch DataLoader, got {type(dl).__name__}")


class DataLoaders:
    """A train loader and optional validation (and more) loaders, as fastai's `DataLoaders(train, valid)`."""

    n_inp: int = 1  # how many leading elements of a batch are inputs (the rest are targets)

    def __init__(self, *loaders: DataLoader | TorchDataLoader, device: torch.device | str | None = None) -> None:
        if not loaders:
            raise ValueError("loaders: expected at least one DataLoader (the training one), got none")
        device = _check_device("device", device)
        self.loaders: list[DataLoader] = [_as_loader(f"loaders[{i}]", dl) for i, dl in enumerate(loaders)]
        self._device = device
        if device is not None:
            for dl in self.loaders:
                dl.device = device

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
        device = _check_device("device", device)
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

    def one_batch(self) -> tuple:
        """The first batch of the training loader, to look at shapes or try a model."""
        return self.train.one_batch()

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
    ) -> "DataLoaders":
        """Loaders over in-memory tensors: a shuffled train loader and an ordered valid loader."""
        _check_xy("x", "y", x, y)
        if (valid_x is None) != (valid_y is None):
            given, missing = ("valid_x", "valid_y") if valid_y is None else ("valid_y", "valid_x")
            raise ValueError(f"{missing}: {given} was given without {missing}; pass both or neither")
        if valid_x is not None:
            _check_xy("valid_x", "valid_y", valid_x, valid_y)
        bs = _check_bs("bs", bs)
        val_bs = bs if val_bs is None else _check_bs("val_bs", val_bs)
        _check_device("device", device)
        train = DataLoader((x, y), bs=bs, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device)
        if valid_x is None:
            return cls(train, device=device)
        # validation sees every item, in order, so its numbers are exact and comparable run to run
        valid = DataLoader((valid_x, valid_y), bs=val_bs, shuffle=False, drop_last=False, device=device)
        return cls(train, valid, device=device)

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
    ) -> "DataLoaders":
        """Loaders over map-style datasets (or TensorDatasets): shuffled train, ordered valid."""
        bs = _check_bs("bs", bs)
        val_bs = bs if val_bs is None else _check_bs("val_bs", val_bs)
        _check_device("device", device)
        for name, ds in (("train_ds", train_ds), ("valid_ds", valid_ds)):
            if isinstance(ds, TorchDataLoader):
                raise TypeError(f"{name}: expected a dataset, got a torch DataLoader; pass it to DataLoaders(...) instead")
        # both checked before a loader is built, so bad input fails before any work
        _check_dataset("train_ds", train_ds)
        if valid_ds is not None:
            _check_dataset("valid_ds", valid_ds)
        train = DataLoader(train_ds, bs=bs, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device, collate_fn=collate_fn)
        if valid_ds is None:
            return cls(train, device=device)
        valid = DataLoader(valid_ds, bs=val_bs, shuffle=False, drop_last=False, device=device, collate_fn=collate_fn)
        return cls(train, valid, device=device)


def _check_xy(x_name: str, y_name: str, x: Any, y: Any) -> None:
    """Check `x` and `y` are tensors of the same length, naming them in the error."""
    for name, t in ((x_name, x), (y_name, y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise ValueError(f"{name}: expected a tensor with at least one dimension, got a 0-d tensor")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x_name} and {y_name}: must have the same length, got {x.shape[0]} and {y.shape[0]}")


def _check_dataset(name: str, ds: Any) -> None:
    """Check `ds` is a non-empty dataset the DataLoader accepts, naming it in the error."""
    if isinstance(ds, TensorDataset):
        n = _check_tensors(name, tuple(ds.tensors))
    else:
        n = _map_style_len(name, ds, "a map-style dataset (with __len__ and __getitem__) or a TensorDataset")
    if n == 0:
        raise ValueError(f"{name}: the dataset is empty (0 items)")

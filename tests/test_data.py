"""Tests for minilearn.data: to_device, DataLoader, DataLoaders."""

from collections import namedtuple

import pytest
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import TensorDataset

from minilearn.data import DataLoader, DataLoaders, TorchLoader, to_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_xy(n: int = 103, n_features: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """x whose first column is the item's index, and y = 2 * index, so batches can be traced."""
    idx = torch.arange(n)
    x = idx.float().unsqueeze(1).repeat(1, n_features)
    return x, idx * 2


def epoch_ids(dl) -> list[int]:
    """The item indices one epoch of `dl` visits, in order, checking x and y stay paired."""
    ids = []
    for xb, yb in dl:
        assert torch.equal(xb[:, 0].long() * 2, yb)
        ids += xb[:, 0].long().tolist()
    return ids


# -- to_device


def test_to_device_none_returns_input_unchanged():
    b = (torch.zeros(2), [torch.ones(1)])
    assert to_device(b, None) is b


def test_to_device_moves_nested_containers_and_passes_others_through():
    Pair = namedtuple("Pair", "x y")
    b = {"a": (torch.zeros(2), [torch.ones(1), 3]), "p": Pair(torch.zeros(1), "s")}
    out = to_device(b, "cpu")
    assert out["a"][0].device.type == "cpu" and isinstance(out["a"], tuple)
    assert isinstance(out["a"][1], list) and out["a"][1][1] == 3
    assert isinstance(out["p"], Pair) and out["p"].y == "s"


def test_to_device_rejects_a_bad_device():
    with pytest.raises(TypeError, match="device"):
        to_device(torch.zeros(1), 3.5)
    with pytest.raises(ValueError, match="device"):
        to_device(torch.zeros(1), "not-a-device")


# -- DataLoader over tensors (the fast path)


def test_shuffled_epoch_visits_every_item_once_with_uneven_last_batch():
    x, y = make_xy(103)
    dl = DataLoader((x, y), bs=10, shuffle=True, seed=0)
    assert len(dl) == 11 and dl.n == 103 and dl.bs == 10
    sizes = [len(xb) for xb, _ in dl]
    assert sizes == [10] * 10 + [3]
    ids = epoch_ids(dl)
    assert sorted(ids) == list(range(103))
    assert ids != list(range(103))


def test_batches_are_tuples():
    x, y = make_xy(20)
    for shuffle in (False, True):
        b = next(iter(DataLoader((x, y), bs=8, shuffle=shuffle)))
        assert type(b) is tuple and len(b) == 2


def test_drop_last_drops_only_the_remainder():
    x, y = make_xy(103)
    dl = DataLoader((x, y), bs=10, shuffle=True, drop_last=True, seed=0)
    assert len(dl) == 10
    assert [len(xb) for xb, _ in dl] == [10] * 10
    ids = epoch_ids(dl)
    assert len(set(ids)) == 100
    unshuffled = DataLoader((x, y), bs=10, drop_last=True)
    assert epoch_ids(unshuffled) == list(range(100))


def test_len_without_drop_last_rounds_up():
    x, y = make_xy(100)
    assert len(DataLoader((x, y), bs=10)) == 10
    assert len(DataLoader((x, y), bs=7)) == 15
    assert len(DataLoader((x, y), bs=1000)) == 1


def test_unshuffled_order_is_identity_and_batches_are_views():
    x, y = make_xy(103)
    dl = DataLoader((x, y), bs=10)
    assert epoch_ids(dl) == list(range(103))
    xb, _ = next(iter(dl))
    # plain slices share the data's memory: no copy for an ordered pass
    assert xb.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_every_unshuffled_batch_is_a_view_and_shuffled_batches_index_the_permutation():
    x, y = make_xy(103)
    for i, (xb, yb) in enumerate(DataLoader((x, y), bs=10)):
        # a view of rows 10*i onwards: same storage, starting at that row, no copy made
        assert xb._base is x and yb._base is y
        assert xb.data_ptr() == x[10 * i :].data_ptr() and torch.equal(xb, x[10 * i : 10 * i + 10])
    perm = torch.randperm(103, generator=torch.Generator().manual_seed(4))
    batches = list(DataLoader((x, y), bs=10, shuffle=True, generator=torch.Generator().manual_seed(4)))
    assert len(batches) == 11
    for i, (xb, yb) in enumerate(batches):
        idx = perm[10 * i : 10 * i + 10]
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
        assert xb._base is None and xb.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def test_tensors_and_a_map_style_dataset_of_them_give_identical_batches():
    x, y = make_xy(103)
    for shuffle, drop_last in [(False, False), (True, False), (True, True)]:
        on_tensors = DataLoader((x, y), bs=10, shuffle=shuffle, drop_last=drop_last, seed=9)
        on_items = DataLoader(list(zip(x, y)), bs=10, shuffle=shuffle, drop_last=drop_last, seed=9)
        for _ in range(2):  # later epochs too: both draw from their generator alike
            a, b = list(on_tensors), list(on_items)
            assert len(a) == len(b) == len(on_tensors)
            for (xa, ya), (xb, yb) in zip(a, b):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(on_tensors.generator.get_state(), on_items.generator.get_state())


@pytest.mark.parametrize("map_style", [False, True])
@pytest.mark.parametrize("shuffle, drop_last", [(False, False), (True, False), (True, True)])
def test_iterating_is_fetching_each_run_of_bs_indices_of_the_epoch_order(map_style, shuffle, drop_last):
    x, y = make_xy(103)
    dl = DataLoader(list(zip(x, y)) if map_style else (x, y), bs=10, shuffle=shuffle, drop_last=drop_last, seed=2)
    list(dl)  # not the first epoch, so the generator has moved on
    state = dl.generator.get_state()
    batches = list(dl)
    after = dl.generator.get_state()
    dl.generator.set_state(state)
    order = dl.epoch_order()
    assert order.dtype == torch.int64 and order.shape == (103,)
    assert sorted(order.tolist()) == list(range(103)) and (order.tolist() == list(range(103))) is not shuffle
    fetched = [dl.fetch(order[i : i + 10]) for i in range(0, len(dl) * 10, 10)]
    assert torch.equal(dl.generator.get_state(), after)  # one draw per pass, as iterating
    assert len(fetched) == len(batches) == len(dl)
    for (xf, yf), (xb, yb) in zip(fetched, batches):
        assert torch.equal(xf, xb) and torch.equal(yf, yb)
    assert all(type(b) is tuple for b in fetched)


def test_same_seed_gives_the_same_batches_and_epochs_differ():
    x, y = make_xy(103)
    a = DataLoader((x, y), bs=10, shuffle=True, seed=42)
    b = DataLoader((x, y), bs=10, shuffle=True, seed=42)
    a_epochs = [epoch_ids(a) for _ in range(3)]
    b_epochs = [epoch_ids(b) for _ in range(3)]
    assert a_epochs == b_epochs
    assert a_epochs[0] != a_epochs[1] != a_epochs[2]
    other = DataLoader((x, y), bs=10, shuffle=True, seed=43)
    assert epoch_ids(other) != a_epochs[0]


def test_given_generator_is_used_for_shuffling():
    x, y = make_xy(50)
    g = torch.Generator().manual_seed(7)
    dl = DataLoader((x, y), bs=10, shuffle=True, generator=g)
    assert dl.generator is g
    assert epoch_ids(dl) == torch.randperm(50, generator=torch.Generator().manual_seed(7)).tolist()


def test_unseeded_loader_follows_the_global_seed():
    x, y = make_xy(50)
    torch.manual_seed(0)
    first = epoch_ids(DataLoader((x, y), bs=10, shuffle=True))
    torch.manual_seed(0)
    again = epoch_ids(DataLoader((x, y), bs=10, shuffle=True))
    assert first == again


def test_building_loaders_leaves_the_global_rng_alone_unless_it_must_draw():
    x, y = make_xy(50)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    dl = DataLoader((x, y), bs=10)
    DataLoader((x, y), bs=10, shuffle=True, seed=1)
    epoch_ids(DataLoader((x, y), bs=10, shuffle=True, seed=1))
    assert torch.equal(torch.rand(3), expected)
    assert epoch_ids(dl) == list(range(50))


def test_one_batch_does_not_change_the_training_order():
    x, y = make_xy(50)
    a = DataLoader((x, y), bs=10, shuffle=True, seed=3)
    b = DataLoader((x, y), bs=10, shuffle=True, seed=3)
    first = a.one_batch()
    assert type(first) is tuple and first[0].shape == (10, 3)
    assert torch.equal(a.one_batch()[0], first[0])
    b_first_epoch = list(b)
    assert torch.equal(first[0], b_first_epoch[0][0])  # the peek shows the next epoch's first batch
    assert epoch_ids(a) == [i for xb, _ in b_first_epoch for i in xb[:, 0].long().tolist()]
    assert epoch_ids(a) == epoch_ids(b)


def test_single_tensor_and_tensor_dataset():
    x, y = make_xy(25)
    (xb,) = next(iter(DataLoader(x, bs=10)))
    assert xb.shape == (10, 3)
    ds = TensorDataset(x, y)
    dl = DataLoader(ds, bs=10, shuffle=True, seed=0)
    assert dl.dataset is ds and len(dl) == 3
    assert sorted(epoch_ids(dl)) == list(range(25))


def test_list_of_tensors_is_the_fast_path_too():
    x, y = make_xy(25)
    dl = DataLoader([x, y], bs=10)
    assert dl.dataset == (x, y) and epoch_ids(dl) == list(range(25))


def test_batch_size_is_an_alias_for_bs():
    x, y = make_xy(100)
    assert DataLoader((x, y), batch_size=25).bs == 25
    assert len(DataLoader((x, y), bs=25, batch_size=25)) == 4
    with pytest.raises(ValueError, match="bs and batch_size"):
        DataLoader((x, y), bs=10, batch_size=25)


def test_bs_and_batch_size_with_different_values_is_an_error_even_when_bs_is_64():
    x, y = make_xy(100)
    with pytest.raises(ValueError, match="bs and batch_size.*bs=64 and batch_size=32"):
        DataLoader((x, y), bs=64, batch_size=32)
    with pytest.raises(ValueError, match="bs and batch_size.*bs=32 and batch_size=64"):
        DataLoader((x, y), bs=32, batch_size=64)
    tdl = TorchDataLoader(TensorDataset(x, y), batch_size=32)
    with pytest.raises(ValueError, match="bs and batch_size"):
        DataLoader(tdl, bs=64, batch_size=32)
    # bs=64 given on purpose is checked against the torch loader's own batch size
    with pytest.raises(ValueError, match=r"bs: a torch DataLoader sets its own batch_size \(32\), got bs=64"):
        DataLoader(tdl, bs=64)
    # the default is still fastai's 64
    assert DataLoader((x, y)).bs == 64 and type(DataLoader((x, y)).bs) is int
    assert DataLoader((x, y), bs=64).bs == 64 and DataLoader((x, y), batch_size=64).bs == 64


def test_attributes():
    x, y = make_xy(30)
    dl = DataLoader((x, y), bs=7, shuffle=True, drop_last=True, seed=0, device="cpu")
    assert dl.dataset == (x, y) and dl.n == 30 and dl.bs == 7
    assert dl.shuffle is True and dl.drop_last is True
    assert dl.device == torch.device("cpu") and isinstance(dl.generator, torch.Generator)
    assert "bs=7" in repr(dl)


def test_device_cpu_moves_batches_to_cpu():
    x, y = make_xy(30)
    dl = DataLoader((x, y), bs=8, shuffle=True, seed=0, device="cpu")
    assert all(xb.device.type == "cpu" and yb.device.type == "cpu" for xb, yb in dl)
    dl.device = torch.device("cpu")
    assert sorted(epoch_ids(dl)) == list(range(30))


# -- DataLoader over map-style datasets and torch DataLoaders


def test_map_style_list_of_tuples_like_fastbook():
    x, y = make_xy(23)
    dset = list(zip(x, y))
    dl = DataLoader(dset, bs=5, shuffle=True, seed=0)
    assert len(dl) == 5 and dl.n == 23 and dl.dataset is dset
    b = next(iter(dl))
    assert type(b) is tuple and b[0].shape == (5, 3) and b[1].shape == (5,)
    assert sorted(epoch_ids(dl)) == list(range(23))
    assert epoch_ids(DataLoader(dset, bs=5)) == list(range(23))


def test_map_style_uses_the_collate_fn():
    dset = list(range(10))
    dl = DataLoader(dset, bs=4, collate_fn=lambda items: (torch.tensor(items), sum(items)))
    assert [b[1] for b in dl] == [6, 22, 17]


def test_map_style_items_that_are_single_values_give_one_tuples():
    dl = DataLoader(list(range(10)), bs=4)
    b = next(iter(dl))
    assert type(b) is tuple and torch.equal(b[0], torch.tensor([0, 1, 2, 3]))


def test_wraps_a_torch_dataloader():
    x, y = make_xy(50)
    tdl = TorchDataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    dl = DataLoader(tdl, device="cpu")
    assert dl.bs == 16 and dl.shuffle is True and dl.drop_last is False
    assert len(dl) == 4 and dl.n == 50 and dl.dataset is tdl.dataset
    assert all(type(b) is tuple for b in dl)
    assert sorted(epoch_ids(dl)) == list(range(50))
    ordered = DataLoader(TorchDataLoader(TensorDataset(x, y), batch_size=16, drop_last=True))
    assert ordered.shuffle is False and ordered.drop_last is True and len(ordered) == 3
    assert epoch_ids(ordered) == list(range(48))
    assert DataLoader(tdl, batch_size=16).bs == 16


def test_a_torch_dataloader_is_wrapped_in_a_torch_loader():
    x, y = make_xy(50)
    tdl = TorchDataLoader(TensorDataset(x, y), batch_size=16)
    dl = DataLoader(tdl)
    assert type(dl) is TorchLoader and isinstance(dl, DataLoader)
    assert dl.torch_loader is tdl and epoch_ids(dl) == list(range(50))
    assert type(DataLoader(tdl, device="cpu", batch_size=16)) is TorchLoader
    assert type(TorchLoader(tdl)) is TorchLoader and TorchLoader(tdl).torch_loader is tdl
    assert type(DataLoaders(tdl).train) is TorchLoader
    plain = DataLoader((x, y), bs=16)
    assert type(plain) is DataLoader and plain.torch_loader is None
    assert type(DataLoader(list(zip(x, y)))) is DataLoader
    with pytest.raises(TypeError, match="epoch_order"):
        dl.epoch_order()
    with pytest.raises(TypeError, match="fetch"):
        dl.fetch(torch.arange(3))
    with pytest.raises(TypeError, match="data: expected a torch DataLoader"):
        TorchLoader((x, y))


def test_wrapped_torch_dataloader_rejects_settings_it_owns():
    x, y = make_xy(50)
    tdl = TorchDataLoader(TensorDataset(x, y), batch_size=16)
    with pytest.raises(ValueError, match="shuffle"):
        DataLoader(tdl, shuffle=True)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(tdl, seed=0)
    with pytest.raises(ValueError, match="bs: a torch DataLoader sets its own batch_size"):
        DataLoader(tdl, bs=8)
    with pytest.raises(ValueError, match="batch_size: a torch DataLoader sets its own batch_size"):
        DataLoader(tdl, batch_size=8)
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(tdl, drop_last=True)
    with pytest.raises(ValueError, match="collate_fn"):
        DataLoader(tdl, collate_fn=list)


# -- bad input


def test_tensors_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match=r"data: tensors must have the same length along dim 0, got \[100, 99\]"):
        DataLoader((torch.zeros(100, 2), torch.zeros(99)))
    with pytest.raises(ValueError, match=r"data: tensors must have the same length along dim 0, got \[3, 3, 4\]"):
        DataLoader([torch.zeros(3), torch.zeros(3), torch.zeros(4)])


@pytest.mark.parametrize("bs, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), ("8", TypeError)])
def test_bad_bs_is_rejected(bs, error):
    x, y = make_xy(10)
    with pytest.raises(error, match="bs"):
        DataLoader((x, y), bs=bs)
    with pytest.raises(error, match="batch_size"):
        DataLoader((x, y), batch_size=bs)


def test_empty_data_is_rejected():
    with pytest.raises(ValueError, match="data: the dataset is empty"):
        DataLoader((torch.zeros(0, 3), torch.zeros(0)))
    with pytest.raises(ValueError, match="data: the dataset is empty"):
        DataLoader([])
    with pytest.raises(ValueError, match="data: the torch DataLoader's dataset is empty"):
        DataLoader(TorchDataLoader(TensorDataset(torch.zeros(0)), batch_size=2))


@pytest.mark.parametrize("data", [3, None, (i for i in range(3)), "abc", {"x": torch.zeros(3)}])
def test_unsupported_data_is_rejected(data):
    with pytest.raises(TypeError, match="data: expected a tensor, a tuple/list of tensors"):
        DataLoader(data)


def test_tuple_mixing_tensors_and_other_things_is_rejected():
    with pytest.raises(TypeError, match="data: a tuple/list of tensors must hold only tensors"):
        DataLoader((torch.zeros(3), [1, 2, 3]))
    with pytest.raises(ValueError, match="at least one dimension"):
        DataLoader((torch.tensor(1.0), torch.tensor(2.0)))


def test_drop_last_leaving_no_batch_is_rejected():
    x, y = make_xy(5)
    with pytest.raises(ValueError, match="drop_last: with 5 items and bs=10"):
        DataLoader((x, y), bs=10, drop_last=True)


def test_other_bad_arguments_are_rejected():
    x, y = make_xy(10)
    with pytest.raises(TypeError, match="shuffle"):
        DataLoader((x, y), shuffle="yes")
    with pytest.raises(TypeError, match="drop_last"):
        DataLoader((x, y), drop_last=1)
    with pytest.raises(TypeError, match="seed"):
        DataLoader((x, y), shuffle=True, seed=1.5)
    with pytest.raises(TypeError, match="generator"):
        DataLoader((x, y), shuffle=True, generator=0)
    with pytest.raises(ValueError, match="seed and generator"):
        DataLoader((x, y), shuffle=True, seed=0, generator=torch.Generator())
    with pytest.raises(TypeError, match="collate_fn"):
        DataLoader(list(range(4)), collate_fn=3)
    with pytest.raises(ValueError, match="collate_fn"):
        DataLoader((x, y), collate_fn=list)
    with pytest.raises(TypeError, match="device"):
        DataLoader((x, y), device=1.0)


def test_fetch_gives_the_batch_at_the_indices_on_the_loader_device():
    x, y = make_xy(20)
    idx = torch.tensor([5, 0, 17])
    for data in ((x, y), list(zip(x, y))):
        xb, yb = DataLoader(data, bs=4, device="cpu").fetch(idx)
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx]) and xb.device.type == "cpu"


# -- DataLoaders


def test_from_tensors_train_shuffles_and_valid_does_not():
    x, y = make_xy(103)
    vx, vy = make_xy(41)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=10, seed=0)
    assert len(dls) == 2 and dls[0] is dls.train and dls[1] is dls.valid
    assert dls.train.shuffle and not dls.valid.shuffle and not dls.valid.drop_last
    assert dls.valid.bs == 10 and len(dls.valid) == 5
    train_ids = epoch_ids(dls.train)
    assert sorted(train_ids) == list(range(103)) and train_ids != list(range(103))
    assert epoch_ids(dls.valid) == list(range(41))
    assert dls.train_ds == (x, y) and dls.valid_ds == (vx, vy)
    assert dls.n_inp == 1


def test_from_tensors_options():
    x, y = make_xy(103)
    vx, vy = make_xy(41)
    dls = DataLoaders.from_tensors(x, y, vx, vy, bs=10, val_bs=20, drop_last=True, shuffle=False)
    assert dls.valid.bs == 20 and len(dls.valid) == 3 and not dls.valid.drop_last
    assert len(dls.train) == 10 and epoch_ids(dls.train) == list(range(100))
    a = DataLoaders.from_tensors(x, y, bs=10, seed=5)
    b = DataLoaders.from_tensors(x, y, bs=10, seed=5)
    assert epoch_ids(a.train) == epoch_ids(b.train)
    assert a.valid is None and a.valid_ds is None and len(a) == 1


def test_one_batch_shape():
    x, y = make_xy(103)
    xb, yb = DataLoaders.from_tensors(x, y, bs=16, seed=0).one_batch()
    assert xb.shape == (16, 3) and yb.shape == (16,)


def test_from_tensors_bad_input():
    x, y = make_xy(100)
    with pytest.raises(ValueError, match="x and y: must have the same length, got 100 and 99"):
        DataLoaders.from_tensors(x, y[:99])
    with pytest.raises(ValueError, match="valid_x and valid_y: must have the same length, got 10 and 9"):
        DataLoaders.from_tensors(x, y, x[:10], y[:9])
    with pytest.raises(ValueError, match="valid_y: valid_x was given without valid_y"):
        DataLoaders.from_tensors(x, y, valid_x=x)
    with pytest.raises(ValueError, match="valid_x: valid_y was given without valid_x"):
        DataLoaders.from_tensors(x, y, valid_y=y)
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        DataLoaders.from_tensors([1, 2], y)
    with pytest.raises(ValueError, match="val_bs"):
        DataLoaders.from_tensors(x, y, x, y, val_bs=0)
    with pytest.raises(ValueError, match="bs"):
        DataLoaders.from_tensors(x, y, bs=0)


def test_from_dsets_with_lists_and_tensor_datasets():
    x, y = make_xy(50)
    vx, vy = make_xy(20)
    dls = DataLoaders.from_dsets(list(zip(x, y)), list(zip(vx, vy)), bs=8, seed=0)
    assert dls.train.shuffle and not dls.valid.shuffle
    assert sorted(epoch_ids(dls.train)) == list(range(50))
    assert epoch_ids(dls.valid) == list(range(20))
    xb, yb = dls.one_batch()
    assert xb.shape == (8, 3) and yb.shape == (8,)
    tds = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(vx, vy), bs=8, val_bs=10, seed=0)
    assert len(tds.valid) == 2 and tds.train_ds.tensors[0] is x
    assert sorted(epoch_ids(tds.train)) == list(range(50))


def test_from_dsets_bad_input():
    with pytest.raises(ValueError, match="train_ds: the dataset is empty"):
        DataLoaders.from_dsets([])
    with pytest.raises(ValueError, match="valid_ds: the dataset is empty"):
        DataLoaders.from_dsets([1, 2], [])
    with pytest.raises(TypeError, match="valid_ds: expected a map-style dataset"):
        DataLoaders.from_dsets([1, 2], 5)
    with pytest.raises(TypeError, match="train_ds: expected a dataset, got a torch DataLoader"):
        DataLoaders.from_dsets(TorchDataLoader([1, 2]))


def test_dataloaders_wraps_torch_loaders_and_sets_the_device():
    x, y = make_xy(30)
    train = TorchDataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    valid = DataLoader((x, y), bs=8)
    dls = DataLoaders(train, valid, device="cpu")
    assert isinstance(dls.train, DataLoader) and dls.valid is valid
    assert dls.device == torch.device("cpu")
    assert all(dl.device == torch.device("cpu") for dl in dls.loaders)
    assert sorted(epoch_ids(dls.train)) == list(range(30))


def test_dataloaders_device_falls_back_to_the_train_loader():
    x, y = make_xy(30)
    assert DataLoaders(DataLoader((x, y))).device is None
    assert DataLoaders(DataLoader((x, y), device="cpu"), DataLoader((x, y))).device == torch.device("cpu")
    dls = DataLoaders(DataLoader((x, y)), DataLoader((x, y)))
    assert dls.to("cpu") is dls and dls.valid.device == torch.device("cpu")


def test_dataloaders_bad_input():
    with pytest.raises(ValueError, match="loaders: expected at least one"):
        DataLoaders()
    with pytest.raises(TypeError, match=r"loaders\[1\]: expected a minilearn or torch DataLoader"):
        DataLoaders(DataLoader(torch.zeros(3)), [1, 2])
    with pytest.raises(TypeError, match="device"):
        DataLoaders(DataLoader(torch.zeros(3)), device=2.0)


# -- CUDA


@needs_cuda
def test_cuda_batches_land_on_the_gpu():
    x, y = make_xy(103)
    dls = DataLoaders.from_tensors(x, y, x, y, bs=10, seed=0, device="cuda")
    for dl in dls.loaders:
        for xb, yb in dl:
            assert xb.is_cuda and yb.is_cuda
    assert sorted(epoch_ids(dls.train)) == list(range(103))
    mapped = DataLoader(list(zip(x, y)), bs=10, device="cuda")
    assert all(xb.is_cuda and yb.is_cuda for xb, yb in mapped)


@needs_cuda
@pytest.mark.filterwarnings("ignore:.*Profiler clears events")
def test_cuda_resident_tensors_are_indexed_on_the_gpu():
    x, y = make_xy(1003)
    on_cpu = DataLoader((x, y), bs=10, shuffle=True, seed=0)
    on_gpu = DataLoader((x.cuda(), y.cuda()), bs=10, shuffle=True, seed=0)
    assert epoch_ids(on_gpu) == epoch_ids(on_cpu)  # the order comes from the CPU generator alone
    batches = list(on_gpu)
    assert all(xb.is_cuda and yb.is_cuda for xb, yb in batches)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        list(on_gpu)
        torch.cuda.synchronize()
    host_to_device = [e for e in prof.events() if "HtoD" in e.name]
    # one copy of the permutation per epoch, not one index copy per batch (101 batches here)
    assert len(host_to_device) == 1, [e.name for e in host_to_device]
    # fetch takes indices from anywhere (the distributed loader passes CPU ones)
    xb, yb = on_gpu.fetch(torch.tensor([7, 2]))
    assert xb.is_cuda and torch.equal(yb.cpu(), y[[7, 2]])
    assert DataLoader((x, y), bs=10, device="cuda").fetch(torch.tensor([7, 2]))[0].is_cuda


def test_vocab_c_test_dl_and_new():
    x, y = make_xy(20)
    dls = DataLoaders.from_tensors(x, y, x[:8], y[:8], bs=4, val_bs=3, seed=0, vocab=("neg", "pos"))
    assert dls.vocab == ["neg", "pos"] and dls.c == 2
    assert DataLoaders.from_tensors(x, y).vocab is None and DataLoaders.from_tensors(x, y).c is None
    with pytest.raises(TypeError, match="vocab: expected a list of class names"):
        DataLoaders.from_tensors(x, y, vocab="ab")
    test = dls.test_dl(x[:7])  # inputs only: batches of one tensor, as the validation loader's
    batches = list(test)
    assert test.bs == 3 and not test.shuffle and [len(b) for b in batches] == [1, 1, 1]
    assert torch.equal(torch.cat([b[0] for b in batches]), x[:7])
    in_order = dls.train.new(shuffle=False)
    assert not in_order.shuffle and in_order.bs == 4
    assert torch.equal(torch.cat([b[0] for b in in_order]), x)
    assert dls.train.new().shuffle and dls.train.new().generator is dls.train.generator
    with pytest.raises(TypeError, match="new: a wrapped torch DataLoader"):
        DataLoader(TorchDataLoader(TensorDataset(x, y), batch_size=4)).new(shuffle=False)


def test_n_inp_follows_fastais_rule_unless_set():
    """All but the last element are inputs; a one-element batch is all input; read off the data."""
    from torch.utils.data import IterableDataset
    from torch.utils.data import DataLoader as TorchDL

    x, y = make_xy(20)
    assert DataLoaders(DataLoader((x, y))).n_inp == 1
    assert DataLoaders(DataLoader((x, x, y))).n_inp == 2
    assert DataLoaders(DataLoader(x)).n_inp == 1
    assert DataLoaders(DataLoader(TensorDataset(x, x, x, y))).n_inp == 3
    assert DataLoaders(DataLoader(list(zip(x, x, y)), bs=4)).n_inp == 2
    assert DataLoaders(DataLoader(TorchDL(TensorDataset(x, x, y), batch_size=4))).n_inp == 2
    assert DataLoaders(DataLoader((x, x, y)), n_inp=1).n_inp == 1
    dls = DataLoaders(DataLoader((x, x, y)))
    dls.n_inp = 1
    assert dls.n_inp == 1
    dls.n_inp = None  # back to the rule
    assert dls.n_inp == 2
    with pytest.raises(TypeError, match="n_inp"):
        DataLoaders(DataLoader((x, y)), n_inp="1")
    with pytest.raises(ValueError, match="n_inp"):
        dls.n_inp = 0

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(x, x, y))

        def __len__(self):
            return len(x)

    assert DataLoaders(DataLoader(TorchDL(Stream(), batch_size=4))).n_inp is None  # only a batch would tell


def test_reading_n_inp_draws_no_random_number():
    from torch.utils.data import DataLoader as TorchDL

    x, y = make_xy(20)
    dls = DataLoaders(DataLoader(TorchDL(TensorDataset(x, y), batch_size=4, shuffle=True)))
    state = torch.random.get_rng_state()
    assert dls.n_inp == 1
    assert torch.equal(state, torch.random.get_rng_state())


def test_tfmddl_is_fastais_name_for_the_loader():
    from minilearn import TfmdDL

    x, y = make_xy(20)
    dl = TfmdDL(TensorDataset(x, y), bs=8, shuffle=True, drop_last=True)
    assert isinstance(dl, DataLoader) and len(dl) == 2 and dl.bs == 8
    assert [b[0].shape[0] for b in dl] == [8, 8]


def test_empty_or_mismatched_sets_say_which_before_training():
    from torch import nn

    from minilearn import Learner

    x, y = make_xy(20)
    with pytest.raises(ValueError, match="^x and y: are empty"):
        DataLoaders.from_tensors(x[:0], y[:0], x, y)
    with pytest.raises(ValueError, match="^valid_x and valid_y: are empty"):
        DataLoaders.from_tensors(x, y, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"^valid_x: its items have shape \(5,\), the training items \(x\) \(3,\)"):
        DataLoaders.from_tensors(x, y, torch.randn(10, 5), y[:10])
    dls = DataLoaders(DataLoader((x, y), bs=4), DataLoader((torch.randn(8, 5), y[:8]), bs=4))
    learn = Learner(dls, nn.Linear(x.shape[1], 1), nn.MSELoss())
    with pytest.raises(ValueError, match=r"dls: loader 1's element 0 has items of shape \(5,\)"), learn.no_logging():
        learn.fit(1)
    assert learn.opt is None  # refused before anything was made

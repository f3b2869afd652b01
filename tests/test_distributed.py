"""DistributedDL and check_shardable: how each process's share of the data is split (one process, no group)."""

from __future__ import annotations

import pytest
import torch

from minilearn import DataLoader
from minilearn.callbacks.distributed import DistributedTrainer
from minilearn.distributed import DistributedDL, check_shardable


# ---------------------------------------------------------------- splitting (one process, no group)
def _loaders(n: int, bs: int, world: int, drop_last: bool = False, map_style: bool = False):
    """The plain loader and each rank's copy of it (same seed: the state every rank holds)."""
    x = torch.arange(n).float().unsqueeze(1)
    y = torch.arange(n)

    def make():
        data = list(zip(x, y)) if map_style else (x, y)
        return DataLoader(data, bs=bs, shuffle=True, seed=3, drop_last=drop_last)

    return make(), [make() for _ in range(world)]


@pytest.mark.parametrize("n, bs, world, drop_last, map_style", [
    (64, 16, 2, False, False), (37, 16, 2, False, False), (49, 16, 2, False, True),
    (37, 16, 3, False, False), (38, 8, 4, False, True), (37, 16, 2, True, False), (10, 4, 3, False, False),
])
def test_training_split_gives_each_global_batch_once_across_ranks(n, bs, world, drop_last, map_style):
    plain, copies = _loaders(n, bs, world, drop_last, map_style)
    shards = [DistributedDL(dl, r, world, training=True) for r, dl in enumerate(copies)]
    assert all(len(s) == len(plain) for s in shards)  # every rank steps together, as DDP needs
    for epoch in range(2):  # the second epoch draws a new permutation, the same on every rank
        per_rank = [list(s) for s in shards]
        for k, (xb, yb) in enumerate(plain):
            parts, real = [], 0
            for r in range(world):
                w = shards[r].batch_weight(k)
                part = per_rank[r][k][1]
                if w > 0:
                    parts.append(part)
                    assert w == pytest.approx(world * len(part) / len(yb))
                    real += len(part)
                else:  # fewer items than ranks: a stand-in item that changes no gradient
                    assert len(part) == 1 and part[0] == yb[0]
            assert real == len(yb) == shards[0].global_batch_size(k) == shards[-1].global_batch_size(k)
            assert torch.equal(torch.cat(parts), yb), f"epoch {epoch}, batch {k}"


@pytest.mark.parametrize("n, bs, world", [(45, 16, 2), (45, 16, 3), (2, 16, 3), (16, 4, 4)])
def test_validation_split_is_contiguous_blocks_in_order(n, bs, world):
    x, y = torch.randn(n, 2), torch.arange(n)
    valid = DataLoader((x, y), bs=bs)
    shards = [DistributedDL(valid, r, world, training=False) for r in range(world)]
    got = [yb for s in shards for _, yb in s]
    assert torch.equal(torch.cat(got), y)  # every item once, in the dataset's order
    assert all(len(yb) <= -(-bs // world) for yb in got)
    assert sum(len(s) for s in shards) == len(got)
    with pytest.raises(ValueError, match="batch_weight"):
        shards[0].batch_weight(0)


def test_one_rank_split_is_the_loader_itself():
    plain, (copy,) = _loaders(37, 16, 1)
    shard = DistributedDL(copy, 0, 1)
    for (xa, ya), (xb, yb) in zip(plain, shard):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert [shard.batch_weight(k) for k in range(len(shard))] == [1.0] * len(plain)


def test_bad_arguments_are_named():
    plain, _ = _loaders(8, 4, 1)
    with pytest.raises(ValueError, match="rank, world_size"):
        DistributedDL(plain, 2, 2)
    torch_dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    with pytest.raises(TypeError, match="dl: expected a minilearn DataLoader"):
        DistributedDL(DataLoader(torch_dl), 0, 2)
    with pytest.raises(ValueError, match="DistributedSampler"):
        check_shardable("dls.loaders[0]", DataLoader(torch_dl))
    with pytest.raises(TypeError, match="sync_loss"):
        DistributedTrainer(sync_loss="yes")

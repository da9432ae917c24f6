"""DDP building blocks without a trainer: per-rank samplers and the gather-by-index used by every evaluation."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spft.data.dataset import EpochSeededSampler, ShardSampler


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (7, 3), (1, 2)])
def test_shards_cover_the_split_once_and_training_ranks_step_together(n, world):
    shards = [list(ShardSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))  # evaluation: every image exactly once
    train = [EpochSeededSampler(n, seed=3, rank=r, world=world) for r in range(world)]
    for s in train:
        s.set_epoch(5)
    orders = [list(s) for s in train]
    assert len({len(o) for o in orders}) == 1 and all(len(o) == len(s) for o, s in zip(orders, train))
    assert set(i for o in orders for i in o) == set(range(n))  # padding repeats, never drops
    single = EpochSeededSampler(n, seed=3)
    single.set_epoch(5)
    perm = list(single)
    assert sorted(perm) == list(range(n))
    padded = (perm * (1 + world))[:len(orders[0]) * world]  # ranks deal out the single-process order
    assert all(orders[r] == padded[r::world] for r in range(world))
    keyed = EpochSeededSampler(n, seed=3, keyed=True)
    keyed.set_epoch(5)
    assert list(keyed) == [(i, 5) for i in single]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, world: int, port: int, n: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from spft.distributed import gather_by_index

    values = torch.arange(n, dtype=torch.float64) * 10
    mine = list(ShardSampler(n, rank, world))
    parts = {"index": [torch.tensor(mine[i:i + 2]) for i in range(0, len(mine), 2)],
             "probs": [values[mine[i:i + 2]].reshape(-1, 1) for i in range(0, len(mine), 2)],
             "loss": [torch.tensor([float(rank)])]}
    merged = gather_by_index(parts, world)
    out[rank] = (merged["index"].tolist(), merged["probs"].flatten().tolist(), sorted(merged["loss"].tolist()))
    dist.destroy_process_group()


def test_gather_by_index_returns_the_whole_split_in_order_on_every_rank():
    n, world = 7, 2
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_gather_worker, args=(world, _free_port(), n, out), nprocs=world, join=True)
        results = dict(out)
    for rank in range(world):
        index, probs, losses = results[rank]
        assert index == list(range(n)) and probs == [10.0 * i for i in range(n)] and losses == [0.0, 1.0]

"""Stage plan: which blocks train at which epoch (defaults, docs/design.md#stages-and-unfreezing:
12 blocks, top 10, 2 per epoch, 2 head epochs)."""

import pytest

from spft.recipe import StagePlan, TrainableState, describe, opening_epoch, part_opening_epoch, stage_at, trainable_at


def test_default_plan_table_for_12_blocks():
    plan = StagePlan(stage1_epochs=2, top_k=10, blocks_per_epoch=2)
    states = [trainable_at(plan, e, 12) for e in range(9)]
    assert [len(s.open_blocks) for s in states] == [0, 0, 2, 4, 6, 8, 10, 10, 10]
    assert [s.stage for s in states] == [1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert [s.final_norm for s in states] == [False, False] + [True] * 7
    assert not any(s.embeddings for s in states)
    assert states[3].open_blocks == (8, 9, 10, 11)
    assert states[8].open_blocks == tuple(range(2, 12))


def test_opening_epoch_agrees_with_trainable_at():
    plan = StagePlan(stage1_epochs=2, top_k=10, blocks_per_epoch=2)
    assert [opening_epoch(plan, i, 12) for i in range(12)] == [None, None, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2]
    for epoch in range(12):
        open_blocks = trainable_at(plan, epoch, 12).open_blocks
        expected = tuple(i for i in range(12) if (e := opening_epoch(plan, i, 12)) is not None and e <= epoch)
        assert open_blocks == expected


def test_unfreeze_false_stays_in_stage_1():
    plan = StagePlan(unfreeze=False)
    for epoch in range(20):
        assert stage_at(plan, epoch) == 1
        assert trainable_at(plan, epoch, 12) == TrainableState(1, (), False, False)
    assert opening_epoch(plan, 11, 12) is None
    assert part_opening_epoch(plan, "final_norm", 12) is None
    assert part_opening_epoch(plan, "head", 12) == 0


def test_embeddings_open_only_once_all_blocks_are_open():
    plan = StagePlan(stage1_epochs=1, top_k=None, blocks_per_epoch=2, embeddings=True)
    emb = [trainable_at(plan, e, 4).embeddings for e in range(4)]
    assert emb == [False, False, True, True]
    assert part_opening_epoch(plan, "embeddings", 4) == 2
    # top_k below n_blocks: never all open, so embeddings never open.
    partial = StagePlan(top_k=3, embeddings=True)
    assert not any(trainable_at(partial, e, 4).embeddings for e in range(10))
    assert part_opening_epoch(partial, "embeddings", 4) is None
    assert part_opening_epoch(StagePlan(top_k=None), "embeddings", 4) is None


def test_stage1_zero_and_top_k_larger_than_blocks():
    plan = StagePlan(stage1_epochs=0, top_k=50, blocks_per_epoch=3)
    assert [len(trainable_at(plan, e, 4).open_blocks) for e in range(3)] == [3, 4, 4]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"stage1_epochs": -1}, "stage1_epochs"), ({"blocks_per_epoch": 0}, "blocks_per_epoch"),
     ({"top_k": 0}, "top_k")],
)
def test_invalid_plan_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        StagePlan(**kwargs)


def test_invalid_queries():
    with pytest.raises(ValueError, match="epoch"):
        trainable_at(StagePlan(), -1, 12)
    with pytest.raises(ValueError, match="block_index"):
        opening_epoch(StagePlan(), 12, 12)
    with pytest.raises(ValueError, match="unknown part"):
        part_opening_epoch(StagePlan(), "neck", 12)


def test_describe():
    plan = StagePlan()
    assert describe(trainable_at(plan, 0, 12), 12) == "stage 1: head only (encoder frozen)"
    assert describe(trainable_at(plan, 3, 12), 12) == "stage 2: top 4/12 blocks + final norm trainable"
    full = StagePlan(top_k=None, embeddings=True)
    assert describe(trainable_at(full, 20, 12), 12) == "stage 2: top 12/12 blocks + final norm + embeddings trainable"

"""Freezing, optimizer parameter groups and the LR schedule on a tiny ViT-like model."""

import math
import pickle

import pytest
import torch
from torch import nn

from spft.errors import ConfigError
from spft.recipe import (
    LayerGroups,
    StagePlan,
    apply_trainable,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    count_trainable,
    frozen_prefix_length,
    lr_factor_at,
    open_steps,
    trainable_at,
)


class TinyEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 3, 8))


class TinyModel(nn.Module):
    def __init__(self, n_blocks=4):
        super().__init__()
        torch.manual_seed(0)
        self.embeddings = TinyEmbeddings()
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def groups(self):
        return LayerGroups(blocks=list(self.blocks), head=self.head, embeddings=self.embeddings, final_norm=self.norm)


@pytest.fixture
def model():
    return TinyModel()


def _numel(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def _flags(model):
    return {n: p.requires_grad for n, p in model.named_parameters()}


# ---- freezing ----------------------------------------------------------------------------------------------------

def test_apply_trainable_counts_and_idempotence(model):
    groups = model.groups()
    plan = StagePlan(stage1_epochs=2, top_k=None, blocks_per_epoch=1, embeddings=True)
    head, block, norm, emb = _numel(model.head), _numel(model.blocks[0]), _numel(model.norm), _numel(model.embeddings)
    expected = [head, head, head + block + norm, head + 2 * block + norm, head + 3 * block + norm,
                head + 4 * block + norm + emb]
    for epoch, want in enumerate(expected):
        state = trainable_at(plan, epoch, 4)
        assert apply_trainable(groups, state) == want
        flags = _flags(model)
        assert apply_trainable(groups, state) == want  # second call changes nothing
        assert _flags(model) == flags
        assert count_trainable(model) == want


def test_apply_trainable_can_go_back_for_resume(model):
    groups = model.groups()
    plan = StagePlan()
    apply_trainable(groups, trainable_at(plan, 5, 4))
    apply_trainable(groups, trainable_at(plan, 0, 4))
    assert count_trainable(model) == _numel(model.head)
    assert all(not p.requires_grad for p in model.blocks.parameters())


def test_frozen_prefix_length():
    plan = StagePlan(stage1_epochs=2, top_k=10, blocks_per_epoch=2)
    assert [frozen_prefix_length(trainable_at(plan, e, 12), 12) for e in range(8)] == [12, 12, 10, 8, 6, 4, 2, 2]


# ---- param groups ------------------------------------------------------------------------------------------------

def test_param_groups_partition_names_and_lrs(model):
    groups = model.groups()
    apply_trainable(groups, trainable_at(StagePlan(), 0, 4))  # stage 1: encoder frozen
    pgs = build_param_groups(groups, lr_encoder=3e-6, lr_head=5e-5, weight_decay=0.05)
    ids = [id(p) for g in pgs for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    names = [g["name"] for g in pgs]
    assert names == ["embeddings/decay", "embeddings/no_decay"] + [
        f"block{i}/{k}" for i in range(4) for k in ("decay", "no_decay")
    ] + ["final_norm/no_decay", "head/decay", "head/no_decay"]  # final_norm has no decayed params: omitted
    for g in pgs:
        assert g["lr"] == g["base_lr"] == (5e-5 if g["part"] == "head" else 3e-6)
        assert g["name"].startswith(g["part"] + "/")
        assert g["block"] == (int(g["part"][5:]) if g["part"].startswith("block") else None)
        assert g["weight_decay"] == (0.05 if g["name"].endswith("/decay") else 0.0)


def test_no_decay_on_norm_bias_1d_and_tokens(model):
    pgs = build_param_groups(model.groups(), 1e-5, 1e-4)
    decayed = {id(p) for g in pgs if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {
        model.embeddings.cls_token, model.embeddings.position_embeddings, model.embeddings.proj.bias,
        model.norm.weight, model.norm.bias, model.head.bias, *(b.bias for b in model.blocks),
    }
    assert not decayed & {id(p) for p in no_decay}
    assert decayed == {id(model.embeddings.proj.weight), id(model.head.weight), *(id(b.weight) for b in model.blocks)}


def test_shared_parameter_between_parts_is_an_error(model):
    head = nn.Linear(8, 8)
    head.weight = model.blocks[0].weight  # tied weights: the optimizer would see the parameter twice
    groups = LayerGroups(blocks=list(model.blocks), head=head)
    with pytest.raises(ValueError, match="shared by parts 'block0' and 'head'"):
        build_param_groups(groups, 1e-5, 1e-4)


def test_frozen_groups_exist_and_stay_unchanged(model):
    groups = model.groups()
    apply_trainable(groups, trainable_at(StagePlan(), 0, 4))
    opt = build_optimizer(groups, lr_encoder=1e-2, lr_head=1e-2)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["part"] for g in opt.param_groups} == {"embeddings", "block0", "block1", "block2", "block3",
                                                     "final_norm", "head"}
    before = [p.detach().clone() for p in model.blocks.parameters()]
    head_before = model.head.weight.detach().clone()
    x = torch.randn(5, 8)
    with torch.no_grad():
        for block in model.blocks:
            x = block(x)
    model.head(model.norm(x)).sum().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.blocks.parameters()))
    assert not torch.equal(head_before, model.head.weight)


# ---- schedule ----------------------------------------------------------------------------------------------------

def _cos(step, total, min_factor=0.0):
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def test_lr_factor_formula():
    for step in (0, 1, 17, 50, 99, 100, 150):
        assert lr_factor_at(step, 100, 0, 0) == pytest.approx(_cos(step, 100))
        assert lr_factor_at(step, 100, 0, 0, min_factor=0.1) == pytest.approx(_cos(step, 100, 0.1))
    assert lr_factor_at(9, 100, 10, 4) == 0.0
    assert lr_factor_at(10, 100, 10, 4) == pytest.approx(_cos(10, 100) * 0.25)
    assert lr_factor_at(12, 100, 10, 4) == pytest.approx(_cos(12, 100) * 0.75)
    assert lr_factor_at(13, 100, 10, 4) == pytest.approx(_cos(13, 100))
    assert lr_factor_at(50, 100, None, 4) == 0.0


def test_constant_schedule_keeps_each_groups_lr_and_its_warmup(model):
    for step in (0, 17, 50, 99, 100, 150):
        assert lr_factor_at(step, 100, 0, 0, schedule="constant") == 1.0
        assert lr_factor_at(step, 100, 0, 0, min_factor=0.1, schedule="constant") == 1.0
    assert lr_factor_at(9, 100, 10, 4, schedule="constant") == 0.0  # not open yet
    assert lr_factor_at(11, 100, 10, 4, schedule="constant") == pytest.approx(0.5)  # warm-up still applies
    opt = build_optimizer(model.groups(), lr_encoder=1e-3, lr_head=1e-2)
    sched = build_scheduler(opt, StagePlan(stage1_epochs=0, top_k=None, blocks_per_epoch=4, embeddings=True),
                            n_blocks=4, steps_per_epoch=5, total_steps=20, schedule="constant")
    for _ in range(20):
        assert [g["lr"] for g in opt.param_groups] == [g["base_lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
    with pytest.raises(ConfigError, match="optim.schedule"):
        lr_factor_at(0, 100, 0, 0, schedule="linear")


def _opt_and_sched(model, warmup=3):
    groups = model.groups()
    opt = build_optimizer(groups, lr_encoder=1e-3, lr_head=1e-2)
    plan = StagePlan(stage1_epochs=2, top_k=3, blocks_per_epoch=2)
    sched = build_scheduler(opt, plan, n_blocks=4, steps_per_epoch=5, total_steps=40, warmup_steps=warmup)
    return opt, sched, plan


def test_open_steps_and_scheduler_lrs(model):
    opt, sched, plan = _opt_and_sched(model)
    steps = dict(zip([g["name"] for g in opt.param_groups], open_steps(opt.param_groups, plan, 4, 5)))
    assert steps["head/decay"] == 0
    assert steps["block3/decay"] == steps["block2/no_decay"] == steps["final_norm/no_decay"] == 10
    assert steps["block1/decay"] == 15
    assert steps["block0/decay"] is None and steps["embeddings/no_decay"] is None
    for step in range(40):
        for g, name in zip(opt.param_groups, steps):
            assert g["lr"] == pytest.approx(g["base_lr"] * lr_factor_at(step, 40, steps[name], 3))
        opt.step()
        sched.step()
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["block0/decay"]["lr"] == 0.0


def test_scheduler_state_dict_round_trip(model):
    opt, sched, _ = _opt_and_sched(model)
    for _ in range(12):
        opt.step()
        sched.step()
    opt_sd, sched_sd = opt.state_dict(), pickle.loads(pickle.dumps(sched.state_dict()))
    opt2, sched2, _ = _opt_and_sched(TinyModel())
    opt2.load_state_dict(opt_sd)
    sched2.load_state_dict(sched_sd)
    for _ in range(5):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]
    assert sched2.last_epoch == 17

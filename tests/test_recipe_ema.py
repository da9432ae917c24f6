"""EMA through torch's AveragedModel with the warm-up avg_fn, checked against a hand-written recurrence."""

import pickle

import pytest
import torch
from torch import nn

from spft.recipe import build_ema, ema_decay_at


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.bn = nn.BatchNorm1d(2)  # float buffers averaged, num_batches_tracked (int) must not break


def test_decay_values():
    assert ema_decay_at(0) == pytest.approx(0.1)
    assert ema_decay_at(5) == pytest.approx(6 / 15)
    assert ema_decay_at(10**5) == 0.999
    assert ema_decay_at(20, decay=0.5) == 0.5
    assert ema_decay_at(0, warmup=False) == 0.999
    with pytest.raises(ValueError, match="decay"):
        ema_decay_at(0, decay=1.5)


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_matches_hand_recurrence(warmup):
    model = Tiny()
    ema = build_ema(model, decay=0.9, warmup=warmup)
    assert all(not p.requires_grad for p in ema.parameters())
    values = [[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0], [2.0, 2.0], [0.0, 10.0], [5.0, -5.0]]
    expected = None
    for k, value in enumerate(values):
        with torch.no_grad():
            model.w.copy_(torch.tensor(value))
            model.bn.num_batches_tracked += 1
        ema.update_parameters(model)
        if k == 0:
            expected = list(value)  # first update copies
        else:
            d = min(0.9, (1 + k) / (10 + k)) if warmup else 0.9
            expected = [d * e + (1 - d) * v for e, v in zip(expected, value)]
        assert ema.module.w.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)  # float32 vs float64
    assert int(ema.module.bn.num_batches_tracked) == len(values)
    assert int(ema.n_averaged) == len(values)


def test_frozen_parameters_stay_bit_identical_and_resume_reads_the_counter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    ema = build_ema(model, decay=0.99)
    for _ in range(5):
        with torch.no_grad():
            model[1].weight.add_(torch.randn_like(model[1].weight))
        ema.update_parameters(model)
    assert torch.equal(ema.module[0].weight, model[0].weight)  # lerp(a, a, w) == a exactly
    assert not torch.equal(ema.module[1].weight, model[1].weight)
    # a block opened later starts from the equal copy and is averaged from then on
    model[0].requires_grad_(True)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    before = ema.module[0].weight.clone()
    ema.update_parameters(model)
    d = ema_decay_at(5, 0.99)
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * model[0].weight)
    # a reloaded EMA continues from the saved count, not from a copy
    fresh = build_ema(model, decay=0.99)
    fresh.load_state_dict(ema.state_dict())
    fresh.update_parameters(model)
    ema.update_parameters(model)
    assert int(fresh.n_averaged) == 7 and torch.equal(fresh.module[1].weight, ema.module[1].weight)


def test_ema_is_picklable():
    ema = pickle.loads(pickle.dumps(build_ema(Tiny(), 0.99, warmup=False)))
    assert ema.decay == 0.99 and not ema.warmup

"""EMA through torch's AveragedModel with the warm-up avg_fn, checked against a hand-written recurrence."""

import pickle

import pytest
import torch
from torch import nn

from spft.recipe import EmaAvgFn, build_ema, ema_decay_at


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
        assert ema.module.w.tolist() == pytest.approx(expected)
    assert int(ema.module.bn.num_batches_tracked) == len(values)
    assert int(ema.n_averaged) == len(values)


def test_avg_fn_is_picklable():
    fn = pickle.loads(pickle.dumps(EmaAvgFn(0.99, warmup=False)))
    out = fn(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor(7))
    assert out.tolist() == pytest.approx([0.99])

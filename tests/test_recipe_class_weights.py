"""Class weights: inverse-prevalence init with NaN labels, heuristics, AUC refinement, state round-trip."""

import math

import pytest
import torch

from spft.recipe import (
    ClassWeights,
    apply_heuristics,
    detection_initial_weights,
    initial_weights,
    normalise,
    refine,
)

NAN = float("nan")
CLASSES = ["Effusion", "Nodule", "Hernia"]
# Effusion: 2 pos / 4 neg -> 2; Nodule: 1 pos / 4 neg (one unknown) -> 4; Hernia: no positives -> mean(2, 4) = 3.
LABELS = torch.tensor([
    [1, 0, 0],
    [0, 0, 0],
    [0, 1, 0],
    [1, NAN, 0],
    [0, 0, 0],
    [0, 0, 0],
], dtype=torch.float32)


def test_initial_weights_hand_computed():
    w0, undefined = initial_weights(LABELS)
    assert w0.tolist() == pytest.approx([2.0, 4.0, 3.0])
    assert undefined == [2]
    w = normalise(w0)
    assert w.tolist() == pytest.approx([2 / 3, 4 / 3, 1.0])
    assert float(w.mean()) == pytest.approx(1.0)


def test_class_without_negatives_is_undefined_too():
    w0, undefined = initial_weights(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, NAN]]))
    assert undefined == [1]
    assert w0.tolist() == pytest.approx([2.0, 2.0])


def test_heuristics_multiply_then_renormalise():
    w = normalise(initial_weights(LABELS)[0])
    out = apply_heuristics(w, CLASSES, {"Nodule": 2.0})
    assert out.tolist() == pytest.approx([6 / 13, 24 / 13, 9 / 13])
    assert float(out.mean()) == pytest.approx(1.0)


def test_unknown_heuristic_class_names_it_and_suggests():
    with pytest.raises(ValueError) as err:
        apply_heuristics(torch.ones(3), CLASSES, {"Efusion": 2.0})
    msg = str(err.value)
    assert "'Efusion'" in msg and "Did you mean 'Effusion'" in msg and "Effusion, Nodule, Hernia" in msg


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_non_positive_multiplier(bad):
    with pytest.raises(ValueError, match="Nodule"):
        apply_heuristics(torch.ones(3), CLASSES, {"Nodule": bad})


def test_refine_direction_and_undefined():
    w = torch.ones(4)
    out = refine(w, [0.6, 0.8, None, 0.7], reference=torch.ones(4))
    raw = torch.tensor([math.exp(0.1), math.exp(-0.1), 1.0, 1.0])
    assert out.tolist() == pytest.approx((raw / raw.mean()).tolist())
    assert out[0] > out[3] > out[1]  # lowest AUC gains, highest loses
    assert float(out[2]) == pytest.approx(float(out[3]))  # undefined kept (same as the class at the mean AUC)
    assert float(out.mean()) == pytest.approx(1.0)
    nan_out = refine(w, [0.6, 0.8, NAN, 0.7], reference=torch.ones(4))
    assert torch.allclose(out, nan_out)


def test_refine_clips_to_reference_bounds():
    out = refine(torch.ones(2), [0.0, 1.0], reference=torch.ones(2), eta=10.0, w_min=0.5, w_max=2.0)
    # exp(+-5) clipped to [0.5, 2] -> [2, 0.5], then mean 1 -> [1.6, 0.4]
    assert out.tolist() == pytest.approx([1.6, 0.4])
    assert torch.equal(refine(torch.ones(2), [None, NAN], torch.ones(2)), torch.ones(2))


def test_class_weights_object_and_round_trip(tmp_path):
    cw = ClassWeights(CLASSES, LABELS, heuristic={"Nodule": 2.0})
    assert cw.undefined_classes == ["Hernia"]
    assert cw.current.tolist() == pytest.approx([6 / 13, 24 / 13, 9 / 13])
    cw.refine(2, [0.7, 0.9, None])
    cw.refine(3, [0.8, 0.6, 0.7])
    d = cw.as_dict()
    assert set(d) == {"classes", "initial", "after_heuristics", "current", "refinements", "enabled",
                      "undefined_classes"}
    assert [r["epoch"] for r in d["refinements"]] == [2, 3]
    assert d["current"] == pytest.approx(dict(zip(CLASSES, cw.current.tolist())))
    torch.save(cw.state_dict(), tmp_path / "cw.pt")
    other = ClassWeights(CLASSES, LABELS)
    other.load_state_dict(torch.load(tmp_path / "cw.pt", weights_only=True))
    assert other.as_dict() == d
    assert torch.equal(other.current, cw.current) and torch.equal(other.after_heuristics, cw.after_heuristics)
    with pytest.raises(ValueError, match="classes"):
        ClassWeights(["a", "b", "c"], LABELS).load_state_dict(cw.state_dict())


def test_disabled_weights_are_ones_and_refine_is_noop():
    cw = ClassWeights(CLASSES, None, enabled=False)
    assert cw.refine(2, [0.5, 0.9, 0.7]).tolist() == [1.0, 1.0, 1.0]
    assert cw.as_dict()["refinements"] == [] and cw.as_dict()["enabled"] is False
    with pytest.raises(ValueError, match="Efusion"):
        ClassWeights(CLASSES, None, heuristic={"Efusion": 2.0}, enabled=False)


def test_detection_initial_weights():
    # total 10: w0 = [9/1, 6/4, 5/5 = 1, mean(9, 1.5, 1) for the empty class]
    w = detection_initial_weights([1, 4, 5, 0])
    raw = torch.tensor([9.0, 1.5, 1.0, 11.5 / 3])
    assert w.tolist() == pytest.approx((raw / raw.mean()).tolist())
    with pytest.raises(ValueError):
        detection_initial_weights([1, -1])

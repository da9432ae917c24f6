"""AUC parity with scikit-learn (ties included), NaN masking and undefined classes excluded from the macro."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spft.metrics import binary_auc, multilabel_auc


def test_binary_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 200)
        s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding creates many ties
        if 0 < y.sum() < len(y):
            assert binary_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_multilabel_macro_excludes_undefined_and_masks_nan():
    rng = np.random.default_rng(1)
    probs = np.round(rng.random((100, 3)), 2)
    labels = rng.integers(0, 2, (100, 3)).astype(float)
    labels[:, 2] = 0.0  # no positive: undefined
    labels[::7, 0] = np.nan  # unknown labels are ignored for that class only
    res = multilabel_auc(probs, labels, ["a", "b", "c"])
    known = ~np.isnan(labels[:, 0])
    ref_a = roc_auc_score(labels[known, 0], probs[known, 0])
    ref_b = roc_auc_score(labels[:, 1], probs[:, 1])
    assert res.per_class["a"] == pytest.approx(ref_a)
    assert res.per_class["b"] == pytest.approx(ref_b)
    assert res.per_class["c"] is None and res.excluded == ["c"]
    assert res.macro == pytest.approx((ref_a + ref_b) / 2)


def test_all_undefined_gives_none():
    res = multilabel_auc(np.zeros((4, 1)), np.ones((4, 1)), ["x"])
    assert res.macro is None and res.excluded == ["x"]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        multilabel_auc(np.zeros((4, 3)), np.zeros((4, 3)), ["a", "b"])

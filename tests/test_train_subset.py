"""``data.train_subset``: N training images, seeded and stratified per class; val and test untouched; validated."""

from __future__ import annotations

import numpy as np
import pytest

from spft.config import ConfigError, load_config
from spft.data.contract import LabelTable
from spft.data.registry import subset_rows, train_subset
from spft.errors import DataError


def _table(n_train=400, n_other=60, seed=0):
    rng = np.random.default_rng(seed)
    n = n_train + 2 * n_other
    labels = (rng.random((n, 3)) < np.array([0.02, 0.2, 0.5])).astype(float)
    labels[5, 2] = np.nan
    splits = ["train"] * n_train + ["val"] * n_other + ["test"] * n_other
    ids = [f"i{i}" for i in range(n)]
    return LabelTable(classes=["rare", "mid", "common"], paths=ids, ids=ids, groups=ids, splits=splits,
                      labels=labels)


def test_subset_size_seeded_stratified_and_val_test_untouched():
    table = _table()
    sub = train_subset(table, 100, seed=3)
    assert sub.split_sizes()["n_images"] == {"train": 100, "val": 60, "test": 60}
    for split in ("val", "test"):  # the same rows, in the same order
        assert [table.ids[i] for i in table.indices(split)] == [sub.ids[i] for i in sub.indices(split)]
    train_ids = [sub.ids[i] for i in sub.indices("train")]
    assert set(train_ids) <= {table.ids[i] for i in table.indices("train")}
    again, other = train_subset(table, 100, seed=3), train_subset(table, 100, seed=4)
    assert train_ids == [again.ids[i] for i in again.indices("train")]  # deterministic
    assert train_ids != [other.ids[i] for i in other.indices("train")]  # seeded
    y = np.nan_to_num(table.labels[table.indices("train")]) > 0.5
    ys = np.nan_to_num(sub.labels[sub.indices("train")]) > 0.5
    for c in range(3):  # positives per class: the pool's prevalence (at least one), within one image
        assert abs(ys[:, c].sum() - max(1, round(100 * y[:, c].mean()))) <= 1
    assert "train subset: 100 of 400" in sub.split_policy


def test_subset_rows_keeps_a_rare_class_and_all_rows_when_n_is_large():
    labels = np.zeros((200, 2))
    labels[7, 0] = 1  # one positive in the pool
    labels[:50, 1] = 1
    rows = subset_rows(labels, 10, seed=0)
    assert len(rows) == 10 and 7 in rows and len(set(rows)) == 10
    assert list(subset_rows(labels, 500, seed=0)) == list(range(200))


def test_subset_larger_than_the_train_split_is_refused():
    with pytest.raises(DataError, match="train_subset"):
        train_subset(_table(n_train=50), 51, seed=0)


@pytest.mark.parametrize("bad", ["0", "-5", "true", "2.5"])
def test_config_validates_train_subset(bad):
    with pytest.raises(ConfigError, match="train_subset"):
        load_config(None, ["data.name=phantom", "model.name=m", f"data.train_subset={bad}"])


def test_config_accepts_train_subset():
    assert load_config(None, ["data.name=phantom", "model.name=m", "data.train_subset=100"]).data.train_subset == 100

"""Splits a reviewer can trust: rare findings reach every split, grouped by patient; undefined AUCs flagged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image

from spft.data.splits import grouped_split, multilabel_grouped_split


def _table(seed: int = 0):
    """200 patients with 1-3 images each; a rare finding on 6 patients, a common one on ~30 %."""
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    rare = set(rng.choice(200, 6, replace=False).tolist())
    for p in range(200):
        common = rng.random() < 0.3
        for _ in range(int(rng.integers(1, 4))):
            groups.append(f"p{p:03d}")
            labels.append([float(p in rare), float(common), np.nan if rng.random() < 0.1 else 0.0])
    return groups, np.array(labels)


def test_rare_class_reaches_every_split_and_groups_stay_whole():
    groups, labels = _table()
    splits, method = multilabel_grouped_split(groups, labels, [0.7, 0.15, 0.15], seed=0)
    assert method == "iterative-stratified-grouped"
    for s in ("train", "val", "test"):
        assert any(sp == s and y == 1 for sp, y in zip(splits, labels[:, 0])), s  # 6 positive patients of 200
    split_of: dict[str, str] = {}
    assert all(split_of.setdefault(g, s) == s for g, s in zip(groups, splits))  # no patient in two splits
    n = len(groups)
    assert abs(splits.count("train") / n - 0.7) < 0.05 and abs(splits.count("val") / n - 0.15) < 0.05
    # the plain grouped split misses the rare finding in some split for this table
    plain = grouped_split(groups, [0.7, 0.15, 0.15], seed=0)
    assert not all(any(sp == s and y == 1 for sp, y in zip(plain, labels[:, 0])) for s in ("val", "test"))


def test_same_seed_same_split_whatever_the_row_order():
    groups, labels = _table()
    a, _ = multilabel_grouped_split(groups, labels, [0.7, 0.15, 0.15], seed=3)
    b, _ = multilabel_grouped_split(groups, labels, [0.7, 0.15, 0.15], seed=3)
    assert a == b
    order = np.random.default_rng(1).permutation(len(groups))
    c, _ = multilabel_grouped_split([groups[i] for i in order], labels[order], [0.7, 0.15, 0.15], seed=3)
    assert dict(zip(groups, a)) == dict(zip([groups[i] for i in order], c))
    d, _ = multilabel_grouped_split(groups, labels, [0.7, 0.15, 0.15], seed=4)
    assert d != a
    e, _ = multilabel_grouped_split(groups, labels, [0.9, 0.1, 0.0], seed=3)  # carving validation only
    assert "test" not in e


def _own_csv(tmp_path, rows: list[dict]) -> str:
    (tmp_path / "img").mkdir(exist_ok=True)
    for r in rows:
        Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / r["image"])
    pd.DataFrame(rows).to_csv(tmp_path / "own.csv", index=False)
    return str(tmp_path / "own.csv")


@pytest.mark.slow
def test_own_csv_split_is_stratified_and_recorded(tmp_path):
    groups, labels = _table()
    rows = [{"image": f"img/{i}.png", "pid": g, "rare": "" if np.isnan(y[0]) else int(y[0]), "common": int(y[1])}
            for i, (g, y) in enumerate(zip(groups, labels))]
    csv = _own_csv(tmp_path, rows)
    proc = run_cli("data", "check", "configs/phantom_cxr.yaml", "data.name=csv", f"data.csv={csv}",
                   "data.label_columns=[rare, common]", "data.patient_column=pid", "--json")
    report = json.loads(proc.stdout)
    assert "method iterative-stratified-grouped" in report["split_policy"]
    assert all(report["splits"][s]["positives"]["rare"] > 0 for s in ("train", "val", "test"))
    assert report["leaked_groups"] == [] and report["undefined_auc"] == {} and report["ok"]


def test_data_check_warns_for_undefined_auc_and_fails_without_any_in_val(tmp_path):
    from spft.config import load_config
    from spft.data.check import check_data, format_report

    rows = []
    for i in range(30):
        split = "train" if i < 20 else "val" if i < 25 else "test"
        rare = int(split == "train" and i % 3 == 0)
        rows.append({"image": f"img/{i}.png", "split": split, "rare": rare, "always": 1 if split != "train" else i % 2})
    csv = _own_csv(tmp_path, rows)
    cfg = load_config("configs/phantom_cxr.yaml", ["data.name=csv", f"data.csv={csv}", "data.split_column=split",
                                                   "data.label_columns=[rare, always]"])
    report = check_data(cfg)
    assert report.undefined_auc["val"] == {"no_positives": ["rare"], "no_negatives": ["always"]}
    assert any(w.startswith("val: AUC undefined for 2 class(es)") for w in report.warnings)
    assert any(w.startswith("test: AUC undefined") for w in report.warnings)
    assert any("no class has both positives and negatives in val" in p for p in report.problems)
    assert "result: FAILED" in format_report(report)

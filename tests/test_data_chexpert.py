"""CheXpert adapter: both releases' ``Path`` prefixes, views from the CSV, uncertainty and blank policies, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets_fixtures import CHEXPERT_OBS, make_chexpert

from spft.config import ConfigError, load_config
from spft.data.registry import build_table, load_table


def _cfg(root: Path, *extra: str):
    return load_config("configs/chexpert.yaml", [f"data.root={root}", *extra])


def _raw(copy: dict, views: str = "frontal") -> np.ndarray:
    """Independent reading of train.csv then valid.csv: 1 / 0 / -1 / NaN, rows kept by the Frontal/Lateral column."""
    frames = []
    for csv in (copy["train_csv"], copy["valid_csv"]):
        df = pd.read_csv(csv)
        if views != "both":
            df = df[df["Frontal/Lateral"].str.lower() == views]
        frames.append(df[CHEXPERT_OBS].to_numpy(dtype=np.float32))
    return np.concatenate(frames)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("chexpert")
    return root, make_chexpert(root)


@pytest.mark.parametrize("release, csv_at_root", [("small", False), ("full", False), ("small", True)])
def test_path_prefix_of_both_releases(tmp_path, release, csv_at_root):
    copy = make_chexpert(tmp_path, release=release, csv_at_root=csv_at_root)
    table = build_table(_cfg(tmp_path).data, seed=0)  # refuses missing files: every Path resolved
    assert all(Path(p).is_file() for p in table.paths)
    prefix = "CheXpert-v1.0-small/" if release == "small" else "CheXpert-v1.0/"
    assert prefix in pd.read_csv(copy["train_csv"])["Path"].iloc[0]
    assert table.ids[0] == "train/patient00001/study1/view1_frontal.jpg"  # release prefix stripped from the id
    assert table.groups[0] == "patient00001"


def test_views_come_from_the_csv_column_not_the_file_name(small):
    root, copy = small
    counts = {}
    for views in ("frontal", "lateral", "both"):
        table = load_table(_cfg(root, f"data.views={views}").data, seed=0)
        counts[views] = len(table.ids)
        assert len(table.ids) == len(_raw(copy, views))
    assert counts["frontal"] + counts["lateral"] == counts["both"]
    frontal = load_table(_cfg(root).data, seed=0)
    assert "train/patient00003/study1/view1_lateral.jpg" in frontal.ids  # named lateral, CSV says Frontal


@pytest.mark.parametrize("uncertain, blank", [("ignore", "zero"), ("zeros", "zero"), ("ones", "ignore"),
                                              ("{Edema: ones, Atelectasis: zeros}", "zero"),
                                              ("{default: ones, Edema: ignore}", "ignore")])
def test_uncertainty_and_blank_policies(small, uncertain, blank):
    root, copy = small
    table = load_table(_cfg(root, f"data.uncertain={uncertain}", f"data.blank={blank}").data, seed=0)
    raw = _raw(copy)
    if uncertain.startswith("{"):
        mapping = dict(item.split(": ") for item in uncertain.strip("{}").split(", "))
        policy = {c: mapping.get(c, mapping.get("default", "ignore")) for c in CHEXPERT_OBS}
    else:
        policy = {c: uncertain for c in CHEXPERT_OBS}
    expected = raw.copy()
    for j, c in enumerate(CHEXPERT_OBS):
        expected[raw[:, j] == -1, j] = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[policy[c]]
        expected[np.isnan(raw[:, j]), j] = 0.0 if blank == "zero" else np.nan
    np.testing.assert_array_equal(table.labels, expected)  # NaN positions must match too
    np.testing.assert_array_equal(table.uncertain, raw == -1)
    assert len(table.ids) == len(raw)  # U-Ignore masks labels, it never drops images
    assert f"blank -> {'0 (negative)' if blank == 'zero' else 'unknown (masked)'}" in table.label_policy


def test_official_valid_is_test_and_train_is_split_by_patient(small):
    root, copy = small
    table = build_table(_cfg(root, "data.val_fraction=0.25").data, seed=0)
    valid = pd.read_csv(copy["valid_csv"])
    test_ids = [i for i, s in zip(table.ids, table.splits) if s == "test"]
    assert test_ids == [p.split("/", 1)[1] for p in valid["Path"]]
    assert table.leaked_groups() == []
    val_patients = {g for g, s in zip(table.groups, table.splits) if s == "val"}
    assert val_patients and all(g.startswith("patient") for g in val_patients)
    assert "official valid.csv = test" in table.split_policy


def test_label_columns_select_the_competition_tasks(small):
    root, _ = small
    tasks = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    full = load_table(_cfg(root).data, seed=0)
    table = load_table(_cfg(root, f"data.label_columns=[{', '.join(tasks)}]").data, seed=0)
    assert table.classes == tasks
    np.testing.assert_array_equal(table.labels, full.labels[:, [CHEXPERT_OBS.index(t) for t in tasks]])
    with pytest.raises(KeyError, match=r"data.label_columns\[0\]'.*did you mean 'Edema'"):
        load_table(_cfg(root, "data.label_columns=[Edemma]").data, seed=0)


def test_bad_values_and_policies_are_named(tmp_path):
    copy = make_chexpert(tmp_path)
    with pytest.raises(ValueError, match=r"'data.uncertain.Edma': not a CheXpert observation — did you mean 'Edema'"):
        load_table(_cfg(tmp_path, "data.uncertain={Edma: ones}").data, seed=0)
    with pytest.raises(ConfigError, match=r"'data.uncertain.Edema': expected one of ignore, zeros, ones"):
        _cfg(tmp_path, "data.uncertain={Edema: one}")
    with pytest.raises(ConfigError, match=r"'data.uncertain': expected one of ignore, zeros, ones"):
        _cfg(tmp_path, "data.uncertain=multiclass")
    df = pd.read_csv(copy["train_csv"], dtype=str, keep_default_na=False)
    df.loc[2, "Edema"] = "2.0"
    df.to_csv(copy["train_csv"], index=False)
    with pytest.raises(ValueError, match=r"train.csv: row 4 column 'Edema': value '2.0' is not 1, 0, -1 or blank"):
        load_table(_cfg(tmp_path).data, seed=0)
    (copy["valid_csv"]).unlink()
    with pytest.raises(FileNotFoundError, match="valid.csv not found next to train.csv"):
        load_table(_cfg(tmp_path).data, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_validation_carve_is_stratified_and_grouped(tmp_path, seed):
    """Fracture positive for 4 of the 20 train patients only: it reaches train and validation, whatever the seed."""
    copy = make_chexpert(tmp_path)
    df = pd.read_csv(copy["train_csv"], dtype=str, keep_default_na=False)
    rare = {"patient00002", "patient00007", "patient00013", "patient00018"}
    patient = df["Path"].str.extract(r"(patient\d+)")[0]
    df["Fracture"] = np.where(patient.isin(rare), "1.0", "0.0")
    df.to_csv(copy["train_csv"], index=False)
    cfg = _cfg(tmp_path, "data.val_fraction=0.25", f"data.split_seed={seed}").data
    table = build_table(cfg, seed=0)
    fracture = table.labels[:, CHEXPERT_OBS.index("Fracture")] == 1
    carved = np.array([s != "test" for s in table.splits])
    assert {table.groups[i] for i in np.flatnonzero(fracture & carved)} == rare
    assert {s for s, f, c in zip(table.splits, fracture, carved) if f and c} == {"train", "val"}
    assert table.leaked_groups() == []
    test = {i for i, s in zip(table.ids, table.splits) if s == "test"}
    assert test == {i for i in table.ids if i.startswith("valid/")}  # the official valid.csv stays the test split
    assert "method iterative-stratified-grouped" in table.split_policy
    assert load_table(cfg, seed=0).splits == table.splits

"""The generic CSV dataset: columns by name, NaN for blanks, grouped splits without leakage, errors that name things."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spft.config import load_config
from spft.data.csv_dataset import read_csv_table
from spft.data.dataset import EpochSeededSampler, ImageDataset
from spft.data.splits import grouped_split
from spft.data.transforms import ImageTransform


def _write_dataset(root, n=30, with_split=True):
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((40, 50), i * 5 % 255, np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({"file": f"img/{i}.png", "pid": f"p{i // 3}", "a": i % 2, "b": "" if i % 5 == 0 else (i // 2) % 2,
                     "split": ["train", "train", "train", "val", "test"][(i // 3) % 5]})
    df = pd.DataFrame(rows)
    if not with_split:
        df = df.drop(columns="split")
    df.to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _cfg(csv, *extra):
    return load_config(None, ["model.config={model_type: dinov2}", f"data.csv={csv}", "data.image_column=file",
                              "data.label_columns=[a, b]", *extra]).data


def test_reads_labels_with_blanks_as_nan(tmp_path):
    csv = _write_dataset(tmp_path)
    table = read_csv_table(_cfg(csv, "data.split_column=split", "data.patient_column=pid"), seed=0)
    assert table.classes == ["a", "b"]
    assert np.isnan(table.labels[0, 1]) and table.labels[1, 0] == 1.0
    assert np.isnan(table.labels[:, 1]).sum() == 6
    assert set(table.splits) == {"train", "val", "test"} and table.leaked_groups() == []


def test_grouped_split_keeps_patients_together(tmp_path):
    csv = _write_dataset(tmp_path, n=90, with_split=False)
    table = read_csv_table(_cfg(csv, "data.patient_column=pid", "data.split_fractions=[0.6, 0.2, 0.2]"), seed=3)
    assert table.leaked_groups() == []
    counts = {s: len(table.indices(s)) for s in ("train", "val", "test")}
    assert abs(counts["train"] - 54) <= 3 and abs(counts["val"] - 18) <= 3, counts
    again = read_csv_table(_cfg(csv, "data.patient_column=pid", "data.split_fractions=[0.6, 0.2, 0.2]"), seed=3)
    assert again.splits == table.splits  # seeded
    assert "grouped by 'pid'" in table.split_policy


def test_grouped_split_ignores_row_order():
    groups = [f"g{i % 17}" for i in range(100)]
    a = dict(zip(groups, grouped_split(groups, [0.7, 0.15, 0.15], 0)))
    b = dict(zip(groups[::-1], grouped_split(groups[::-1], [0.7, 0.15, 0.15], 0)))
    assert a == b


def test_missing_image_is_named(tmp_path):
    csv = _write_dataset(tmp_path)
    (tmp_path / "img" / "7.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 listed image\(s\) not found.*img/7.png"):
        read_csv_table(_cfg(csv, "data.split_column=split"), seed=0)


def test_unknown_label_column_is_named(tmp_path):
    csv = _write_dataset(tmp_path)
    with pytest.raises(KeyError, match=r"column 'bb' \(from data.label_columns\[1\]\) not found — did you mean 'b'"):
        read_csv_table(_cfg(csv, "data.label_columns=[a, bb]", "data.split_column=split"), seed=0)


@pytest.mark.parametrize("key", ["split_column", "patient_column"])
def test_split_or_patient_column_asked_for_but_absent(tmp_path, key):
    csv = _write_dataset(tmp_path, with_split=False)
    with pytest.raises(KeyError, match=f"column 'visit' \\(from data.{key}\\) not found"):
        read_csv_table(_cfg(csv, f"data.{key}=visit"), seed=0)


def test_bad_label_value_names_row_and_column(tmp_path):
    csv = _write_dataset(tmp_path)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[4, "a"] = "-1"
    df.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"row 6 column 'a': label '-1' is not 1/0 \(or 1.0/0.0, true/false, "
                                         r"yes/no\) or blank"):
        read_csv_table(_cfg(csv, "data.split_column=split"), seed=0)


def test_label_spellings_the_message_lists_are_accepted(tmp_path):
    csv = _write_dataset(tmp_path)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    spellings = ["1", "0", "1.0", "0.0", "TRUE", "false", "Yes", "no"]
    df.loc[:len(spellings) - 1, "a"] = spellings
    df.to_csv(csv, index=False)
    table = read_csv_table(_cfg(csv, "data.split_column=split"), seed=0)
    assert table.labels[:len(spellings), 0].tolist() == [1.0, 0.0] * 4


def test_bad_split_value_and_leakage(tmp_path):
    csv = _write_dataset(tmp_path)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[0, "split"] = "holdout"
    df.to_csv(csv, index=False)
    with pytest.raises(ValueError, match="row 2 column 'split': split 'holdout'"):
        read_csv_table(_cfg(csv, "data.split_column=split"), seed=0)
    df.loc[0, "split"] = "test"  # patient p0 now in train and test
    df.to_csv(csv, index=False)
    with pytest.raises(ValueError, match="leakage.*p0"):
        read_csv_table(_cfg(csv, "data.split_column=split", "data.patient_column=pid"), seed=0)


def test_dataset_sample_contract(tmp_path):
    csv = _write_dataset(tmp_path)
    table = read_csv_table(_cfg(csv, "data.split_column=split", "data.patient_column=pid"), seed=0)
    ds = ImageDataset(table, "train", ImageTransform(16, (0.5,) * 3, (0.25,) * 3))
    sample = ds[0]
    assert set(sample) == {"image", "labels", "id", "group", "index"} and sample["index"] == 0
    assert sample["image"].shape == (3, 16, 16) and sample["labels"].shape == (2,)
    assert sample["id"] == "img/0.png" and sample["group"] == "p0"


def test_epoch_seeded_sampler_is_a_function_of_epoch():
    s = EpochSeededSampler(50, seed=1)
    s.set_epoch(3)
    first = list(s)
    s.set_epoch(4)
    assert list(s) != first
    s.set_epoch(3)
    assert list(s) == first and sorted(first) == list(range(50))

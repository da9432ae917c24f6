"""HAM10000 adapter: Kaggle CSV and Dataverse TSV metadata, lesion-grouped stratified splits, the ISIC 2018 test set."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets_fixtures import HAM_DX, make_ham10000

from spft.config import load_config
from spft.data.registry import build_table, load_table


def _cfg(root: Path, *extra: str):
    return load_config("configs/ham10000.yaml", [f"data.root={root}", *extra])


def _expected(metadata: Path) -> pd.DataFrame:
    """Independent reading: pandas with the delimiter given explicitly, image ids without ``.jpg``."""
    sep = "\t" if "\t" in metadata.read_text().splitlines()[0] else ","
    df = pd.read_csv(metadata, sep=sep)
    df["image_id"] = df["image_id"].str.replace(r"\.jpg$", "", regex=True)
    return df


@pytest.mark.parametrize("source", ["kaggle", "dataverse"])
def test_metadata_formats_give_the_same_labels(tmp_path, source):
    copy = make_ham10000(tmp_path, source=source)
    table = build_table(_cfg(tmp_path).data, seed=0)
    df = _expected(copy["metadata"])
    assert table.classes == HAM_DX == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert table.ids == df["image_id"].tolist()
    onehot = pd.get_dummies(df["dx"]).reindex(columns=HAM_DX, fill_value=False).to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(table.labels, onehot)
    assert table.groups == df["lesion_id"].tolist() and table.group_kind == "lesion"
    assert len(set(table.paths)) == len(table.paths) and all(Path(p).is_file() for p in table.paths)
    assert not any("ham10000_images_part_2" in p for p in table.paths)  # the lower-case duplicates are ignored


def test_split_is_grouped_by_lesion_and_stratified(tmp_path):
    make_ham10000(tmp_path, lesions_per_class=10)
    table = build_table(_cfg(tmp_path).data, seed=3)
    assert table.leaked_groups() == []
    lesions = pd.DataFrame({"lesion": table.groups, "split": table.splits})
    assert (lesions.groupby("lesion")["split"].nunique() == 1).all()
    for split in ("train", "val", "test"):  # every class reaches every split
        dx = Counter(np.asarray(HAM_DX)[table.labels[table.indices(split)].argmax(1)])
        assert set(dx) == set(HAM_DX), (split, dx)
    assert "grouped by lesion_id" in table.split_policy and "split_fractions" in table.split_policy
    again = build_table(_cfg(tmp_path).data, seed=3)
    assert again.splits == table.splits


@pytest.mark.parametrize("fmt", ["onehot", "metadata"])
def test_isic_2018_test_set_is_the_test_split(tmp_path, fmt):
    copy = make_ham10000(tmp_path, source="dataverse", isic_test=fmt)
    table = build_table(_cfg(tmp_path).data, seed=0)
    test = table.indices("test")
    present = [image for image, _ in copy["test_rows"][:-1]]  # the last ground-truth image is absent
    assert [table.ids[i] for i in test] == present
    expected = np.zeros((len(present), 7), np.float32)
    expected[np.arange(len(present)), [HAM_DX.index(dx) for _, dx in copy["test_rows"][:-1]]] = 1.0
    np.testing.assert_array_equal(table.labels[test], expected)  # ISIC's MEL, NV, ... order mapped onto HAM_DX
    assert {table.splits[i] for i in range(len(copy["rows"]))} == {"train", "val"}
    assert table.leaked_groups() == []
    assert any("1 of 15 test ground-truth image(s) not found" in w for w in table.warnings)
    assert "ISIC 2018 Task 3 test set = test" in table.split_policy
    carved = build_table(_cfg(tmp_path, "data.official_test=false").data, seed=0)
    assert len(carved.ids) == len(copy["rows"]) and len(carved.indices("test")) > 0


def test_errors_name_file_row_and_value(tmp_path):
    copy = make_ham10000(tmp_path, isic_test="onehot")
    gt = tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv"
    df = pd.read_csv(gt, dtype=str)
    df.loc[1, "NV"] = "1.0"  # two ones in a row
    df.to_csv(gt, index=False)
    with pytest.raises(ValueError, match=r"GroundTruth.csv: row 3: columns MEL, NV, .* must be one-hot"):
        load_table(_cfg(tmp_path).data, seed=0)
    meta = pd.read_csv(copy["metadata"], dtype=str)
    meta.loc[0, "dx"] = "melanoma"
    meta.to_csv(copy["metadata"], index=False)
    with pytest.raises(ValueError, match=r"HAM10000_metadata.csv: row 2 column 'dx': diagnosis 'melanoma' is not one"):
        load_table(_cfg(tmp_path, "data.official_test=false").data, seed=0)
    copy["metadata"].unlink()
    with pytest.raises(FileNotFoundError, match="none of HAM10000_metadata.csv, HAM10000_metadata"):
        load_table(_cfg(tmp_path).data, seed=0)


def test_missing_image_is_refused(tmp_path):
    copy = make_ham10000(tmp_path, source="dataverse")
    gone = copy["rows"][4][1]
    next(tmp_path.glob(f"HAM10000_images_part_*/{gone}.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match=rf"(?s)1 listed image\(s\) not found.*{gone}\.jpg.*spft data check"):
        build_table(_cfg(tmp_path).data, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_rare_diagnosis_reaches_every_split(tmp_path, seed):
    """vasc on 6 lesions (others on 10): train, val and test all get some, lesions never cross, seed-stable."""
    copy = make_ham10000(tmp_path, lesions_per_class=10)
    meta = pd.read_csv(copy["metadata"], dtype=str)
    vasc = sorted(meta.loc[meta["dx"] == "vasc", "lesion_id"].unique())
    meta = meta[(meta["dx"] != "vasc") | meta["lesion_id"].isin(vasc[:6])]
    meta.to_csv(copy["metadata"], index=False)
    cfg = _cfg(tmp_path, f"data.split_seed={seed}").data
    table = build_table(cfg, seed=0)
    rare = table.labels[:, HAM_DX.index("vasc")] == 1
    assert len({g for g, r in zip(table.groups, rare) if r}) == 6
    assert {s for s, r in zip(table.splits, rare) if r} == {"train", "val", "test"}
    assert table.leaked_groups() == []
    assert "method iterative-stratified-grouped" in table.split_policy
    assert load_table(cfg, seed=0).splits == table.splits

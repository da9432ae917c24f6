"""ChestX-ray14 adapter on miniature copies in the real formats (v2020 / 2017 header, Box / Kaggle layout, RGBA)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL, run_cli
from datasets_fixtures import NIH_FINDINGS, make_chestxray14
from PIL import Image

from spft.config import load_config
from spft.data.io import load_image
from spft.data.registry import build_table, load_table


def _cfg(root: Path, *extra: str):
    return load_config("configs/chestxray14.yaml", [f"data.root={root}", *extra])


def _expected_labels(csv: Path) -> pd.DataFrame:
    """Independent reading: pandas splits the quirky header into 11 (12 with a trailing comma) columns."""
    df = pd.read_csv(csv)
    assert {"OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"} <= set(df.columns)
    dummies = df["Finding Labels"].str.get_dummies(sep="|").reindex(columns=NIH_FINDINGS, fill_value=0)
    return dummies.set_index(df["Image Index"]).astype(np.float32)


@pytest.mark.parametrize("layout, header", [("box", "v2020"), ("kaggle", "2017")])
def test_labels_splits_and_layout(tmp_path, layout, header):
    copy = make_chestxray14(tmp_path / "nih", layout=layout, header=header)
    table = build_table(_cfg(tmp_path / "nih").data, seed=0)
    assert table.classes == NIH_FINDINGS
    expected = _expected_labels(copy["csv"])
    assert table.ids == list(expected.index)
    np.testing.assert_array_equal(table.labels, expected.to_numpy())
    assert not np.isnan(table.labels).any()
    folder = "images" if layout == "box" else "images_00"
    assert all(Path(p).is_file() and folder in p for p in table.paths)
    splits = dict(zip(table.ids, table.splits))
    assert {n for n, s in splits.items() if s == "test"} == set(copy["test"])
    assert {n for n, s in splits.items() if s in ("train", "val")} == set(copy["trainval"])
    assert table.leaked_groups() == [] and len(table.indices("val")) > 0
    assert table.groups[table.ids.index("00000004_000.png")] == "4"  # Patient ID, not the file-name suffix
    assert "grouped by Patient ID" in table.split_policy and "No Finding" in table.label_policy
    assert any("published 112,120" in w for w in table.warnings)  # a miniature copy: a warning, not an error


def test_val_fraction_and_seed(tmp_path):
    make_chestxray14(tmp_path / "nih", n_patients=40)
    small = load_table(_cfg(tmp_path / "nih", "data.val_fraction=0.1").data, seed=0)
    large = load_table(_cfg(tmp_path / "nih", "data.val_fraction=0.4").data, seed=0)
    again = load_table(_cfg(tmp_path / "nih", "data.val_fraction=0.4").data, seed=0)
    other = load_table(_cfg(tmp_path / "nih", "data.val_fraction=0.4", "data.split_seed=5").data, seed=0)
    assert len(large.indices("val")) > len(small.indices("val")) > 0
    assert again.splits == large.splits and other.splits != large.splits
    assert all(t.leaked_groups() == [] for t in (small, large, other))
    assert [s == "test" for s in other.splits] == [s == "test" for s in large.splits]  # the official test is fixed


def test_rgba_png_is_read_as_grey(tmp_path):
    copy = make_chestxray14(tmp_path / "nih")
    table = build_table(_cfg(tmp_path / "nih").data, seed=0)
    path = table.paths[table.ids.index(copy["rgba"][0])]
    assert Image.open(path).mode == "RGBA"
    grey = load_image(path, "grey")
    assert grey.mode == "L"
    np.testing.assert_array_equal(np.asarray(grey), np.asarray(Image.open(path).convert("RGB").convert("L")))


def test_missing_image_is_refused_naming_it(tmp_path):
    copy = make_chestxray14(tmp_path / "nih")
    (tmp_path / "nih" / "images" / copy["names"][5]).unlink()
    with pytest.raises(FileNotFoundError) as err:
        build_table(_cfg(tmp_path / "nih").data, seed=0)
    message = str(err.value)
    assert "1 listed image(s) not found" in message and copy["names"][5] in message
    assert "spft data check" in message


def test_patient_in_both_official_lists_is_leakage(tmp_path):
    make_chestxray14(tmp_path / "nih")
    root = tmp_path / "nih"
    test = (root / "test_list.txt").read_text().split()
    moved = "00000008_001.png"  # patient 8 is a test patient; put one of its images into train_val
    (root / "test_list.txt").write_text("\n".join(n for n in test if n != moved) + "\n")
    (root / "train_val_list.txt").write_text((root / "train_val_list.txt").read_text() + moved + "\n")
    with pytest.raises(ValueError, match=r"(?s)1 patient/lesion group\(s\) appear in more than one split.*first: 8\b"
                                         r".*spft data check"):
        build_table(_cfg(root).data, seed=0)


def test_unknown_finding_and_missing_list_are_named(tmp_path):
    copy = make_chestxray14(tmp_path / "nih")
    text = copy["csv"].read_text().splitlines()
    text[3] = text[3].replace(text[3].split(",")[1], "Infiltrate", 1)
    copy["csv"].write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"row 4 column 'Finding Labels': unknown finding 'Infiltrate'"):
        load_table(_cfg(tmp_path / "nih").data, seed=0)
    (tmp_path / "nih" / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_list.txt not found below data.root"):
        load_table(_cfg(tmp_path / "nih").data, seed=0)


def test_renamed_headers_and_unnamed_columns_are_tolerated(tmp_path):
    copy = make_chestxray14(tmp_path / "nih")
    df = pd.read_csv(copy["csv"], dtype=str).rename(columns={"Image Index": "ImageIndex", "Patient ID": "patient id"})
    df["Unnamed: 11"] = ""
    df.to_csv(copy["csv"], index=False)
    table = build_table(_cfg(tmp_path / "nih").data, seed=0)
    np.testing.assert_array_equal(table.labels, _expected_labels_from(df))


def _expected_labels_from(df: pd.DataFrame) -> np.ndarray:
    return df["Finding Labels"].str.get_dummies(sep="|").reindex(columns=NIH_FINDINGS, fill_value=0).to_numpy()


@pytest.mark.slow
def test_spft_train_on_the_miniature_copy(tmp_path):
    make_chestxray14(tmp_path / "nih", n_patients=24)
    run_dir = tmp_path / "run"
    proc = run_cli("train", "configs/chestxray14.yaml", f"data.root={tmp_path / 'nih'}", "model.name=null",
                   *TINY_MODEL, "trainer.max_epochs=2", "recipe.stage1_epochs=1", "data.num_workers=0",
                   "trainer.progress_bar=false", "trainer.batch_size=16", f"run.dir={run_dir}")
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)
    assert (run_dir / "DONE").is_file()
    data = json.loads((run_dir / "data.json").read_text())
    assert data["classes"] == NIH_FINDINGS
    assert data["split_policy"].startswith("official test_list.txt = test")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == data["n_images"]["test"]


def _rare_finding(copy: dict, finding: str, patients: set[int]) -> None:
    """Rewrite the Data_Entry file so that ``finding`` is positive on every image of ``patients`` and nowhere else."""
    df = pd.read_csv(copy["csv"], dtype=str, keep_default_na=False)
    labels = [[n for n in text.split("|") if n not in (finding, "No Finding")] for text in df["Finding Labels"]]
    for i, pid in enumerate(df["Patient ID"].astype(int)):
        if pid in patients:
            labels[i].append(finding)
    df["Finding Labels"] = ["|".join(names) or "No Finding" for names in labels]
    df.to_csv(copy["csv"], index=False)


@pytest.mark.parametrize("seed", range(5))
def test_validation_carve_is_stratified_and_grouped(tmp_path, seed):
    """Hernia on 4 of the ~30 train_val patients reaches both train and validation, whatever the seed."""
    copy = make_chestxray14(tmp_path / "nih", n_patients=40)
    rare = {1, 6, 11, 17}  # none a multiple of 4: all in train_val_list.txt
    _rare_finding(copy, "Hernia", rare)
    cfg = _cfg(tmp_path / "nih", "data.val_fraction=0.25", f"data.split_seed={seed}").data
    table = build_table(cfg, seed=0)
    hernia = table.labels[:, NIH_FINDINGS.index("Hernia")] == 1
    assert {table.groups[i] for i in np.flatnonzero(hernia)} == {str(p) for p in rare}
    assert {s for s, h in zip(table.splits, hernia) if h} == {"train", "val"}
    assert table.leaked_groups() == []  # patients never cross
    assert {n for n, s in zip(table.ids, table.splits) if s == "test"} == set(copy["test"])  # official test untouched
    assert "method iterative-stratified-grouped" in table.split_policy
    assert load_table(cfg, seed=0).splits == table.splits  # same seed, same split


def test_only_the_trained_classes_drive_the_stratification(tmp_path):
    """With data.label_columns the carve is stratified on those classes: Hernia, not trained, is not balanced."""
    copy = make_chestxray14(tmp_path / "nih", n_patients=40)
    _rare_finding(copy, "Hernia", {1, 6, 11, 17})
    full = load_table(_cfg(tmp_path / "nih", "data.val_fraction=0.25").data, seed=0)
    chosen = load_table(_cfg(tmp_path / "nih", "data.val_fraction=0.25", "data.label_columns=[Effusion, Mass]").data,
                        seed=0)
    assert chosen.classes == ["Effusion", "Mass"] and chosen.leaked_groups() == []
    assert chosen.splits != full.splits

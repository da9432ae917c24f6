"""Label formats besides one 0/1 column per class: a column of class names (one per row, or several joined by a
separator) and a folder per class (ImageFolder-style, with or without split folders) — real PNGs and CSVs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, tiny_overrides
from PIL import Image

from spft.config import load_config
from spft.data.registry import build_table, load_table
from spft.errors import ConfigError, DataError, MissingKeyError

CLASSES = ["Cardiomegaly", "Effusion", "Nodule"]


def _png(path, value: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    img = np.clip(value + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def _names_csv(root, cells: list[str], split: list[str] | None = None):
    rows = []
    for i, cell in enumerate(cells):
        _png(root / "img" / f"{i}.png", 20 + 7 * i % 200)
        rows.append({"image": f"img/{i}.png", "label": cell, **({"split": split[i]} if split else {})})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _cfg(*overrides):
    return load_config(None, ["model.config={model_type: dinov2}", *overrides]).data


def _csv_cfg(csv, *overrides):
    return _cfg(f"data.csv={csv}", "data.label_column=label", *overrides)


def _folder(root, per_class: dict[str, int], split: str | None = None, suffix: str = ".png"):
    for j, (cls, n) in enumerate(per_class.items()):
        for i in range(n):
            _png(root / (split or "") / cls / f"{cls}_{i}{suffix}", 40 + 60 * j)
    return root


def _rows(table) -> dict[str, str]:
    """id -> the one class of the row (one-hot rows)."""
    assert set(np.unique(table.labels)) <= {0.0, 1.0} and (table.labels.sum(1) == 1).all()
    return {i: table.classes[int(np.argmax(row))] for i, row in zip(table.ids, table.labels)}


# ---- a column of class names ----------------------------------------------------------------------------------------

def test_one_name_per_row_is_multiclass(tmp_path):
    cells = [CLASSES[i % 3] for i in range(30)]
    table = build_table(_csv_cfg(_names_csv(tmp_path, cells), "data.split_fractions=[0.6, 0.2, 0.2]"), seed=0)
    assert table.classes == CLASSES  # sorted names found
    assert _rows(table) == {f"img/{i}.png": c for i, c in enumerate(cells)}
    for split in ("train", "val", "test"):  # stratified: every class in every split
        assert (table.labels[table.indices(split)].sum(0) > 0).all()
    assert "multi-class" in table.label_policy and "method iterative-stratified-grouped" in table.split_policy


def test_label_columns_fix_the_class_list_and_order(tmp_path):
    cells = [CLASSES[i % 2] for i in range(12)]
    split = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    csv = _names_csv(tmp_path, cells, split)
    table = load_table(_csv_cfg(csv, "data.split_column=split",
                                "data.label_columns=[Nodule, Effusion, Cardiomegaly]"), seed=0)
    assert table.classes == ["Nodule", "Effusion", "Cardiomegaly"]
    assert table.labels[0].tolist() == [0, 0, 1] and table.labels[1].tolist() == [0, 1, 0]
    assert table.splits == split
    assert table.labels[:, 0].sum() == 0  # a listed class without images is kept (all negatives)


def test_separator_is_multilabel_with_blank_and_none_label_as_no_finding(tmp_path):
    cells = ["Effusion|Nodule", "", "No Finding", "Cardiomegaly", " Nodule | Effusion "] * 4
    split = ["train"] * 10 + ["val"] * 5 + ["test"] * 5
    csv = _names_csv(tmp_path, cells, split)
    table = load_table(_csv_cfg(csv, "data.split_column=split", "data.label_separator=|",
                                "data.none_label=No Finding"), seed=0)
    assert table.classes == CLASSES
    assert table.labels[:5].tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert not np.isnan(table.labels).any()  # no finding is all negative, not unknown
    assert "multi-label" in table.label_policy and "'No Finding'" in table.label_policy
    assert table.splits == split


def test_without_none_label_it_is_a_class(tmp_path):
    csv = _names_csv(tmp_path, ["No Finding", "Effusion|Nodule", "Effusion"] * 4,
                     ["train", "val", "test"] * 3 + ["train"] * 3)
    table = load_table(_csv_cfg(csv, "data.split_column=split", "data.label_separator=|"), seed=0)
    assert table.classes == ["Effusion", "No Finding", "Nodule"]


def test_unknown_name_is_refused_naming_file_and_row(tmp_path):
    csv = _names_csv(tmp_path, ["Effusion", "Nodule", "Efusion", "Effusion"])
    with pytest.raises(DataError, match=r"labels.csv: row 4 column 'label': class 'Efusion' is not in "
                                        r"data.label_columns .*did you mean 'Effusion'"):
        load_table(_csv_cfg(csv, "data.label_columns=[Effusion, Nodule]"), seed=0)


def test_label_columns_that_name_csv_columns_do_not_agree_with_label_column(tmp_path):
    csv = _names_csv(tmp_path, ["Effusion", "Nodule"] * 6)
    pd.read_csv(csv).assign(a=1, b=0).to_csv(csv, index=False)  # one-hot columns as well
    with pytest.raises(DataError, match=r"row 2 column 'label': class 'Effusion' is not in "
                                        r"data.label_columns \(a, b\)"):
        load_table(_csv_cfg(csv, "data.label_columns=[a, b]"), seed=0)


def test_blank_cell_of_a_multiclass_column_names_the_row(tmp_path):
    csv = _names_csv(tmp_path, ["Effusion", "Nodule", "", "Effusion"])
    with pytest.raises(DataError, match=r"row 4 column 'label': no class name \(blank\).*1 blank row"):
        load_table(_csv_cfg(csv), seed=0)


def test_name_only_in_val_or_test_is_refused(tmp_path):
    csv = _names_csv(tmp_path, ["Effusion", "Nodule"] * 4 + ["Nodules"], ["train"] * 6 + ["val", "test", "test"])
    with pytest.raises(DataError, match=r"row 10 column 'label': class 'Nodules' \(a misspelling of 'Nodule'\?\) "
                                        r"appears only in the test split \(1 image"):
        load_table(_csv_cfg(csv, "data.split_column=split"), seed=0)


def test_missing_label_column_and_separator_without_it(tmp_path):
    csv = _names_csv(tmp_path, ["Effusion", "Nodule"] * 3)
    with pytest.raises(MissingKeyError, match=r"column 'labels' \(from data.label_column\) not found.*'label'"):
        load_table(_csv_cfg(csv, "data.label_column=labels"), seed=0)
    with pytest.raises(ConfigError, match="'data.label_separator' needs data.label_column"):
        _cfg(f"data.csv={csv}", "data.label_columns=[a]", "data.label_separator=|")


def test_data_check_of_a_separator_csv_through_the_cli(tmp_path):
    cells = ["Effusion|Nodule", "", "Cardiomegaly", "Nodule", "Effusion", "Cardiomegaly|Effusion"] * 4
    csv = _names_csv(tmp_path, cells)
    proc = run_cli("data", "check", "configs/phantom_cxr.yaml", "data.name=csv", f"data.csv={csv}",
                   "data.label_column=label", "data.label_separator=|", "data.split_fractions=[0.5, 0.25, 0.25]")
    assert "separated by '|' (multi-label); blank = no finding" in proc.stdout
    positives = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in proc.stdout.splitlines()
                 if line.startswith("  ") and line.split()[0] in CLASSES}
    assert positives == {"Cardiomegaly": [4, 2, 2], "Effusion": [6, 3, 3], "Nodule": [4, 2, 2]}
    assert "result: OK" in proc.stdout
    assert "data.phantom (keys of data.name=phantom) dropped" in proc.stderr


@pytest.mark.parametrize("separator", [None, "|"], ids=["multiclass", "multilabel"])
def test_train_on_a_column_of_class_names_through_the_cli(spft_cache, tmp_path, separator):
    """Both class-name formats train through `spft train`: one name per row with loss ce (softmax rows), names
    separated by '|' with loss bce (a blank cell: no finding)."""
    cells = (["Effusion|Nodule", "", "Cardiomegaly", "Nodule", "Effusion", "Cardiomegaly|Effusion"] if separator
             else ["Effusion", "Nodule", "Cardiomegaly"]) * 12
    csv = _names_csv(tmp_path / "data", cells)
    run_dir = tmp_path / "run"
    extra = ["data.label_separator=|", "loss=bce"] if separator else ["loss=ce"]
    run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(run_dir, epochs=2, phantom=False),
            "data.name=csv", f"data.csv={csv}", "data.label_column=label", *extra,
            "data.split_fractions=[0.5, 0.25, 0.25]", "recipe.class_weights.heuristic={}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["per_class_auc"]) == CLASSES and metrics["n"] > 0
    probs = pd.read_csv(run_dir / "predictions_test.csv")[[f"prob_{c}" for c in CLASSES]].sum(axis=1)
    assert (abs(probs - 1).max() < 1e-4) == (separator is None)  # softmax rows only for one class per image


# ---- a folder per class ---------------------------------------------------------------------------------------------

def test_folder_per_class_with_a_seeded_split(tmp_path):
    root = _folder(tmp_path / "data", {"normal": 10, "effusion": 6, "nodule": 4})
    (root / "notes.txt").write_text("not an image")
    (root / "effusion" / ".DS_Store").write_bytes(b"\0")
    table = build_table(_cfg("data.name=folder", f"data.root={root}", "data.split_fractions=[0.5, 0.25, 0.25]"),
                        seed=1)
    assert table.classes == ["effusion", "nodule", "normal"]  # sorted folder names
    rows = _rows(table)
    assert len(rows) == 20 and rows["effusion/effusion_3.png"] == "effusion"
    assert table.groups == table.ids and table.group_kind == "image"  # files are independent
    for split in ("train", "val", "test"):
        assert (table.labels[table.indices(split)].sum(0) > 0).all()  # stratified on the class
    again = load_table(_cfg("data.name=folder", f"data.root={root}", "data.split_fractions=[0.5, 0.25, 0.25]"), seed=1)
    assert again.splits == table.splits  # seeded


def test_folder_with_split_folders(tmp_path):
    root = tmp_path / "data"
    _folder(root, {"a": 4, "b": 3}, "train")
    _folder(root, {"a": 2, "b": 2}, "val")
    _folder(root, {"a": 2, "b": 1}, "test")
    table = build_table(_cfg("data.name=folder", f"data.root={root}"), seed=0)
    assert table.classes == ["a", "b"]
    assert {i: s for i, s in zip(table.ids, table.splits)}["val/b/b_1.png"] == "val"
    assert [len(table.indices(s)) for s in ("train", "val", "test")] == [7, 4, 3]
    assert _rows(table)["test/b/b_0.png"] == "b"
    assert table.split_policy.startswith("split from the folders")
    from spft.data.splits import split_method

    assert split_method(table.split_policy) == "folders"


def test_folder_train_and_test_only_carves_val_from_train(tmp_path):
    root = tmp_path / "data"
    _folder(root, {"a": 10, "b": 10}, "train")
    _folder(root, {"a": 2, "b": 2}, "test")
    table = build_table(_cfg("data.name=folder", f"data.root={root}", "data.val_fraction=0.2"), seed=0)
    val = table.indices("val")
    assert len(val) == 4 and all(table.ids[i].startswith("train/") for i in val)
    assert (table.labels[val].sum(0) == 2).all()


def test_folder_label_columns_keep_those_class_folders(tmp_path):
    root = _folder(tmp_path / "data", {"a": 6, "b": 6, "c": 6})
    table = load_table(_cfg("data.name=folder", f"data.root={root}", "data.label_columns=[c, a]"), seed=0)
    assert table.classes == ["c", "a"] and len(table.ids) == 12
    with pytest.raises(MissingKeyError, match=r"'data.label_columns\[0\]': 'cc' is not a class folder.*'c'"):
        load_table(_cfg("data.name=folder", f"data.root={root}", "data.label_columns=[cc]"), seed=0)


def test_folder_bad_layouts(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class folder with images found"):
        load_table(_cfg("data.name=folder", f"data.root={empty}"), seed=0)
    root = _folder(tmp_path / "data", {"a": 3, "b": 3})
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*/data/c holds no image"):
        load_table(_cfg("data.name=folder", f"data.root={root}"), seed=0)
    mixed = _folder(tmp_path / "mixed", {"train": 3, "b": 3})
    with pytest.raises(DataError, match=r"split folders \(train\) next to class folders \(b\)"):
        load_table(_cfg("data.name=folder", f"data.root={mixed}"), seed=0)
    only_val = tmp_path / "only_val"
    _folder(only_val, {"a": 3}, "train")
    _folder(only_val, {"a": 1, "b": 1}, "val")
    _folder(only_val, {"a": 1}, "test")
    with pytest.raises(DataError, match=r"val/b/b_0.png: class 'b' appears only in the val split"):
        load_table(_cfg("data.name=folder", f"data.root={only_val}"), seed=0)
    with pytest.raises(ConfigError, match="'data.root' must be set when data.name is folder"):
        _cfg("data.name=folder")


def test_train_on_a_folder_layout_with_ce_through_the_cli(spft_cache, tmp_path):
    root = _folder(tmp_path / "data", {"dark": 24, "grey": 24, "light": 24})
    run_dir = tmp_path / "run"
    proc = run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(run_dir, epochs=2, phantom=False),
                   "data.name=folder", f"data.root={root}", "loss=ce", "recipe.class_weights.heuristic={}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["per_class_auc"]) == ["dark", "grey", "light"]
    data = json.loads((run_dir / "data.json").read_text())
    assert data["classes"] == ["dark", "grey", "light"] and data["split_method"] == "iterative-stratified-grouped"
    preds = pd.read_csv(run_dir / "predictions_test.csv")
    assert abs(preds[[f"prob_{c}" for c in data["classes"]]].sum(axis=1) - 1).max() < 1e-4  # softmax
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)

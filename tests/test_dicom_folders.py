"""ChestX-ray14-style folders holding DICOM copies: ``Image Index`` names ``<stem>.png``, the folder has
``<stem>.dcm`` (or ``.dicom``). One lookup rule (:func:`spft.data.chestxray14.image_path`): the named file if present,
else the same stem with ``.dcm``, then ``.dicom``; decoded through :func:`spft.data.io.load_image`.

DICOM files are real ones written with pydicom (MONOCHROME2, 16-bit), as in tests/test_dicom.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODEL, run_cli
from datasets_fixtures import make_chestxray14
from test_dicom import write_dicom

from spft.config import load_config
from spft.data.io import load_image
from spft.data.registry import build_table


def _cfg(root: Path, *extra: str):
    return load_config("configs/chestxray14.yaml", [f"data.root={root}", *extra])


def _as_dicom(root: Path, names: list[str], layout_folder: str = "images") -> dict[str, np.ndarray]:
    """Replace every 3rd PNG by ``<stem>.dcm`` (every 9th by ``<stem>.dicom``), 16-bit MONOCHROME2 holding the grey
    values x 257 (min-max back to 8 bit gives the same bytes); returns the expected grey pixels per converted name."""
    expected = {}
    for i, name in enumerate(names):
        if i % 3:
            continue
        png = next(root.rglob(name))
        grey = np.asarray(load_image(png, "grey")).copy()
        grey[0, 0], grey[0, 1] = 0, 255  # full range: min-max scaling of the DICOM is then the identity
        suffix = ".dicom" if i % 9 == 0 else ".dcm"
        write_dicom(png.with_suffix(suffix), grey.astype(np.uint16) * 257, "MONOCHROME2")
        png.unlink()
        expected[name] = grey
    return expected


@pytest.mark.parametrize("layout", ["box", "kaggle"])
def test_dicom_copies_are_found_by_stem_and_decoded(tmp_path, layout):
    copy = make_chestxray14(tmp_path / "nih", layout=layout)
    expected = _as_dicom(tmp_path / "nih", copy["names"])
    assert {Path(n).suffix for n in expected} == {".png"} and len(expected) >= 5
    table = build_table(_cfg(tmp_path / "nih").data, seed=0)  # refuses missing images: every row resolved
    assert table.ids == copy["names"]  # ids stay the names of the CSV
    for name, grey in expected.items():
        path = Path(table.paths[table.ids.index(name)])
        assert path.suffix in (".dcm", ".dicom") and path.stem == Path(name).stem
        np.testing.assert_array_equal(np.asarray(load_image(path, "grey")), grey)
    untouched = [n for n in copy["names"] if n not in expected]
    assert all(table.paths[table.ids.index(n)].endswith(n) for n in untouched)
    assert {Path(p).suffix for p in table.paths} == {".png", ".dcm", ".dicom"}


def test_the_named_png_wins_over_a_dicom_of_the_same_stem(tmp_path):
    copy = make_chestxray14(tmp_path / "nih")
    name = copy["names"][0]
    png = tmp_path / "nih" / "images" / name
    write_dicom(png.with_suffix(".dcm"), np.full((8, 8), 1000, np.uint16))
    table = build_table(_cfg(tmp_path / "nih").data, seed=0)
    assert table.paths[table.ids.index(name)] == str(png)


def test_missing_png_and_dicom_is_reported_under_the_csv_name(tmp_path):
    copy = make_chestxray14(tmp_path / "nih")
    name = copy["names"][2]
    (tmp_path / "nih" / "images" / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"(?s)1 listed image\(s\) not found.*{name}"):
        build_table(_cfg(tmp_path / "nih").data, seed=0)


@pytest.mark.slow
def test_dicom_folder_passes_data_check_and_trains(tmp_path):
    """The CLI as a user runs it: `spft data check --scan` decodes every file, `spft train` trains and tests."""
    copy = make_chestxray14(tmp_path / "nih", n_patients=24)
    expected = _as_dicom(tmp_path / "nih", copy["names"])
    data = f"data.root={tmp_path / 'nih'}"
    check = run_cli("data", "check", "configs/chestxray14.yaml", data, "--scan", "--json")
    report = json.loads(check.stdout)
    assert report["ok"] and report["unreadable_files"] == [] and report["checked"] == "decode"
    assert report.get("missing_files", []) == []
    run_dir = tmp_path / "run"
    proc = run_cli("train", "configs/chestxray14.yaml", data, "model.name=null", *TINY_MODEL, "trainer.max_epochs=2",
                   "recipe.stage1_epochs=1", "data.num_workers=0", "trainer.progress_bar=false",
                   "trainer.batch_size=16", f"run.dir={run_dir}")
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)
    assert (run_dir / "DONE").is_file()
    data_json = json.loads((run_dir / "data.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == data_json["n_images"]["test"] == len(copy["test"])
    assert data_json["split_method"] == "iterative-stratified-grouped"
    tested = set(copy["test"]) & set(expected)
    assert tested  # some DICOM copies were among the scored test images

"""DICOM everywhere: one decoder (spft.data.dicom) for the CSV dataset, the image cache, data check and VinDr-CXR.

Real DICOM files are written with pydicom: 16-bit, MONOCHROME1 and MONOCHROME2, RescaleSlope/Intercept and
WindowCenter/Width.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, tiny_overrides
from PIL import Image

from spft.data.io import BadImageError, check_image, load_image


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None) -> None:
    """A 16-bit uncompressed DX image as a real DICOM file (file meta, preamble, explicit VR little endian)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "anon"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _ramp(n: int = 48) -> np.ndarray:
    return (np.arange(n * n, dtype=np.float64).reshape(n, n) * (60000 / (n * n))).astype(np.uint16)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_csv_path_and_vindr_preparation_give_identical_pixels(tmp_path, photometric):
    from spft.data.dicom import read_dicom
    from spft.data.vindr_cxr import _write_png

    dcm = tmp_path / "x.dcm"
    write_dicom(dcm, _ramp(), photometric, slope=2.0, intercept=-1000.0, window=(30000.0, 80000.0))
    via_csv = np.asarray(load_image(dcm))  # what ImageDataset reads for a CSV row naming x.dcm
    _write_png(dcm, tmp_path / "x.png", long_side=1024)  # VinDr-CXR preparation (no resize: 48 px < 1024)
    np.testing.assert_array_equal(via_csv, np.asarray(Image.open(tmp_path / "x.png")))
    np.testing.assert_array_equal(via_csv, read_dicom(dcm))
    assert via_csv.dtype == np.uint8 and via_csv.min() == 0 and via_csv.max() == 255
    # low stored values display white in MONOCHROME1: the first pixel (lowest value) is the brightest there
    assert (via_csv[0, 0] > via_csv[-1, -1]) == (photometric == "MONOCHROME1")
    assert load_image(dcm, "rgb").mode == "RGB"


def test_window_and_rescale_are_applied(tmp_path):
    raw = np.array([[0, 1500, 2000, 3000]] * 4, dtype=np.uint16)
    write_dicom(tmp_path / "w.dcm", raw, slope=1.0, intercept=-1000.0, window=(500.0, 1000.0))
    out = np.asarray(load_image(tmp_path / "w.dcm"))[0]
    # HU -1000, 500, 1000, 2000 through a window 0..1000: the first saturates low, the last two high
    assert out[0] == 0 and out[2] == 255 and out[3] == 255 and 0 < out[1] < 255


def test_dicom_without_suffix_and_truncated_dicom(tmp_path):
    write_dicom(tmp_path / "noext", _ramp())
    assert load_image(tmp_path / "noext").size == (48, 48)  # found by its DICM preamble
    data = (tmp_path / "noext").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    assert "truncated" in check_image(tmp_path / "cut.dcm")  # the cheap check, no decoding
    with pytest.raises(BadImageError, match="cut.dcm"):
        load_image(tmp_path / "cut.dcm")


@pytest.mark.slow
def test_csv_of_dicom_files_checks_and_trains(spft_cache, tmp_path):
    """A CSV naming DICOM files (both photometric interpretations) passes data check and trains through the CLI."""
    from spft.config import load_config
    from spft.data.registry import ensure_phantoms

    folder = ensure_phantoms(load_config("configs/phantom_cxr.yaml", tiny_overrides(tmp_path, n_images=160))
                             .data.phantom)
    rows = pd.read_csv(folder / "labels.csv")
    (tmp_path / "dcm").mkdir()
    names = []
    for i, image in enumerate(rows["image"]):
        grey = np.asarray(Image.open(folder / image).convert("L")).astype(np.uint16) * 200 + 500
        mono1 = i % 2 == 0
        stored = (grey.max() + 500 - grey) if mono1 else grey  # MONOCHROME1 stores the inverted values
        name = f"dcm/{i:04d}.dcm"
        write_dicom(tmp_path / name, stored, "MONOCHROME1" if mono1 else "MONOCHROME2", slope=0.5,
                    intercept=10.0, window=(30000.0, 70000.0))
        names.append(name)
    rows["image"] = names
    rows.to_csv(tmp_path / "dicoms.csv", index=False)
    data = [f"data.csv={tmp_path / 'dicoms.csv'}", "data.name=csv", "data.split_column=split",
            "data.patient_column=patient_id", "data.label_columns=[Effusion, Cardiomegaly]"]
    check = run_cli("data", "check", "configs/phantom_cxr.yaml", *data, "--scan", "--json")
    report = json.loads(check.stdout)
    assert report["ok"] and report["unreadable_files"] == [] and report["checked"] == "decode"
    run_dir = tmp_path / "run"
    run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(run_dir, n_images=160, epochs=2, phantom=False), *data,
            "recipe.class_weights.heuristic={}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == int((rows["split"] == "test").sum()) and metrics["macro_auc"] is not None

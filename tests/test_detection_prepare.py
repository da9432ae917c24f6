"""Detection data preparation: DICOM decoding order, VinDr-CXR box fusion and labels, TBX-11K COCO conversion.

Miniature copies are written here: synthetic DICOMs (MONOCHROME1 and 2, rescale and window tags), the real Kaggle
``train.csv`` header and PhysioNet's ``annotations_*.csv``, three radiologists per image and "No finding" rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli
from PIL import Image

from spft.config import load_config
from spft.data.dicom import read_dicom
from spft.data.vindr_cxr import CLASSES, fuse_boxes, prepare_vindr_cxr

KAGGLE_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None) -> Path:
    """A minimal uncompressed 16-bit grey DICOM."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def ramp(rows: int = 100, cols: int = 200) -> np.ndarray:
    return np.tile(np.linspace(0, 4000, cols), (rows, 1)).astype(np.uint16)


def test_dicom_monochrome1_is_inverted(tmp_path):
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", ramp()))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp(), photometric="MONOCHROME1"))
    assert m2.dtype == np.uint8 and m2.shape == (100, 200)
    assert m2[0, 0] == 0 and m2[0, -1] == 255
    np.testing.assert_array_equal(m1, 255 - m2)


def test_dicom_modality_then_window_then_inversion(tmp_path):
    # Rescale doubles the values (0..8000, column c -> 8000 c / 199); the window 2000 +- 1000 saturates columns
    # below ~25 and above ~75; MONOCHROME1 then inverts: the low (left) side white, the right side black.
    path = write_dicom(tmp_path / "w.dcm", ramp(), photometric="MONOCHROME1", slope=2.0, window=(2000.0, 2000.0))
    img = read_dicom(path)
    assert img[0, 0] == 255 and img[0, 20] == 255 and img[0, 80] == 0 and img[0, -1] == 0
    middle = img[0, 26:74].astype(int)
    assert (np.diff(middle) <= 0).all() and middle[0] > middle[-1]


def test_fusion_methods():
    per_reader = {"R1": [(3, 10, 10, 50, 50), (8, 150, 60, 160, 70)], "R2": [(3, 12, 12, 52, 52)],
                  "R3": [(3, 14, 14, 54, 54)]}
    wbf = fuse_boxes(per_reader, 200, 100, "wbf", 0.55)
    assert [b[0] for b in wbf] == [3, 8]
    np.testing.assert_allclose(wbf[0][1:], [12, 12, 52, 52], atol=1e-3)
    np.testing.assert_allclose(wbf[1][1:], [150, 60, 160, 70], atol=1e-3)
    majority = fuse_boxes(per_reader, 200, 100, "majority", 0.55)
    assert [b[0] for b in majority] == [3]
    assert len(fuse_boxes(per_reader, 200, 100, "union")) == 4


def _labels(out: Path) -> dict[str, tuple[str, list[list[float]]]]:
    """{image id: (split, [[cls, cx, cy, w, h], ...])} over the prepared dataset."""
    found = {}
    for split in ("train", "val", "test"):
        for lbl in sorted((out / "labels" / split).glob("*.txt")):
            rows = [[float(v) for v in line.split()] for line in lbl.read_text().splitlines() if line.strip()]
            found[lbl.stem] = (split, rows)
    return found


@pytest.fixture()
def vindr_kaggle(tmp_path) -> Path:
    root = tmp_path / "vinbigdata"
    lines = [KAGGLE_HEADER]
    for rad, off in (("R9", 0), ("R10", 2), ("R8", 4)):  # three readers, slightly shifted boxes
        lines.append(f"imgA,Cardiomegaly,3,{rad},{10 + off},{10 + off},{50 + off},{50 + off}")
    lines.append("imgA,Nodule/Mass,8,R9,150,60,160,70")  # one reader only
    for rad in ("R1", "R2", "R3"):
        lines.append(f"imgB,Pleural effusion,10,{rad},100,20,140,80")
    for image in ("imgC", "imgD", "imgE"):
        lines += [f"{image},No finding,14,{rad},,,," for rad in ("R1", "R2", "R3")]
    (root / "train").mkdir(parents=True)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    for i, image in enumerate(("imgA", "imgB", "imgC", "imgD", "imgE")):
        write_dicom(root / "train" / f"{image}.dicom", ramp(), photometric="MONOCHROME1" if i % 2 else "MONOCHROME2")
    return root


def test_vindr_kaggle_fused_labels_exactly(vindr_kaggle, tmp_path):
    out = tmp_path / "prepared"
    cfg = load_config("configs/vindr_cxr_yolov8.yaml",
                      [f"data.root={vindr_kaggle}", f"detection.dataset_dir={out}", "detection.long_side=100"])
    dataset_yaml = prepare_vindr_cxr(cfg)
    spec = yaml.safe_load(dataset_yaml.read_text())
    assert spec["names"] == dict(enumerate(CLASSES)) and spec["fusion"] == "wbf"
    labels = _labels(out)
    assert sorted(labels) == ["imgA", "imgB", "imgC", "imgD", "imgE"]
    # 200x100 DICOMs -> 100x50 PNGs; fused Cardiomegaly box (12,12,52,52) -> (6,6,26,26) -> cx .16 cy .32 w .2 h .4
    np.testing.assert_allclose(labels["imgA"][1], [[3, 0.16, 0.32, 0.2, 0.4], [8, 0.775, 0.65, 0.05, 0.1]], atol=1e-5)
    np.testing.assert_allclose(labels["imgB"][1], [[10, 0.6, 0.5, 0.2, 0.6]], atol=1e-5)
    assert all(labels[i][1] == [] for i in ("imgC", "imgD", "imgE"))  # No finding -> background images
    assert sorted(s for s, _ in labels.values()) == ["test", "train", "train", "train", "val"]
    assert Image.open(out / "images" / labels["imgA"][0] / "imgA.png").size == (100, 50)
    # idempotent: a second run gives the same labels
    prepare_vindr_cxr(cfg)
    assert _labels(out) == labels


def test_vindr_physionet_layout_test_not_fused(tmp_path):
    root = tmp_path / "physionet"
    header = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max"  # no class_id; other column order
    train = [header] + [f"t{i},{r},Aortic enlargement,20,20,60,60" for i in range(3) for r in ("R1", "R2", "R3")]
    train += [f"n{i},{r},No finding,,,," for i in range(2) for r in ("R1", "R2", "R3")]
    train += ["t0,R1,Rib fracture,1,1,5,5"]  # one of the 8 local labels outside the 14 classes
    test = [header, "s0,R_consensus,Cardiomegaly,10,10,50,50", "s0,R_consensus,Cardiomegaly,12,12,52,52"]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "annotations_train.csv").write_text("\n".join(train) + "\n")
    (root / "annotations" / "annotations_test.csv").write_text("\n".join(test) + "\n")
    for image in ("t0", "t1", "t2", "n0", "n1"):
        write_dicom(root / "train" / f"{image}.dicom", ramp())
    write_dicom(root / "test" / "s0.dicom", ramp(), photometric="MONOCHROME1")
    out = tmp_path / "prepared"
    cfg = load_config("configs/vindr_cxr_yolov8.yaml", [f"data.root={root}", f"detection.dataset_dir={out}",
                                                         "detection.long_side=200", "detection.no_finding_share=0"])
    prepare_vindr_cxr(cfg)
    labels = _labels(out)
    assert labels["s0"][0] == "test" and len(labels["s0"][1]) == 2  # consensus boxes kept as they are
    assert all(labels[i][1] == [[0, 0.2, 0.4, 0.2, 0.4]] for i in ("t0", "t1", "t2"))
    assert all(labels[i][0] != "train" for i in ("n0", "n1") if i in labels)  # no_finding_share=0: none in train


def test_tbx11k_coco_to_yolo(tmp_path):
    root = tmp_path / "TBX11K"
    categories = [{"id": 1, "name": "ActiveTuberculosis", "supercategory": "Tuberculosis"},
                  {"id": 2, "name": "ObsoletePulmonaryTuberculosis", "supercategory": "Tuberculosis"},
                  {"id": 3, "name": "PulmonaryTuberculosis", "supercategory": "Tuberculosis"}]
    for split, names in (("train", ["tb/tb0001.png", "health/h0001.png"]), ("val", ["tb/tb0002.png"])):
        images = [{"id": 600 + i, "file_name": n, "width": 64, "height": 64} for i, n in enumerate(names)]
        anns = [{"id": 1, "image_id": 600, "category_id": 1, "bbox": [8, 16, 16, 8], "iscrowd": 0},
                {"id": 2, "image_id": 600, "category_id": 2, "bbox": [32, 32, 32, 16], "iscrowd": 0},
                {"id": 3, "image_id": 600, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0}]
        (root / "annotations" / "json").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "json" / f"TBX11K_{split}.json").write_text(
            json.dumps({"categories": categories, "images": images, "annotations": anns}))
        for n in names:
            (root / "imgs" / n).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64)).save(root / "imgs" / n)
    out = tmp_path / "prepared"
    proc = run_cli("prepare", "tbx11k", "configs/tbx11k_yolov8.yaml", f"data.root={root}",
                   f"detection.dataset_dir={out}")
    assert proc.stdout.strip().splitlines()[-1] == str(out / "dataset.yaml")
    spec = yaml.safe_load((out / "dataset.yaml").read_text())
    assert spec["names"] == {0: "ActiveTuberculosis", 1: "ObsoletePulmonaryTuberculosis"}
    assert spec["test"] == spec["val"] == "val.txt"
    labels = _labels(out)
    assert labels["tb0001"] == ("train", [[0, 0.25, 0.3125, 0.25, 0.125], [1, 0.75, 0.625, 0.5, 0.25]])
    assert labels["h0001"] == ("train", [])
    assert labels["tb0002"][0] == "val"
    assert (out / "images" / "train" / "tb0001.png").is_file()

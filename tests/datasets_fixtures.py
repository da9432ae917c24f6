"""Miniature copies of ChestX-ray14, CheXpert and HAM10000 in their real on-disk formats, with tiny images.

Each builder writes the files a user gets from the real download (header quirks, RGBA PNGs, mirror layouts, ``Path``
prefixes, tab-separated Dataverse metadata, ISIC ground truth) and returns the facts a test needs to check the
adapter independently. Everything is deterministic.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

NIH_FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
CHEXPERT_OBS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices"]
HAM_DX = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _image(path: Path, seed: int, size=(40, 36), mode: str = "L") -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), "L").save(path)
    else:
        channels = 4 if mode == "RGBA" else 3
        arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        if mode == "RGBA":
            arr[..., 3] = 255
        Image.fromarray(arr, mode).save(path)


def make_chestxray14(root: Path, layout: str = "box", header: str = "v2020", n_patients: int = 16) -> dict:
    """NIH ChestX-ray14: Data_Entry (raw header with the commas), official lists, PNGs (every 4th one RGBA).

    ``layout``: ``box`` (flat ``images/``) or ``kaggle`` (``images_001/images/`` ...). ``header``: ``v2020``
    (``Data_Entry_2017_v2020.csv``) or ``2017`` (``Data_Entry_2017.csv`` with a trailing empty column).
    Patients whose id is a multiple of 4 are in ``test_list.txt``.
    """
    rng = np.random.default_rng(7)
    rows, trainval, test = [], [], []
    for pid in range(1, n_patients + 1):
        for k in range(1 + pid % 3):
            name = f"{pid:08d}_{k:03d}.png"
            picked = [f for f in NIH_FINDINGS if rng.random() < 0.25]
            rows.append([name, "|".join(picked) or "No Finding", str((k * 7) % 5), str(pid), str(20 + pid),
                         "MF"[pid % 2], ["PA", "AP"][k % 2], "2500", "2048", "0.143", "0.143"])
            (test if pid % 4 == 0 else trainval).append(name)
    csv_name = "Data_Entry_2017_v2020.csv" if header == "v2020" else "Data_Entry_2017.csv"
    trailing = "," if header == "2017" else ""
    lines = [NIH_HEADER + trailing] + [",".join(r) + trailing for r in rows]
    root.mkdir(parents=True, exist_ok=True)
    (root / csv_name).write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(trainval) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    for i, r in enumerate(rows):
        folder = root / "images" if layout == "box" else root / f"images_{1 + i * 3 // len(rows):03d}" / "images"
        _image(folder / r[0], seed=i, mode="RGBA" if i % 4 == 3 else "L")
    return {"csv": root / csv_name, "names": [r[0] for r in rows], "rgba": [r[0] for i, r in enumerate(rows)
                                                                           if i % 4 == 3],
            "trainval": trainval, "test": test}


def _chexpert_value(rng) -> str:
    return str(rng.choice(["1.0", "0.0", "-1.0", "", ""]))


def make_chexpert(root: Path, release: str = "small", csv_at_root: bool = False) -> dict:
    """CheXpert: ``train.csv`` / ``valid.csv`` with the 19-column header, ``Path`` prefixed by the release folder.

    ``release``: ``small`` (``CheXpert-v1.0-small/``) or ``full`` (``CheXpert-v1.0/``). ``csv_at_root``: a
    re-upload with the CSVs and ``train/``, ``valid/`` directly in ``root`` but the prefix kept in ``Path``.
    Each train study has a frontal and (every other study) a lateral image; one frontal file is named
    ``view1_lateral.jpg`` while the CSV says Frontal, as happens in the real data.
    """
    rng = np.random.default_rng(11)
    prefix = "CheXpert-v1.0-small" if release == "small" else "CheXpert-v1.0"
    base = root if csv_at_root else root / prefix
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBS]
    files = {}
    for split, patients in (("train", range(1, 21)), ("valid", range(64541, 64547))):
        rows = []
        for pid in patients:
            for study in (1, 2) if split == "train" else (1,):
                views = [("view1_frontal", "Frontal", "AP")]
                if split == "train" and (pid + study) % 2 == 0:
                    views.append(("view2_lateral", "Lateral", ""))
                if split == "train" and pid == 3 and study == 1:
                    views = [("view1_lateral", "Frontal", "LL")]
                for view, fl, appa in views:
                    rel = f"{split}/patient{pid:05d}/study{study}/{view}.jpg"
                    labels = [_chexpert_value(rng) if split == "train" else str(rng.choice(["1.0", "0.0"]))
                              for _ in CHEXPERT_OBS]
                    rows.append([f"{prefix}/{rel}", "Female", "60", fl, appa, *labels])
                    _image(base / rel, seed=len(rows) + pid, size=(24, 20))
        base.mkdir(parents=True, exist_ok=True)
        with open(base / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        files[split] = base / f"{split}.csv"
    return {"train_csv": files["train"], "valid_csv": files["valid"], "base": base, "prefix": prefix}


def make_ham10000(root: Path, source: str = "kaggle", isic_test: str | None = None, lesions_per_class: int = 6) -> dict:
    """HAM10000: metadata + JPEGs in ``HAM10000_images_part_1/2``, optionally the ISIC 2018 Task 3 test set.

    ``source``: ``kaggle`` (``HAM10000_metadata.csv``, plus lower-case duplicate image folder) or ``dataverse``
    (``HAM10000_metadata`` without extension, tab-separated, quoted, ``image_id`` with ``.jpg``, a ``dataset``
    column). ``isic_test``: ``onehot`` (``image,MEL,NV,...``) or ``metadata`` ground truth; its last row's image is
    deliberately absent.
    """
    rows, image_no = [], 24306
    for c, dx in enumerate(HAM_DX):
        for k in range(lesions_per_class):
            lesion = f"HAM_{c * 100 + k:07d}"
            for _ in range(1 + (c + k) % 3):
                rows.append([lesion, f"ISIC_{image_no:07d}", dx, "histo", "50.0", "male", "back"])
                image_no += 1
    for i, r in enumerate(rows):
        part = "HAM10000_images_part_1" if i % 2 == 0 else "HAM10000_images_part_2"
        _image(root / part / f"{r[1]}.jpg", seed=i, size=(30, 24), mode="RGB")
    if source == "kaggle":
        shutil.copytree(root / "HAM10000_images_part_2", root / "ham10000_images_part_2")
        with open(root / "HAM10000_metadata.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
            writer.writerows(rows)
        metadata = root / "HAM10000_metadata.csv"
    else:
        metadata = root / "HAM10000_metadata"
        lines = ["\t".join(f'"{h}"' for h in ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization",
                                                "dataset"])]
        lines += ["\t".join([f'"{r[0]}"', f'"{r[1]}.jpg"', *(f'"{v}"' for v in r[2:]), '"vidir_modern"']) for r in rows]
        metadata.write_text("\n".join(lines) + "\n")
    test_rows = _write_isic_test(root, isic_test) if isic_test else []
    return {"metadata": metadata, "rows": rows, "test_rows": test_rows}


def _write_isic_test(root: Path, fmt: str) -> list[list[str]]:
    """The ISIC 2018 Task 3 test ground truth; the last row's image is not written (join on present images)."""
    isic = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    rows = [[f"ISIC_{34524 + i:07d}", HAM_DX[i % 7]] for i in range(15)]
    for i, (image, _) in enumerate(rows[:-1]):
        _image(root / "ISIC2018_Task3_Test_Images" / f"{image}.jpg", seed=1000 + i, size=(30, 24), mode="RGB")
    with open(root / "ISIC2018_Task3_Test_GroundTruth.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        if fmt == "onehot":
            writer.writerow(["image", *isic])
            writer.writerows([[image, *("1.0" if c.lower() == dx else "0.0" for c in isic)] for image, dx in rows])
        else:
            writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"])
            writer.writerows([[f"HAM_{9000 + i:07d}", image, dx, "histo", "40.0", "female", "face", "vienna_dias"]
                              for i, (image, dx) in enumerate(rows)])
    return rows

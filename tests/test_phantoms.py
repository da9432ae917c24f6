"""Tests for spft.data.phantoms: layout, determinism, grouped splits, prevalence, masks and visible findings."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from spft.data.phantoms import (
    CXR_FINDINGS,
    CXR_PREVALENCE,
    LESION_CLASSES,
    LESION_PREVALENCE,
    generate_cxr,
    generate_lesions,
    render_cxr,
)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _header(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


@pytest.fixture(scope="module")
def cxr600(tmp_path_factory):
    return generate_cxr(tmp_path_factory.mktemp("cxr600"), n_images=600, image_size=64, seed=1)


@pytest.fixture(scope="module")
def lesions600(tmp_path_factory):
    return generate_lesions(tmp_path_factory.mktemp("les600"), n_images=600, image_size=64, seed=1)


def test_cxr_determinism(tmp_path):
    a = generate_cxr(tmp_path / "a", n_images=12, image_size=64, seed=5)
    b = generate_cxr(tmp_path / "b", n_images=12, image_size=64, seed=5)
    c = generate_cxr(tmp_path / "c", n_images=12, image_size=64, seed=6)
    assert (a / "labels.csv").read_bytes() == (b / "labels.csv").read_bytes()
    assert (a / "boxes.csv").read_bytes() == (b / "boxes.csv").read_bytes()
    images = [r["image"] for r in _rows(a / "labels.csv")][:4]
    for rel in images:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
        mask = rel.replace("images/", "masks/").replace(".png", "_heart.png")
        assert (a / mask).read_bytes() == (b / mask).read_bytes()
    assert any((a / rel).read_bytes() != (c / rel).read_bytes() for rel in images if (c / rel).exists())


def test_lesion_determinism(tmp_path):
    a = generate_lesions(tmp_path / "a", n_images=8, image_size=48, seed=2)
    b = generate_lesions(tmp_path / "b", n_images=8, image_size=48, seed=2)
    c = generate_lesions(tmp_path / "c", n_images=8, image_size=48, seed=3)
    assert (a / "labels.csv").read_bytes() == (b / "labels.csv").read_bytes()
    rels = [r["image"] for r in _rows(a / "labels.csv")]
    assert all((a / rel).read_bytes() == (b / rel).read_bytes() for rel in rels)
    assert any((a / rel).read_bytes() != (c / rel).read_bytes() for rel in rels if (c / rel).exists())


def test_cxr_layout_columns_and_files(cxr600):
    assert _header(cxr600 / "labels.csv") == ["image", "patient_id", "split", *CXR_FINDINGS]
    assert _header(cxr600 / "boxes.csv") == ["image", "finding", "x_min", "y_min", "x_max", "y_max"]
    rows = _rows(cxr600 / "labels.csv")
    assert len(rows) == 600 and not (cxr600 / "labels.csv.tmp").exists()
    for r in rows:
        assert r["image"].startswith("images/") and (cxr600 / r["image"]).is_file()
        assert {r[f] for f in CXR_FINDINGS} <= {"0", "1"}
    first = Image.open(cxr600 / rows[0]["image"])
    assert first.mode == "L" and first.size == (64, 64)
    per_patient = {}
    for r in rows:
        per_patient.setdefault(r["patient_id"], []).append(r)
    assert all(1 <= len(v) <= 3 for v in per_patient.values()) and len(per_patient) == 300


def test_cxr_split_is_grouped_by_patient(cxr600):
    rows = _rows(cxr600 / "labels.csv")
    splits = {}
    for r in rows:
        splits.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    fractions = {name: sum(r["split"] == name for r in rows) / len(rows) for name in ("train", "val", "test")}
    assert abs(fractions["train"] - 0.70) < 0.06 and min(fractions.values()) > 0.09


def test_cxr_prevalence(cxr600):
    rows = _rows(cxr600 / "labels.csv")
    for f in CXR_FINDINGS:
        observed = np.mean([int(r[f]) for r in rows])
        assert abs(observed - CXR_PREVALENCE[f]) <= 0.06, (f, observed)


def test_cxr_custom_prevalence(tmp_path):
    out = generate_cxr(tmp_path, n_images=40, image_size=32, seed=0, prevalence={"Mass": 1.0, "Nodule": 0.0})
    rows = _rows(out / "labels.csv")
    assert all(r["Mass"] == "1" and r["Nodule"] == "0" for r in rows)
    with pytest.raises(ValueError, match="unknown"):
        generate_cxr(tmp_path / "bad", n_images=4, prevalence={"Fracture": 0.1})


def test_cxr_boxes_match_labels(cxr600):
    labels = {r["image"]: r for r in _rows(cxr600 / "labels.csv")}
    boxes = _rows(cxr600 / "boxes.csv")
    seen = set()
    for b in boxes:
        assert labels[b["image"]][b["finding"]] == "1"
        x0, y0, x1, y1 = (int(b[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        seen.add((b["image"], b["finding"]))
    positives = {(img, f) for img, r in labels.items() for f in CXR_FINDINGS if r[f] == "1"}
    assert positives == seen


def test_cxr_masks_binary_and_sided(cxr600):
    rows = _rows(cxr600 / "labels.csv")[:10]
    for r in rows:
        stem = r["image"].removeprefix("images/").removesuffix(".png")
        names = ("heart", "left_lung", "right_lung")
        masks = {n: np.asarray(Image.open(cxr600 / "masks" / f"{stem}_{n}.png")) for n in names}
        for m in masks.values():
            assert set(np.unique(m)) <= {0, 255} and (m > 0).sum() > 20
        assert np.nonzero(masks["left_lung"])[1].mean() > 32 > np.nonzero(masks["right_lung"])[1].mean()
        assert not np.any((masks["heart"] > 0) & (masks["left_lung"] > 0))


def test_render_cxr_contract():
    img, masks, boxes = render_cxr(np.random.default_rng(0), 96, {"Nodule", "Cardiomegaly"})
    assert img.dtype == np.uint8 and img.shape == (96, 96)
    assert set(masks) == {"heart", "left_lung", "right_lung"} and all(m.dtype == bool for m in masks.values())
    assert {b[0] for b in boxes} == {"Nodule", "Cardiomegaly"}
    with pytest.raises(ValueError, match="unknown"):
        render_cxr(np.random.default_rng(0), 96, {"Fracture"})


def test_cxr_findings_are_visible(cxr600):
    """A logistic regression on 16x16 thumbnails separates the large findings (AUC > 0.8, cross-validated)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = _rows(cxr600 / "labels.csv")
    x = np.stack([np.asarray(Image.open(cxr600 / r["image"]).resize((16, 16), Image.BILINEAR), np.float32).ravel()
                  for r in rows]) / 255.0
    for finding in ("Cardiomegaly", "Effusion", "Mass"):
        y = np.array([int(r[finding]) for r in rows])
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))
        score = cross_val_predict(model, x, y, cv=4, method="predict_proba")[:, 1]
        assert roc_auc_score(y, score) > 0.8, finding


def test_lesion_layout_onehot_and_grouped_split(lesions600):
    assert _header(lesions600 / "labels.csv") == ["image", "lesion_id", "split", *LESION_CLASSES]
    rows = _rows(lesions600 / "labels.csv")
    assert len(rows) == 600
    splits = {}
    for r in rows:
        assert sum(int(r[c]) for c in LESION_CLASSES) == 1
        assert r["image"].endswith(".jpg") and (lesions600 / r["image"]).is_file()
        splits.setdefault(r["lesion_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values()) and all(1 <= sum(1 for r in rows if r["lesion_id"] == k) <= 2
                                                                for k in list(splits)[:50])
    first = Image.open(lesions600 / rows[0]["image"])
    assert first.mode == "RGB" and first.size == (64, 64)


def test_lesion_prevalence(lesions600):
    rows = _rows(lesions600 / "labels.csv")
    assert abs(sum(LESION_PREVALENCE.values()) - 1.0) < 1e-9
    for c in LESION_CLASSES:
        observed = np.mean([int(r[c]) for r in rows])
        assert abs(observed - LESION_PREVALENCE[c]) <= 0.06, (c, observed)


def test_labels_csv_written_last(tmp_path, monkeypatch):
    """An interrupted run leaves no labels.csv (the completeness marker), even over an earlier complete run."""
    out = generate_cxr(tmp_path, n_images=4, image_size=32)
    assert (out / "labels.csv").is_file()
    from spft.data import phantoms

    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(phantoms, "render_cxr", boom)
    with pytest.raises(RuntimeError):
        generate_cxr(tmp_path, n_images=4, image_size=32)
    assert not (out / "labels.csv").exists()


def test_lesion_classes_are_visible(lesions600):
    """A logistic regression on 12x12 colour thumbnails tells the seven classes apart (macro one-vs-rest AUC > 0.9)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = _rows(lesions600 / "labels.csv")
    x = np.stack([np.asarray(Image.open(lesions600 / r["image"]).resize((12, 12), Image.BILINEAR), np.float32).ravel()
                  for r in rows]) / 255.0
    y = np.array([[int(r[c]) for c in LESION_CLASSES] for r in rows]).argmax(axis=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000))
    proba = cross_val_predict(model, x, y, cv=4, method="predict_proba")
    assert roc_auc_score(y, proba, multi_class="ovr") > 0.9

"""A researcher's own CSV (other column names, no split column) and the multi-class path, through the real CLI."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from conftest import run_cli, tiny_overrides

pytestmark = pytest.mark.slow


def test_own_csv_with_patient_grouped_split(spft_cache, tmp_path):
    """The demo config pointed at a CSV of one's own: data.* keys only, a seeded split grouped by patient."""
    from spft.config import load_config
    from spft.data.registry import ensure_phantoms

    folder = ensure_phantoms(load_config("configs/phantom_cxr.yaml", tiny_overrides(tmp_path)).data.phantom)
    src = pd.read_csv(folder / "labels.csv")
    own = pd.DataFrame({"file": src["image"], "subject": src["patient_id"],
                        "effusion": src["Effusion"], "cardio": src["Cardiomegaly"].astype(object)})
    own.loc[::9, "cardio"] = ""  # some unknown labels
    own.to_csv(tmp_path / "mine.csv", index=False)
    run_dir = tmp_path / "run"
    run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(run_dir, epochs=2, phantom=False), "data.name=csv",
            f"data.csv={tmp_path / 'mine.csv'}", f"data.root={folder}", "data.image_column=file",
            "data.label_columns=[effusion, cardio]", "data.patient_column=subject",
            "recipe.class_weights.heuristic={}")
    data = json.loads((run_dir / "data.json").read_text())
    assert data["classes"] == ["effusion", "cardio"]
    assert "grouped by 'subject'" in data["split_policy"]
    with open(run_dir / "predictions_test.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"id", "group", "prob_effusion", "prob_cardio", "label_effusion", "label_cardio",
                            "logit_effusion", "logit_cardio"}
    assert any(r["label_cardio"] == "" for r in rows)  # unknown stays unknown in the predictions
    test_subjects = {r["group"] for r in rows}
    test_files = {r["id"] for r in rows}
    other_subjects = set(own.loc[~own["file"].isin(test_files), "subject"])
    assert test_subjects and other_subjects and not test_subjects & other_subjects  # no subject on both sides


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_multiclass_lesions(spft_cache, tmp_path, loss):
    run_dir = tmp_path / loss
    proc = run_cli("train", "configs/phantom_lesion.yaml", *tiny_overrides(run_dir, n_images=210, epochs=2),
                   "data.phantom.image_size=48", f"loss={loss}", "recipe.class_weights.heuristic={}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["per_class_auc"]) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    preds = pd.read_csv(run_dir / "predictions_test.csv")
    probs = preds[[f"prob_{c}" for c in metrics["per_class_auc"]]].to_numpy()
    if loss == "ce":  # softmax probabilities sum to one
        assert abs(probs.sum(1) - 1).max() < 1e-4
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)

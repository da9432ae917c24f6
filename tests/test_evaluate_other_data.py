"""``spft evaluate RUN data.csv=OTHER.csv``: every row of the other data, said and recorded, never overwriting.

One tiny run is trained per module (a CSV of one's own images, as in test_cli_own_data.py) and evaluated on an
"external" CSV without a split column.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import run_cli, tiny_overrides

from spft.errors import DataError, MissingFileError

CLASSES = "data.label_columns=[Effusion, Cardiomegaly, Nodule]"


@pytest.fixture(scope="module")
def trained(spft_cache, tmp_path_factory):
    from spft.config import load_config
    from spft.data.registry import ensure_phantoms

    tmp = tmp_path_factory.mktemp("evaluate_other")
    folder = ensure_phantoms(load_config("configs/phantom_cxr.yaml", tiny_overrides(tmp, n_images=160)).data.phantom)
    run_dir = tmp / "run"
    run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(run_dir, n_images=160, epochs=2, phantom=False),
            "data.name=csv",
            f"data.csv={folder / 'labels.csv'}", f"data.root={folder}", CLASSES, "data.patient_column=patient_id",
            "recipe.class_weights.heuristic={}")
    external = pd.read_csv(folder / "labels.csv").drop(columns=["split"])  # 160 labelled images, no split column
    external.to_csv(tmp / "external.csv", index=False)
    return {"run": run_dir, "folder": folder, "tmp": tmp, "external": tmp / "external.csv", "rows": external}


@pytest.mark.slow
def test_other_data_uses_every_row_records_it_and_never_overwrites(trained):
    run, external = trained["run"], trained["external"]
    record = {name: (run / name).read_bytes() for name in ("metrics.json", "predictions_test.csv")}
    proc = run_cli("evaluate", str(run), f"data.csv={external}", "--json")
    metrics = json.loads((run / "metrics_external.json").read_text())
    assert metrics["n"] == len(trained["rows"]) == 160  # every row, not a seeded 15 % "test" slice
    assert metrics["split"] == "all" and metrics["data_file"] == str(external)
    assert json.loads(proc.stdout)["n"] == 160
    assert len(pd.read_csv(run / "predictions_external.csv")) == 160
    assert f"evaluating 160 image(s) of {external}" in proc.stderr  # said on stderr, with the file

    # a second evaluation of that data, and one of its test split only, keep the earlier files
    first = (run / "metrics_external.json").read_bytes()
    run_cli("evaluate", str(run), f"data.csv={external}")
    assert (run / "metrics_external.json").read_bytes() == first
    assert json.loads((run / "metrics_external-2.json").read_text())["n"] == 160
    run_cli("evaluate", str(run), f"data.csv={external}", "--split", "test", "--out", str(trained["tmp"] / "ext"))
    part = json.loads((trained["tmp"] / "ext" / "metrics_external_test.json").read_text())
    assert part["split"] == "test" and 0 < part["n"] < 160
    assert {name: (run / name).read_bytes() for name in record} == record  # the training record is untouched


def test_unlabelled_rows_are_an_error_naming_the_file(trained):
    from spft.tasks.classification.evaluate import evaluate_run

    rows = trained["rows"].astype(str)
    rows.loc[:4, ["Effusion", "Cardiomegaly", "Nodule"]] = ""
    unlabelled = trained["tmp"] / "unlabelled.csv"
    rows.to_csv(unlabelled, index=False)
    with pytest.raises(DataError, match=r"unlabelled\.csv: 5 of 160 row\(s\) to evaluate have no label"):
        evaluate_run(trained["run"], (f"data.csv={unlabelled}",))


def test_a_missing_training_image_does_not_block_the_test_split(trained):
    from spft.tasks.classification.evaluate import evaluate_run

    rows = pd.read_csv(trained["folder"] / "labels.csv")
    train_row = rows.index[rows["split"] == "train"][0]
    rows.loc[train_row, "image"] = "images/gone.png"
    gone = trained["tmp"] / "gone_train.csv"
    rows.to_csv(gone, index=False)
    ev = evaluate_run(trained["run"], (f"data.csv={gone}", "data.split_column=split"), split="test")
    assert len(ev.ids) == int((rows["split"] == "test").sum())
    assert (trained["run"] / "metrics_gone_train_test.json").is_file()
    with pytest.raises(MissingFileError, match="gone.png"):  # ... but a missing image that is scored does
        evaluate_run(trained["run"], (f"data.csv={gone}", "data.split_column=split"), split="train")

"""``spft data check`` through the real CLI: counts against pandas, leakage / missing / unreadable files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL, run_cli
from datasets_fixtures import CHEXPERT_OBS, NIH_FINDINGS, make_chestxray14, make_chexpert, make_ham10000

from spft.config import load_config
from spft.data.registry import load_table


def _check(config: str, root: Path, *args: str, expect_rc: int = 0) -> dict:
    proc = run_cli("data", "check", config, f"data.root={root}", *args, "--json", check=False)
    assert proc.returncode == expect_rc, proc.stderr
    return json.loads(proc.stdout)


def _split_of(config: str, root: Path) -> dict[str, str]:
    table = load_table(load_config(config, [f"data.root={root}"]).data, seed=0)
    return dict(zip(table.ids, table.splits))


def test_chestxray14_counts_match_pandas(tmp_path):
    copy = make_chestxray14(tmp_path, layout="kaggle", n_patients=20)
    report = _check("configs/chestxray14.yaml", tmp_path)
    df = pd.read_csv(copy["csv"])
    df["split"] = df["Image Index"].map(_split_of("configs/chestxray14.yaml", tmp_path))
    dummies = df["Finding Labels"].str.get_dummies(sep="|").reindex(columns=NIH_FINDINGS, fill_value=0)
    for split, part in df.groupby("split"):
        got = report["splits"][split]
        assert got["n_images"] == len(part) and got["n_groups"] == part["Patient ID"].nunique()
        assert got["positives"] == {c: int(dummies.loc[part.index, c].sum()) for c in NIH_FINDINGS}
        assert got["unknown"] == {c: 0 for c in NIH_FINDINGS} and got["uncertain"] == {}
    assert report["splits"]["test"]["n_images"] == len(copy["test"])  # the official list, independently
    assert report["leaked_groups"] == [] and report["missing_files"] == [] and report["unreadable_files"] == []
    assert any("published 112,120" in w for w in report["warnings"]) and report["ok"]


def test_chexpert_uncertain_and_unknown_counts_match_pandas(tmp_path):
    copy = make_chexpert(tmp_path)
    report = _check("configs/chexpert.yaml", tmp_path, "data.blank=ignore")
    frames = [pd.read_csv(copy["train_csv"]), pd.read_csv(copy["valid_csv"])]
    df = pd.concat(frames, ignore_index=True)
    df = df[df["Frontal/Lateral"] == "Frontal"]
    split_of = _split_of("configs/chexpert.yaml", tmp_path)
    df["split"] = df["Path"].str.split("/", n=1).str[1].map(split_of)
    for split, part in df.groupby("split"):
        got = report["splits"][split]
        assert got["n_groups"] == part["Path"].str.extract(r"(patient\d+)")[0].nunique()
        assert got["positives"] == {c: int((part[c] == 1).sum()) for c in CHEXPERT_OBS}
        assert got["uncertain"] == {c: int((part[c] == -1).sum()) for c in CHEXPERT_OBS}
        # U-Ignore and blank=ignore: both uncertain and blank labels are unknown (masked)
        assert got["unknown"] == {c: int(((part[c] == -1) | part[c].isna()).sum()) for c in CHEXPERT_OBS}
    assert report["splits"]["test"]["n_images"] == len(frames[1])


def test_ham10000_lesion_counts(tmp_path):
    copy = make_ham10000(tmp_path, source="dataverse", isic_test="onehot")
    report = _check("configs/ham10000.yaml", tmp_path)
    meta = pd.DataFrame(copy["rows"], columns=["lesion_id", "image_id", "dx", "t", "a", "s", "l"])
    assert report["splits"]["train"]["n_images"] + report["splits"]["val"]["n_images"] == len(meta)
    assert report["splits"]["train"]["n_groups"] + report["splits"]["val"]["n_groups"] == meta["lesion_id"].nunique()
    assert report["splits"]["test"]["n_images"] == len(copy["test_rows"]) - 1
    assert sum(report["splits"]["train"]["positives"].values()) == report["splits"]["train"]["n_images"]
    assert report["group_kind"] == "lesion"


def test_leakage_and_missing_files_fail_after_the_report(tmp_path):
    copy = make_chestxray14(tmp_path)
    (tmp_path / "images" / copy["names"][2]).unlink()
    test = (tmp_path / "test_list.txt").read_text().split()
    (tmp_path / "test_list.txt").write_text("\n".join(n for n in test if n != "00000008_001.png") + "\n")
    (tmp_path / "train_val_list.txt").write_text((tmp_path / "train_val_list.txt").read_text() + "00000008_001.png\n")
    report = _check("configs/chestxray14.yaml", tmp_path, expect_rc=1)
    assert report["leaked_groups"] == ["8"]
    assert [Path(p).name for p in report["missing_files"]] == [copy["names"][2]]
    assert not report["ok"] and len(report["problems"]) == 2
    text = run_cli("data", "check", "configs/chestxray14.yaml", f"data.root={tmp_path}", check=False)
    assert text.returncode == 1
    assert "leakage: 1 patients in more than one split (must be 0)" in text.stdout
    assert "  8 (" in text.stdout and copy["names"][2] in text.stdout
    assert "result: FAILED" in text.stdout


def test_training_refuses_a_bad_copy_naming_offenders(tmp_path):
    from spft.tasks.classification.train import train

    copy = make_chestxray14(tmp_path / "nih")
    for name in copy["names"][:7]:
        (tmp_path / "nih" / "images" / name).unlink()
    cfg = load_config("configs/chestxray14.yaml", [f"data.root={tmp_path / 'nih'}", "model.name=null", *TINY_MODEL,
                                                   f"run.dir={tmp_path / 'run'}"])
    with pytest.raises(FileNotFoundError) as err:
        train(cfg)
    message = str(err.value)
    assert "7 listed image(s) not found" in message and copy["names"][0] in message
    assert copy["names"][6] not in message  # only the first few are named...
    assert "spft data check CONFIG" in message  # ...and the command that lists them all


def test_scan_lists_unreadable_images(tmp_path):
    copy = make_ham10000(tmp_path, source="kaggle")
    broken = next(tmp_path.glob(f"HAM10000_images_part_1/{copy['rows'][0][1]}.jpg"))
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated JPEG
    assert _check("configs/ham10000.yaml", tmp_path)["unreadable_files"] == []  # not decoded without --scan
    report = _check("configs/ham10000.yaml", tmp_path, "--scan", expect_rc=1)
    assert report["scanned"] and report["unreadable_files"] == [str(broken)]
    assert "cannot decode" in report["unreadable_errors"][str(broken)]


def test_text_report_of_the_generic_csv_dataset(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(12):
        from PIL import Image

        Image.fromarray(np.full((8, 8), i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "pid": f"p{i // 2}", "a": [0, 1, ""][i % 3]})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    proc = run_cli("data", "check", "configs/raddino_csv.yaml", f"data.csv={tmp_path / 'labels.csv'}",
                   "data.label_columns=[a]", "data.patient_column=pid", "data.split_fractions=[0.5, 0.25, 0.25]")
    assert "dataset: csv" in proc.stdout and "unknown (masked in loss and AUC)" in proc.stdout
    assert "result: OK" in proc.stdout


def _constant_val_csv(tmp_path: Path, val_b: list[int]) -> list[str]:
    """A CSV set whose val split has only negatives of class a (and ``val_b`` for class b); overrides to train it."""
    from PIL import Image

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(36):
        Image.fromarray(np.full((16, 16), 7 * i % 256, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        split = "train" if i < 24 else "val" if i < 30 else "test"
        a = i % 2 if split != "val" else 0
        b = (i // 2) % 2 if split != "val" else val_b[(i - 24) % len(val_b)]
        rows.append({"image": f"img/{i}.png", "pid": f"p{i}", "split": split, "a": a, "b": b})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return [f"data.csv={tmp_path / 'labels.csv'}", f"data.root={tmp_path}", "data.image_column=image",
            "data.label_columns=[a, b]", "data.patient_column=pid", "data.split_column=split"]


def test_training_refuses_what_data_check_fails_before_it_starts(tmp_path):
    data = _constant_val_csv(tmp_path, val_b=[0])  # every class constant in val: no AUC to monitor
    proc = run_cli("data", "check", "configs/raddino_csv.yaml", *data, check=False)
    assert proc.returncode == 1 and "result: FAILED" in proc.stdout
    run_dir = tmp_path / "run"
    proc = run_cli("train", "configs/raddino_csv.yaml", *data, "model.name=null", *TINY_MODEL,
                   "trainer.max_epochs=1", "data.num_workers=0", f"run.dir={run_dir}", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "no class has both positives and negatives in the val split" in lines[-1], \
        proc.stderr
    assert "epoch 0" not in proc.stderr and not run_dir.exists()


def test_a_class_constant_in_val_is_a_warning_at_the_start(tmp_path):
    data = _constant_val_csv(tmp_path, val_b=[0, 1])  # a is constant in val, b is not
    run_dir = tmp_path / "run"
    proc = run_cli("train", "configs/raddino_csv.yaml", *data, "model.name=null", *TINY_MODEL,
                   "trainer.max_epochs=1", "recipe.stage1_epochs=1", "data.num_workers=0",
                   "trainer.progress_bar=false", f"run.dir={run_dir}")
    err = proc.stderr
    warning = err.index("val: AUC undefined for 1 class(es) (no positives: a)")
    assert warning < err.index("epoch 0") and (run_dir / "DONE").is_file()


def test_data_check_warns_about_exif_orientation_that_spft_ignores(tmp_path):
    from PIL import Image

    from spft.data.io import load_image

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(12):
        im = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (8, 1)))  # 8 x 16: wider than tall
        exif = Image.Exif()
        if i == 3:
            exif[0x0112] = 6  # "rotate 90° to view": a viewer shows it 16 x 8
        im.save(tmp_path / "img" / f"{i}.jpg", exif=exif.tobytes())
        rows.append({"image": f"img/{i}.jpg", "pid": f"p{i // 2}", "a": i % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    args = ["configs/raddino_csv.yaml", f"data.csv={tmp_path / 'labels.csv'}", f"data.root={tmp_path}",
            "data.image_column=image", "data.label_columns=[a]", "data.patient_column=pid",
            "data.split_fractions=[0.5, 0.25, 0.25]"]
    report = json.loads(run_cli("data", "check", *args, "--json", check=False).stdout)
    exif = [w for w in report["warnings"] if "EXIF orientation" in w]
    assert len(exif) == 1 and exif[0].startswith("1 image(s)") and "3.jpg (orientation 6: rotated 90°)" in exif[0]
    assert np.asarray(load_image(tmp_path / "img" / "3.jpg", "grey")).shape[:2] == (8, 16)  # stored pixels, unrotated


def test_a_linked_image_folder_leading_outside_data_root_is_refused_unless_followed(tmp_path):
    """Named datasets find their files by walking data.root: a link there leading outside it (a folder, or an
    image linked to /etc/passwd) is one line naming it, unless data.follow_links=true (issue 20 item 16)."""
    import shutil

    root, elsewhere = tmp_path / "nih", tmp_path / "big_disk"
    make_chestxray14(root, layout="kaggle", n_patients=20)
    shutil.move(root / "images_001", elsewhere)
    (root / "images_001").symlink_to(elsewhere, target_is_directory=True)  # extracted on another disk, linked
    proc = run_cli("data", "check", "configs/chestxray14.yaml", f"data.root={root}", "--json", check=False)
    assert proc.returncode == 2 and f"{root / 'images_001'} is a link leading outside it" in proc.stderr
    assert "data.follow_links=true" in proc.stderr
    report = _check("configs/chestxray14.yaml", root, "data.follow_links=true")
    assert report["missing_files"] == [] and sum(s["n_images"] for s in report["splits"].values()) > 0

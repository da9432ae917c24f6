"""Segmentation pieces without training: Dice vs a numpy reference, the weighted loss, datasets, SAM2 layer groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from segmentation_fixtures import TINY_SAM2

from spft.config import load_config
from spft.data.masks import MaskDataset, box_of, read_mask_folder, read_phantom_masks
from spft.metrics import dice_score, mean_dice
from spft.models.encoders import Preprocessing
from spft.tasks.segmentation.loss import weighted_dice_bce
from spft.tasks.segmentation.module import jitter_boxes

PREP = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, "test")


def _reference_dice(p: np.ndarray, t: np.ndarray) -> float:
    return 2 * np.logical_and(p, t).sum() / (p.sum() + t.sum())


def test_dice_equals_numpy_reference_on_hand_made_masks():
    a = np.zeros((6, 6), bool)
    a[1:4, 1:4] = True  # 9 pixels
    b = np.zeros((6, 6), bool)
    b[2:5, 2:5] = True  # 9 pixels, 4 shared
    assert dice_score(a, b) == pytest.approx(8 / 18) == pytest.approx(_reference_dice(a, b))
    assert dice_score(a, a) == 1.0 and dice_score(np.zeros_like(a), a) == 0.0
    assert dice_score(a, np.zeros_like(a)) is None  # empty truth: no Dice, excluded from the mean
    rng = np.random.default_rng(1)
    for _ in range(5):
        p, t = rng.random((9, 7)) > 0.5, rng.random((9, 7)) > 0.4
        assert dice_score(p, t) == pytest.approx(_reference_dice(p, t))


def test_mean_dice_averages_images_then_structures():
    mean, per = mean_dice([[1.0, 0.5], [0.5, None], [0.0, 0.7]], ["heart", "lung"])
    assert per == {"heart": pytest.approx(0.5), "lung": pytest.approx(0.6)} and mean == pytest.approx(0.55)
    assert mean_dice([[None]], ["heart"]) == (None, {"heart": None})


def test_structure_weights_reach_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    masks = (torch.rand(2, 3, 8, 8) > 0.5).float()
    valid = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        ones = weighted_dice_bce(logits, masks, valid, torch.ones(3)).item()
        parts = [weighted_dice_bce(logits, masks, valid, torch.eye(3)[p]).item() for p in range(3)]
        w = torch.tensor([2.0, 0.5, 0.0])
        weighted = weighted_dice_bce(logits, masks, valid, w).item()
        absent = torch.tensor([[True, True, False], [True, True, False]])
        masked = weighted_dice_bce(logits, masks, absent, torch.ones(3)).item()
    assert ones == pytest.approx(sum(parts))
    assert weighted == pytest.approx(2.0 * parts[0] + 0.5 * parts[1])
    assert masked == pytest.approx(parts[0] + parts[1])  # a structure absent from an image adds nothing
    weighted_dice_bce(logits, masks, valid, w).backward()
    assert logits.grad[:, 2].abs().sum() == 0 and logits.grad[:, 0].abs().sum() > 0  # weight 0: no gradient


def test_box_of_and_jitter_stay_inside_the_image():
    m = np.zeros((10, 10), bool)
    m[2:5, 3:9] = True
    assert box_of(m) == [3.0, 2.0, 8.0, 4.0] and box_of(np.zeros((4, 4), bool)) == [0.0] * 4
    boxes = torch.tensor([[[3.0, 2.0, 8.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
    moved = jitter_boxes(boxes, torch.tensor([[True, False]]), 0.5, 10)
    assert (moved[0, 0] != boxes[0, 0]).any() and (moved[0, 1] == 0).all()
    assert (moved >= 0).all() and (moved <= 9).all() and (moved[..., 2:] >= moved[..., :2]).all()


def test_mask_folder_layouts(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(8):
        Image.fromarray(np.full((16, 16), 80, np.uint8)).save(tmp_path / "images" / f"x{i}.png")
        heart = np.zeros((16, 16), np.uint8)
        heart[4:9, 5:12] = 255
        Image.fromarray(heart).save(tmp_path / "masks" / f"x{i}_heart.png")
    cfg = load_config("configs/phantom_segment_sam2.yaml", ["data.name=mask_folder", f"data.root={tmp_path}"]).data
    table = read_mask_folder(cfg, ["heart", "left_lung"], seed=0)
    assert table.ids == [f"x{i}" for i in range(8)] and all(m[1] is None for m in table.masks)
    sample = MaskDataset(table, table.splits[0], PREP)[0]
    assert sample["valid"].tolist() == [True, False] and sample["boxes"][0].tolist() == [10.0, 8.0, 23.0, 17.0]
    csv = tmp_path / "list.csv"
    csv.write_text("file,mask_heart,split\n" + "".join(f"images/x{i}.png,masks/x{i}_heart.png,{s}\n"
                                                     for i, s in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2)))
    cfg = load_config("configs/phantom_segment_sam2.yaml", ["data.name=mask_folder", f"data.csv={csv}",
                                                            "data.image_column=file", "data.split_column=split"]).data
    table = read_mask_folder(cfg, ["heart"], seed=0)
    assert table.splits[:4] == ["train"] * 4 and table.masks[0][0].endswith("x0_heart.png")
    table.check()


def test_phantom_masks_follow_the_generator(spft_cache):
    cfg = load_config("configs/phantom_segment_sam2.yaml", ["data.phantom.n_images=12", "data.phantom.image_size=32"])
    table = read_phantom_masks(cfg.data, ["heart", "left_lung", "right_lung"], seed=0)
    assert len(table.ids) == 12 and table.masks[0][1].endswith(f"{table.ids[0]}_left_lung.png")
    _, masks = MaskDataset(table, "train", PREP).original(0)
    left_x, right_x = np.flatnonzero(masks[1].any(0)).mean(), np.flatnonzero(masks[2].any(0)).mean()
    assert left_x > right_x  # patient's left lung on the image's right
    with pytest.raises(KeyError, match="liver"):
        read_phantom_masks(cfg.data, ["liver"], seed=0)


def test_sam2_layer_groups_cover_the_encoder_and_freeze_prompts():
    from spft.models.sam2 import build_sam2

    cfg = load_config("configs/phantom_segment_sam2.yaml", [TINY_SAM2])
    model, prep = build_sam2(cfg.model)
    groups = model.layer_groups()
    assert prep.size == 64 and groups.n_blocks == 5 and groups.head is model.sam.mask_decoder
    encoder = {id(p) for p in model.sam.vision_encoder.parameters()}
    grouped = {id(p) for m in groups.encoder_modules() for p in m.parameters()}
    assert encoder == grouped  # every encoder parameter belongs to a recipe part
    assert not any(p.requires_grad for p in model.sam.prompt_encoder.parameters())
    logits = model(torch.zeros(2, 3, 64, 64), torch.tensor([[[4.0, 4, 30, 40]] * 3] * 2))
    assert logits.shape == (2, 3, 64, 64)


def test_hd95_on_hand_made_masks():
    from spft.metrics import hd95

    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    assert hd95(a, a) == 0.0
    assert hd95(a, np.roll(a, 4, axis=0)) == pytest.approx(4.0)
    assert hd95(a, np.zeros_like(a)) is None


def _mask_csv(tmp_path, n: int = 8):
    """images/xI.png + masks/xI_heart.png listed in list.csv with a split column (4 train, 2 val, 2 test)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((16, 16), 80, np.uint8)).save(tmp_path / "images" / f"x{i}.png")
        heart = np.zeros((16, 16), np.uint8)
        heart[4:9, 5:12] = 255
        Image.fromarray(heart).save(tmp_path / "masks" / f"x{i}_heart.png")
    csv = tmp_path / "list.csv"
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    csv.write_text("file,mask_heart,split\n" + "".join(f"images/x{i}.png,masks/x{i}_heart.png,{s}\n"
                                                     for i, s in enumerate(splits)))
    return load_config("configs/phantom_segment_sam2.yaml", ["data.name=mask_folder", f"data.csv={csv}",
                                                             "data.image_column=file", "data.split_column=split"]).data


def test_missing_files_are_checked_only_for_the_rows_read(tmp_path):
    """A missing training image or mask blocks training (build_mask_table) but not reading the test rows."""
    from spft.data.masks import build_mask_table, load_mask_table, pixel_prevalence
    from spft.errors import MissingFileError

    cfg = _mask_csv(tmp_path)
    (tmp_path / "images" / "x1.png").unlink()  # a training image
    (tmp_path / "masks" / "x2_heart.png").unlink()  # a training mask
    with pytest.raises(MissingFileError, match=r"1 image\(s\) missing, e\.g\. .*x1\.png"):
        build_mask_table(cfg, ["heart"], seed=0)
    table = load_mask_table(cfg, ["heart"], seed=0)  # read, not refused
    table.check(files=False)  # splits and groups are fine
    test = table.indices("test")
    table.check_files(test)  # the test rows are all there
    assert MaskDataset(table, "test", PREP)[0]["valid"].tolist() == [True]
    assert pixel_prevalence(table)[0] > 0  # the missing training mask is skipped, not a crash
    with pytest.raises(MissingFileError, match=r"1 image\(s\) missing, e\.g\. .*x1\.png"):
        table.check_files(table.indices("train"))
    (tmp_path / "images" / "x1.png").write_bytes((tmp_path / "images" / "x0.png").read_bytes())
    with pytest.raises(MissingFileError, match=r"1 mask file\(s\) missing, e\.g\. .*x2_heart\.png"):
        build_mask_table(cfg, ["heart"], seed=0)
    (tmp_path / "images" / "x7.png").unlink()  # a test image
    with pytest.raises(MissingFileError, match=r"x7\.png"):
        table.check_files(test)


@pytest.mark.slow
def test_evaluate_test_split_is_not_blocked_by_a_missing_training_image(spft_cache, tmp_path):
    """`spft evaluate RUN --split test` of a SAM2 run scores the test rows after a training image is gone; a missing
    test image is one line naming it."""
    import json

    import pandas as pd
    from conftest import run_cli

    from spft.data.registry import ensure_phantoms

    phantom = load_config("configs/phantom_segment_sam2.yaml", ["data.phantom.n_images=24",
                                                                "data.phantom.image_size=64"]).data.phantom
    folder = ensure_phantoms(phantom)
    rows = pd.read_csv(folder / "labels.csv", dtype=str)
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    listing = []
    for image, split, patient in zip(rows["image"], rows["split"], rows["patient_id"]):
        stem = Path(image).stem
        (data / "images" / f"{stem}.png").write_bytes((folder / image).read_bytes())
        (data / "masks" / f"{stem}_heart.png").write_bytes((folder / "masks" / f"{stem}_heart.png").read_bytes())
        listing.append({"file": f"images/{stem}.png", "mask_heart": f"masks/{stem}_heart.png", "split": split,
                        "patient": patient})
    pd.DataFrame(listing).to_csv(data / "list.csv", index=False)
    run_dir = tmp_path / "run"
    run_cli("train", "configs/phantom_segment_sam2.yaml", TINY_SAM2, "data.name=mask_folder",
            f"data.csv={data / 'list.csv'}", "data.image_column=file", "data.split_column=split",
            "data.patient_column=patient", "segmentation.structures=[heart]", "data.num_workers=0",
            "trainer.max_epochs=1", "trainer.batch_size=8", "trainer.progress_bar=false", "recipe.stage1_epochs=1",
            "segmentation.n_overlays=0", f"run.dir={run_dir}")
    trained = json.loads((run_dir / "metrics.json").read_text())
    train_row = next(r for r in listing if r["split"] == "train")
    (data / train_row["file"]).unlink()
    (data / train_row["mask_heart"]).unlink()
    run_cli("evaluate", str(run_dir), "--split", "test", "--name", "again")
    again = json.loads(next(run_dir.glob("metrics_*again*.json")).read_text())
    assert again["n"] == trained["n"] and again["mean_dice"] == pytest.approx(trained["mean_dice"])
    test_row = next(r for r in listing if r["split"] == "test")
    (data / test_row["file"]).unlink()
    proc = run_cli("evaluate", str(run_dir), "--split", "test", "--name", "gone", check=False)
    assert proc.returncode != 0 and Path(test_row["file"]).name in proc.stderr
    assert "Traceback" not in proc.stderr

"""CheXmask: RLE decoding on hand-made strings, columns by name, quality filter, left/right convention, join."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spft.config import load_config
from spft.data.chexmask import decode_chexmask_rle, encode_chexmask_rle, quality_filter, read_chexmask
from spft.data.masks import MaskDataset, load_mask
from spft.models.encoders import Preprocessing

STRUCTURES = ["heart", "left_lung", "right_lung"]


def test_rle_is_one_indexed_and_row_major():
    # start 1 = the first pixel (row 0, col 0); row-major: start 4 on a 3-wide mask is row 1, col 0
    assert decode_chexmask_rle("1 2", 2, 3).tolist() == [[1, 1, 0], [0, 0, 0]]
    assert decode_chexmask_rle("4 1", 2, 3).tolist() == [[0, 0, 0], [1, 0, 0]]
    assert decode_chexmask_rle("3 2 6 1", 2, 3).tolist() == [[0, 0, 1], [1, 0, 1]]  # a run wraps to the next row
    rect = decode_chexmask_rle("2 2 6 2", 3, 4)  # rows 0-1, cols 1-2 of a 3x4 mask
    expected = np.zeros((3, 4), np.uint8)
    expected[0:2, 1:3] = 1
    assert rect.tolist() == expected.tolist()


@pytest.mark.parametrize("empty", ["", "   ", None, float("nan")])
def test_empty_rle_is_an_empty_mask(empty):
    mask = decode_chexmask_rle(empty, 4, 5)
    assert mask.shape == (4, 5) and not mask.any()


def test_bad_rle_names_the_problem():
    with pytest.raises(ValueError, match="odd number"):
        decode_chexmask_rle("1 2 3", 2, 3)
    with pytest.raises(ValueError, match="1-indexed"):
        decode_chexmask_rle("0 2", 2, 3)


def test_encode_inverts_decode():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9)) > 0.6
    assert (decode_chexmask_rle(encode_chexmask_rle(mask), 7, 9) == mask).all()


def _lung_masks(h: int, w: int) -> dict[str, np.ndarray]:
    """Patient's left lung on the image's RIGHT (radiological display), right lung on the image's left."""
    masks = {name: np.zeros((h, w), bool) for name in STRUCTURES}
    masks["right_lung"][2:10, 1:6] = True
    masks["left_lung"][2:10, 10:15] = True
    masks["heart"][6:10, 6:11] = True
    return masks


@pytest.fixture
def vindr_copy(tmp_path):
    """A miniature CheXmask VinDr-CXR file in the real header, columns in a shuffled order, with 5 PNG images."""
    images = tmp_path / "png" / "train"
    images.mkdir(parents=True)
    h, w = 12, 16
    masks = _lung_masks(h, w)
    header = "Right Lung,Dice RCA (Max),Height,image_id,Landmarks,Heart,Dice RCA (Mean),Width,Left Lung"
    lines = [header]
    for i, rca in enumerate([0.9, 0.8, 0.75, 0.95, 0.5, 0.72]):
        image_id = f"{i:032x}"
        if i < 5:  # the last row has no image
            Image.fromarray(np.full((h, w), 100, np.uint8)).save(images / f"{image_id}.png")
        rle = {k: encode_chexmask_rle(m) for k, m in masks.items()}
        lines.append(f"{rle['right_lung']},{min(1.0, rca + 0.05)},{h},{image_id},\"1,2,3,4\",{rle['heart']},{rca},"
                     f"{w},{rle['left_lung']}")
    csv = tmp_path / "VinDr-CXR.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv, tmp_path / "png", masks


def _cfg(csv, root, **extra):
    overrides = [f"data.masks_csv={csv}", f"data.images_root={root}", "data.split_fractions=[0.5,0.25,0.25]"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config("configs/vindr_cxr_sam2.yaml", overrides).data


def test_read_chexmask_joins_filters_and_keeps_sides(vindr_copy):
    csv, root, masks = vindr_copy
    table = read_chexmask(_cfg(csv, root), STRUCTURES, seed=0)
    # row 4 (RCA 0.5) fails the 0.7 filter; row 5 has no image; rows 0-3 remain
    assert table.ids == [f"{i:032x}" for i in range(4)]
    assert any("no image" in w for w in table.warnings)
    decoded = [load_mask(entry, (12, 16)) for entry in table.masks[0]]
    for name, mask in zip(STRUCTURES, decoded):
        assert (mask == masks[name]).all(), name
    left, right = decoded[1], decoded[2]
    assert np.flatnonzero(left.any(0)).min() > 16 / 2 > np.flatnonzero(right.any(0)).max()  # left lung: image right
    assert set(table.splits) <= {"train", "val", "test"} and table.groups == table.ids  # VinDr: one image, one group


def test_quality_threshold_is_configurable(vindr_copy):
    csv, root, _ = vindr_copy
    assert len(read_chexmask(_cfg(csv, root, **{"data.min_rca": 0.85}), STRUCTURES, 0).ids) == 2
    assert len(read_chexmask(_cfg(csv, root, **{"data.min_rca": 0.0}), STRUCTURES, 0).ids) == 5


def test_swapped_rca_columns_are_detected(caplog):
    import pandas as pd

    df = pd.DataFrame({"Dice RCA (Max)": ["0.6", "0.9", "0.5"], "Dice RCA (Mean)": ["0.8", "0.95", "0.75"]})
    kept = quality_filter(df, "subset.csv", 0.7)  # Max < Mean everywhere: the columns are swapped
    assert kept["Dice RCA (Max)"].tolist() == ["0.9"]
    assert "swapped" in caplog.text


def test_missing_column_names_file_and_column(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("image_id,Dice RCA (Mean),Heart,Height,Width\nabc,0.9,,4,4\n")
    (tmp_path / "png").mkdir()
    with pytest.raises(KeyError, match="bad.csv.*Left Lung"):
        read_chexmask(_cfg(csv, tmp_path / "png"), STRUCTURES, 0)


def test_masks_are_resized_with_their_image(tmp_path):
    from spft.data.masks import MaskTable, RleMask

    Image.fromarray(np.zeros((24, 32), np.uint8)).save(tmp_path / "a.png")
    big = np.zeros((12, 16), bool)
    big[0:6, 8:16] = True  # top-right quarter
    entry = RleMask(encode_chexmask_rle(big), 12, 16)
    transposed = RleMask(encode_chexmask_rle(big.T), 16, 12)  # Height/Width swapped in the file
    assert (load_mask(transposed, (12, 16)) == big).all()
    table = MaskTable(["heart"], [str(tmp_path / "a.png")], ["a"], ["a"], ["train"], [[entry]])
    sample = MaskDataset(table, "train", Preprocessing(8, (0.5,) * 3, (0.5,) * 3, "test"))[0]
    assert sample["masks"].shape == (1, 8, 8) and sample["masks"][0, :4, 4:].all() and not sample["masks"][0, 4:].any()
    assert sample["boxes"].tolist() == [[4.0, 0.0, 7.0, 3.0]] and sample["valid"].tolist() == [True]


def test_pixel_prevalence_from_run_lengths():
    from spft.data.masks import MaskTable, RleMask, pixel_prevalence

    entries = [[RleMask("1 6", 4, 4), None], [RleMask("3 2", 4, 4), RleMask("1 16", 4, 4)]]
    table = MaskTable(["heart", "left_lung"], ["a", "b"], ["a", "b"], ["a", "b"], ["train", "train"], entries)
    assert RleMask("", 4, 4).fraction() == 0.0
    assert pixel_prevalence(table).tolist() == pytest.approx([(6 / 16 + 2 / 16) / 2, (0 + 1) / 2])

"""Bad images and files: found before training, or one line naming the file — never a worker traceback."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli, tiny_overrides
from PIL import Image

from spft.config import load_config
from spft.data.io import BadImageError, check_image, load_image
from spft.errors import ConfigError, DataError


def _images(tmp_path) -> dict[str, str]:
    """One good PNG and every kind of bad file."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "good.png")
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "good.jpg")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    jpeg = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "text.png").write_text("not an image\n")
    Image.new("1", (14000, 14000)).save(tmp_path / "bomb.png")  # 196 M pixels, a few KB on disk
    return {p.stem if p.suffix == ".png" else p.name: str(p) for p in tmp_path.iterdir()}


def test_header_check_finds_every_kind_of_bad_file(tmp_path):
    files = _images(tmp_path)
    assert check_image(files["good"]) is None and check_image(files["good.jpg"]) is None
    assert "empty (0 bytes)" in check_image(files["empty"])
    assert "truncated PNG" in check_image(files["cut"])
    assert "truncated JPEG" in check_image(files["cut.jpg"])
    assert "cannot decode" in check_image(files["text"])
    assert "data.max_image_pixels" in check_image(files["bomb"])
    assert check_image(files["good"], max_pixels=100) is not None  # the key sets the limit
    assert check_image(files["bomb"], max_pixels=None) is None  # null = no limit
    for name in ("empty", "cut", "text", "bomb"):
        with pytest.raises(BadImageError, match=name):
            load_image(files[name])


def test_a_huge_image_is_refused_quoting_data_max_image_pixels_not_pillows_doubled_limit(tmp_path):
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")  # 400 M pixels: more than twice Pillow's limit
    for check in (lambda: load_image(tmp_path / "huge.png"), lambda: _raise(check_image(tmp_path / "huge.png"))):
        with pytest.raises(BadImageError) as err:
            check()
        assert "data.max_image_pixels = 89,478,485" in str(err.value) and "178956970" not in str(err.value)


def _raise(message):
    if message:
        raise BadImageError(message)


def test_a_bad_image_in_a_dataloader_worker_is_one_line_naming_the_file(tmp_path):
    from spft.data.contract import LabelTable
    from spft.data.dataset import ImageDataset
    from spft.data.transforms import ImageTransform

    files = _images(tmp_path)
    table = LabelTable(["a"], [files["good"], files["cut"]], ["g", "c"], ["g", "c"], ["test", "test"],
                       np.zeros((2, 1), np.float32))
    ds = ImageDataset(table, "test", ImageTransform(16, (0.5,) * 3, (0.5,) * 3))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(BadImageError) as err:
        next(iter(loader))
    message = str(err.value)
    assert "cut.png" in message and "\n" not in message and "Traceback" not in message
    assert "DataLoader worker" in message


def _csv_cfg(tmp_path, *extra):
    return load_config(None, [f"data.csv={tmp_path / 'labels.csv'}", "data.label_columns=[a]",
                              "model.config={model_type: dinov2}", *extra])


def test_csv_files_that_cannot_be_read(tmp_path):
    from spft.data.csv_dataset import read_csv_table

    (tmp_path / "labels.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"labels\.csv: the file is empty"):
        read_csv_table(_csv_cfg(tmp_path).data, 0)
    (tmp_path / "labels.csv").write_bytes("image,a\nélan.png,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"labels\.csv: not UTF-8 text \(byte 0xe9 on line 2\)"):
        read_csv_table(_csv_cfg(tmp_path).data, 0)
    (tmp_path / "labels.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"labels\.csv: no header row"):
        read_csv_table(_csv_cfg(tmp_path).data, 0)


@pytest.mark.parametrize("value", [0, -5])
def test_image_size_zero_or_negative_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match="'data.image_size'"):
        load_config("configs/phantom_cxr.yaml", [f"data.image_size={value}"])


def test_paths_leaving_the_root_are_refused_unless_allowed(tmp_path):
    from spft.data.csv_dataset import read_csv_table

    (tmp_path / "root").mkdir()
    outside = tmp_path / "secret.png"
    rows = [{"image": f"img{i}.png", "a": i % 2} for i in range(6)] + [{"image": "../secret.png", "a": 1}]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    cfg = _csv_cfg(tmp_path, f"data.root={tmp_path / 'root'}")
    with pytest.raises(DataError, match=r"row 8 column 'image': image path '\.\./secret\.png' leaves data\.root"):
        read_csv_table(cfg.data, 0, check=False)
    rows[-1]["image"] = str(outside)  # absolute, elsewhere
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match="data.allow_outside_root"):
        read_csv_table(cfg.data, 0, check=False)
    allowed = _csv_cfg(tmp_path, f"data.root={tmp_path / 'root'}", "data.allow_outside_root=true")
    assert str(outside) in read_csv_table(allowed.data, 0, check=False).paths
    rows[-1]["image"] = str(tmp_path / "root" / "sub" / "x.png")  # absolute but below the root: fine
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    assert len(read_csv_table(cfg.data, 0, check=False).paths) == 7


def test_links_under_the_root_leading_outside_are_refused_unless_followed_on_purpose(tmp_path):
    from spft.data.csv_dataset import read_csv_table

    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "linked_dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "passwd.png").symlink_to("/etc/passwd")
    (root / "inside.png").symlink_to(root / "real" / "x.png")  # a link that stays below the root: fine
    for image, refused in (("linked_dir/a.png", True), ("passwd.png", True), ("inside.png", False)):
        rows = [{"image": f"real/img{i}.png", "a": i % 2} for i in range(6)] + [{"image": image, "a": 1}]
        pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
        cfg = _csv_cfg(tmp_path, f"data.root={root}")
        if refused:
            with pytest.raises(DataError, match=rf"row 8 column 'image': image path '{image}' is a link leading "
                                                r"outside data.root=.*data.follow_links=true"):
                read_csv_table(cfg.data, 0, check=False)
            followed = _csv_cfg(tmp_path, f"data.root={root}", "data.follow_links=true")
            assert len(read_csv_table(followed.data, 0, check=False).paths) == 7
        else:
            assert len(read_csv_table(cfg.data, 0, check=False).paths) == 7
    # a data.root that is itself a link (e.g. to a big disk) is fine: the rule is about what lies below it
    (tmp_path / "root_link").symlink_to(root, target_is_directory=True)
    rows[-1]["image"] = "real/y.png"
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    via_link = _csv_cfg(tmp_path, f"data.root={tmp_path / 'root_link'}")
    assert len(read_csv_table(via_link.data, 0, check=False).paths) == 7


def test_data_check_scan_survives_a_decompression_bomb(tmp_path):
    from spft.data.check import scan_images

    files = _images(tmp_path)
    bad = scan_images([files["good"], files["bomb"]], progress=False)  # crashed on DecompressionBombError before
    assert list(bad) == [files["bomb"]] and "pixels" in bad[files["bomb"]]


@pytest.mark.slow
def test_train_stops_before_training_or_skips_and_records(spft_cache, tmp_path):
    folder = tmp_path / "data"
    from spft.data.registry import ensure_phantoms

    src = ensure_phantoms(load_config("configs/phantom_cxr.yaml", tiny_overrides(tmp_path, n_images=160))
                          .data.phantom)
    rows = pd.read_csv(src / "labels.csv")
    rows["image"] = [str(src / p) for p in rows["image"]]
    folder.mkdir()
    broken = folder / "broken.png"
    broken.write_bytes((src / pd.read_csv(src / "labels.csv")["image"][0]).read_bytes()[:200])  # truncated
    rows.loc[0, "image"] = str(broken)
    rows.to_csv(tmp_path / "labels.csv", index=False)
    data = ["data.name=csv", f"data.csv={tmp_path / 'labels.csv'}", "data.allow_outside_root=true",
            "data.split_column=split", "data.patient_column=patient_id", "data.label_columns=[Effusion, Nodule]",
            "recipe.class_weights.heuristic={}"]
    proc = run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(tmp_path / "stop", n_images=160, epochs=2,
                                                                        phantom=False),
                   *data, check=False)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("spft train: error:")]
    assert len(error_lines) == 1 and str(broken) in error_lines[0] and "truncated PNG" in error_lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "stop" / "history.csv").exists()

    run_dir = tmp_path / "skip"
    run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(run_dir, n_images=160, epochs=2, phantom=False), *data,
            "data.on_bad_image=skip")
    with open(run_dir / "skipped_images.csv") as fh:
        skipped = list(csv.DictReader(fh))
    assert [r["path"] for r in skipped] == [str(broken)] and skipped[0]["split"] == rows.loc[0, "split"]
    counts = json.loads((run_dir / "data.json").read_text())["n_images"]
    split = rows.loc[0, "split"]
    assert counts[split] == int((rows["split"] == split).sum()) - 1  # left out of its split

"""Detection on your own data (data.name yolo, coco, csv) through the real CLI: tiny datasets in the real layouts
(an Ultralytics folder, COCO JSON per split, a CSV of boxes with a background row and a DICOM image), `spft data
check` counts and problem lines, one-line refusals of bad input, one short `spft train` + `spft evaluate` on the CSV
(converted once into the cache, reused by the second command) and one short `spft train` on each other format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image, ImageDraw
from test_dicom import write_dicom

CONFIG = "configs/phantom_detect_yolov8.yaml"
CLASSES = ["mass", "nodule"]
SIZE = 64


def draw(path: Path, seed: int) -> list[tuple[int, float, float, float, float]]:
    """A grey image with one or two bright (mass) / dark (nodule) squares; returns its pixel boxes."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (SIZE, SIZE), 110)
    pen = ImageDraw.Draw(img)
    boxes = []
    for _ in range(1 + seed % 2):
        cls = int(rng.integers(2))
        s = int(rng.integers(12, 22))
        x, y = (int(v) for v in rng.integers(2, SIZE - s - 2, size=2))
        pen.rectangle([x, y, x + s - 1, y + s - 1], fill=230 if cls == 0 else 20)
        boxes.append((cls, float(x), float(y), float(x + s), float(y + s)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return boxes


def split_of(i: int) -> str:
    return "val" if i % 5 == 3 else "test" if i % 5 == 4 else "train"


def make_yolo(root: Path, n: int = 10, test: bool = False) -> Path:
    for i in range(n):
        split = split_of(i)
        if split == "test" and not test:
            split = "train"
        boxes = draw(root / "images" / split / f"{i:03d}.png", i)
        lines = [f"{c} {(x0 + x1) / 2 / SIZE:.6f} {(y0 + y1) / 2 / SIZE:.6f} {(x1 - x0) / SIZE:.6f} "
                 f"{(y1 - y0) / SIZE:.6f}" for c, x0, y0, x1, y1 in boxes]
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split / f"{i:03d}.txt").write_text("".join(line + "\n" for line in lines))
    entries = "train: images/train\nval: images/val\n" + ("test: images/test\n" if test else "")
    (root / "dataset.yaml").write_text(f"path: .\n{entries}names:\n  0: mass\n  1: nodule\n")
    return root


def make_coco(root: Path, n: int = 10) -> dict[str, Path]:
    specs = {s: {"images": [], "annotations": [], "categories": [{"id": 7, "name": "nodule"},
                                                                 {"id": 3, "name": "mass"}]} for s in
             ("train", "val", "test")}
    for i in range(n):
        boxes = draw(root / "pics" / f"{i:03d}.png", i)
        spec = specs[split_of(i)]
        spec["images"].append({"id": i, "file_name": f"pics/{i:03d}.png", "width": SIZE, "height": SIZE})
        for c, x0, y0, x1, y1 in boxes:  # class 0 = mass = category 3 (the smaller id)
            spec["annotations"].append({"id": 100 * i + len(spec["annotations"]), "image_id": i,
                                        "category_id": 3 if c == 0 else 7, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                        "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    out = {}
    for split, spec in specs.items():
        out[split] = root / f"{split}.json"
        out[split].write_text(json.dumps(spec))
    return out


def make_csv(root: Path, n: int = 10, split_column: bool = False) -> Path:
    rows = ["image,patient,class,x_min,y_min,x_max,y_max" + (",split" if split_column else "")]
    for i in range(n):
        boxes = draw(root / "scans" / f"{i:03d}.png", i)
        extra = f",{split_of(i)}" if split_column else ""
        patient = f"p{i}" if split_column else f"p{i // 2}"
        rows += [f"scans/{i:03d}.png,{patient},{CLASSES[c]},{x0:g},{y0:g},{x1:g},{y1:g}{extra}"
                 for c, x0, y0, x1, y1 in boxes]
    # an image without findings (blank class and box) and a DICOM with one box
    Image.new("L", (SIZE, SIZE), 110).save(root / "scans" / "clear.png")
    rows.append("scans/clear.png,p90,,,,," + (",train" if split_column else ""))
    pixels = np.full((SIZE, SIZE), 900, dtype=np.uint16)
    pixels[10:30, 20:40] = 4000
    write_dicom(root / "scans" / "ct.dcm", pixels)
    rows.append("scans/ct.dcm,p91,mass,20,10,40,30" + (",train" if split_column else ""))
    csv = root / "boxes.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def check(*overrides: str, ok: bool = True) -> dict:
    proc = run_cli("data", "check", CONFIG, *overrides, "--json", check=False)
    assert proc.returncode == (0 if ok else 1), proc.stdout + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def refused(*args: str) -> str:
    """The one line a refused command prints (exit code 2, no traceback)."""
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def boxes_in(report: dict, split: str) -> int:
    return sum(report["boxes"][split].values())


def test_yolo_folder_check(tmp_path, spft_cache):
    root = make_yolo(tmp_path / "ds")
    r = check("data.name=yolo", f"data.root={root}")
    assert r["classes"] == CLASSES and r["ok"] and r["test_is_val"]
    # what training hands Ultralytics: lists of the user's own files (nothing copied), test = val
    from spft.config import load_config
    from spft.data.yolo_layout import read_dataset, split_image_list
    from spft.tasks.detection.dataset import dataset_yaml_for

    data_yaml = dataset_yaml_for(load_config(CONFIG, ["data.name=yolo", f"data.root={root}"]))
    assert read_dataset(data_yaml)["test_is_val"] and data_yaml.parent.parent == spft_cache / "detect"
    assert split_image_list(data_yaml, "val") == sorted((root / "images" / "val").glob("*.png"))
    assert split_image_list(data_yaml, "test") == split_image_list(data_yaml, "val")
    n_labels = sum(len(p.read_text().splitlines()) for p in (root / "labels").rglob("*.txt"))
    assert boxes_in(r, "train") + boxes_in(r, "val") == n_labels
    assert r["splits"]["val"]["n_images"] == 2 and r["splits"]["train"]["n_images"] == 8
    assert any("no test split" in w for w in r["warnings"])
    # a class id beyond names, a zero-size box and a malformed line: one problem line each, every offender in --json
    (root / "labels" / "train" / "000.txt").write_text("5 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.0 0.2\nnodule 1 2 3 4\n")
    r = check("data.name=yolo", f"data.root={root}", ok=False)
    assert set(r["box_problems"]) == {"unknown_class", "empty_box", "bad_label"}
    assert "1 box(es) of a class not in the class list" in r["problems"]
    assert "class id 5 is not one of 0..1" in r["box_problems"]["unknown_class"][0]
    text = run_cli("data", "check", CONFIG, "data.name=yolo", f"data.root={root}", check=False).stdout
    assert "boxes" in text and "images without boxes" in text and "result: FAILED" in text


def test_coco_check(tmp_path, spft_cache):
    files = make_coco(tmp_path)
    keys = [f"data.{s}_json={p}" for s, p in files.items()]
    r = check("data.name=coco", *keys, f"data.root={tmp_path}")
    assert r["classes"] == CLASSES and r["ok"] and not r["test_is_val"]  # sorted by category id: 3 mass, 7 nodule
    for split, path in files.items():
        spec = json.loads(path.read_text())
        assert r["splits"][split]["n_images"] == len(spec["images"])
        assert boxes_in(r, split) == len(spec["annotations"])
        n_mass = sum(a["category_id"] == 3 for a in spec["annotations"])
        assert r["boxes"][split]["mass"] == n_mass
    # an unknown category and a box outside the image
    spec = json.loads(files["train"].read_text())
    spec["annotations"][0]["category_id"] = 99
    spec["annotations"][1]["bbox"] = [70, 70, 5, 5]
    files["train"].write_text(json.dumps(spec))
    r = check("data.name=coco", *keys, f"data.root={tmp_path}", ok=False)
    assert "category_id 99 is not in categories" in r["box_problems"]["unknown_class"][0]
    assert "outside the 64x64 image" in r["box_problems"]["outside_image"][0]


def test_csv_check_counts_and_problems(tmp_path, spft_cache):
    csv = make_csv(tmp_path, split_column=True)
    r = check("data.name=csv", f"data.csv={csv}", "data.split_column=split", "data.patient_column=patient")
    assert r["ok"] and r["classes"] == CLASSES, r["problems"]
    assert r["splits"]["train"]["n_images"] == 6 + 2  # six drawn + the background image + the DICOM
    assert r["images_without_boxes"]["train"] == 1 and r["boxes"]["train"]["mass"] >= 1
    # a patient in two splits, a class outside data.classes, x_max <= x_min, a box past the edge (clipped: warning)
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace("p0,", "p3,")  # image 000 (train) now belongs to p3, whose 003 is in val
    lines.append("scans/000.png,p3,Mass,5,5,9,9,train")
    lines.append("scans/001.png,p1,mass,30,5,20,9,train")
    lines.append("scans/002.png,p2,nodule,50,50,70,60,train")
    csv.write_text("\n".join(lines) + "\n")
    r = check("data.name=csv", f"data.csv={csv}", "data.split_column=split", "data.patient_column=patient",
              "data.classes=[mass,nodule]", ok=False)
    assert r["leaked_groups"] == ["p3"]
    assert "class 'Mass' is not in the class list" in r["box_problems"]["unknown_class"][0]
    assert "x_max 20 <= x_min 30" in r["box_problems"]["empty_box"][0]
    assert any("clipped" in w for w in r["warnings"])
    assert {"1 patient(s) in more than one split (leakage)", "1 box(es) of a class not in the class list"} \
        <= set(r["problems"])


def test_bad_input_one_line(tmp_path, spft_cache):
    csv = make_csv(tmp_path)
    base = ("data", "check", CONFIG, "data.name=csv", f"data.csv={csv}")
    text = csv.read_text()
    assert "column 'xmin' (from data.box_columns[0]) not found" in refused(
        *base, "data.box_columns=[xmin,y_min,x_max,y_max]")
    csv.write_text(text.replace("scans/001.png,p0,nodule,", "scans/001.png,p0,nodule,1O.", 1)
                   .replace("scans/001.png,p0,mass,", "scans/001.png,p0,mass,1O.", 1))
    assert "row 3 column 'x_min': '1O." in refused(*base)
    csv.write_text(text.replace("scans/clear.png,p90,,,,,", "scans/clear.png,p90,mass,,,,"))
    assert "a box needs a class ('class') and all of x_min, y_min, x_max, y_max" in refused(*base)
    csv.write_text(text.replace("image,patient,class,x_min,y_min,x_max,y_max",
                                "image,patient,class,x_min,y_min,x_max,y_max,split").replace("\n", ",train\n")
                   .replace("scans/000.png,p0,mass", "scans/000.png,p0,mass").replace("p91,mass,20,10,40,30,train",
                                                                                      "p91,mass,20,10,40,30,trian"))
    assert "split 'trian' is not one of train, val, test" in refused(*base, "data.split_column=split")
    # training refuses what the check lists: x_max <= x_min, a missing image
    train = ("train", CONFIG, "data.name=csv", f"data.csv={csv}", f"run.dir={tmp_path / 'run'}")
    csv.write_text(text.replace("p91,mass,20,10,40,30", "p91,mass,40,10,20,30"))
    assert refused(*train).endswith("x_max 20 <= x_min 40 (expected x_min < x_max); `spft data check CONFIG` "
                                    "lists every problem")
    (tmp_path / "scans" / "clear.png").unlink()
    csv.write_text(text)
    line = refused(*train)
    assert "row" in line and "clear.png not found" in line
    assert "'data.csv' must be set" in refused("data", "check", CONFIG, "data.name=csv")
    assert "'data.root' must be set when data.name is yolo" in refused("data", "check", CONFIG, "data.name=yolo")


@pytest.mark.slow
def test_csv_train_and_evaluate(tmp_path, spft_cache):
    csv = make_csv(tmp_path, n=30)
    run_dir = tmp_path / "run"
    data = ["data.name=csv", f"data.csv={csv}", "data.patient_column=patient", "data.num_workers=0"]
    proc = run_cli("train", CONFIG, *data, "model.name=yolov8n.yaml", "detection.imgsz=64", "detection.mosaic=0.0",
                   "detection.figures=0", "trainer.max_epochs=1", "trainer.batch_size=8", f"run.dir={run_dir}")
    assert "data.phantom" in proc.stderr  # switching data.name dropped the config file's phantom keys, saying so
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["split"] == "test" and m["n"] > 0 and set(m["per_class_ap50"]) == set(CLASSES)
    data_yaml = Path(json.loads((run_dir / "data.json").read_text())["dataset_yaml"])
    assert data_yaml.parent.parent == spft_cache / "detect" and data_yaml.parent.name.startswith("csv-")
    layout = data_yaml.parent
    assert list((layout / "images").rglob("ct.png")) and not list((layout / "images").rglob("*.dcm"))
    linked = next((layout / "images").rglob("000.png"))
    assert linked.is_symlink()
    # the same data again: the converted copy is reused (nothing rewritten)
    before = data_yaml.stat().st_mtime_ns
    ev = json.loads(run_cli("evaluate", str(run_dir), "--json").stdout)
    assert ev["n"] == m["n"] and data_yaml.stat().st_mtime_ns == before
    # other data of the same classes: a COCO test file alone (no train/val needed to evaluate)
    files = make_coco(tmp_path / "coco")
    ev = json.loads(run_cli("evaluate", str(run_dir), "data.name=coco", f"data.test_json={files['test']}",
                            f"data.root={tmp_path / 'coco'}", "--json").stdout)
    assert ev["n"] == len(json.loads(files["test"].read_text())["images"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_yolo_and_coco_train(tmp_path, spft_cache, fmt):
    """Each format trains through the CLI (1 epoch of 30 tiny images): the run's classes come from the data (the
    YOLO folder's names; the COCO categories in sorted-id order) and the test split is scored."""
    if fmt == "yolo":
        data = ["data.name=yolo", f"data.root={make_yolo(tmp_path / 'y', n=30, test=True)}"]
    else:
        files = make_coco(tmp_path / "c", n=30)
        data = ["data.name=coco", f"data.root={tmp_path / 'c'}", *(f"data.{s}_json={files[s]}" for s in files)]
    run_dir = tmp_path / "run"
    run_cli("train", CONFIG, *data, "data.num_workers=0", "model.name=yolov8n.yaml", "detection.imgsz=64",
            "detection.mosaic=0.0", "detection.figures=0", "trainer.max_epochs=1", "trainer.batch_size=8",
            f"run.dir={run_dir}")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["split"] == "test" and m["n"] == 6 and list(m["per_class_ap50"]) == ["mass", "nodule"], m


def test_prepared_phantom_check(tmp_path, spft_cache):
    """The prepared layouts (phantoms here; VinDr-CXR, TBX-11K alike) get the same box counts and problem lines."""
    r = check("data.phantom.n_images=40", "data.phantom.image_size=64")
    assert r["ok"] and r["group_kind"] == "file name" and not r["box_problems"]
    assert sum(boxes_in(r, s) for s in ("train", "val", "test")) > 0
    assert sum(r["images_without_boxes"].values()) + sum(r["splits"][s]["n_images"] for s in r["splits"]) > 0

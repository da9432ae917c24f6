"""``spft predict`` on a tiny detection run (YOLOv8n, 64 px phantoms, trained once for the module).

What is checked: the boxes of every test image equal Ultralytics' own ``model.predict`` of the same file with the
run's settings (imgsz, conf, default NMS), in the original image's pixels; the COCO file mirrors the table; a 16-bit
grey PNG of the same pixels gives the same boxes; missing and undecodable inputs are listed on stderr and in the
sidecar, the others still predicted, exit status 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli
from PIL import Image

# Not imported here: only subprocesses import Ultralytics (it patches PIL.Image.open process-wide).
pytestmark = pytest.mark.slow

REFERENCE = """
import json, sys
from ultralytics import YOLO
model = YOLO(sys.argv[1])
out = {}
for path in sys.argv[4:]:
    r = model.predict(path, imgsz=int(sys.argv[2]), conf=float(sys.argv[3]), device="cpu", verbose=False)[0]
    out[path] = {"xyxy": r.boxes.xyxy.tolist(), "cls": r.boxes.cls.int().tolist(), "conf": r.boxes.conf.tolist(),
                 "names": r.names}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def run(spft_cache, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("predict_det") / "run"
    run_cli("train", "configs/phantom_detect_yolov8.yaml", "model.name=yolov8n.yaml", "data.phantom.n_images=40",
            "data.phantom.image_size=64", "data.num_workers=0", "detection.imgsz=64", "detection.mosaic=0.0",
            "detection.figures=0", "recipe.stage1_epochs=1", "trainer.max_epochs=1", "trainer.batch_size=8",
            f"run.dir={run_dir}")
    return run_dir


def _test_images(run: Path) -> list[Path]:
    dataset = Path(json.loads((run / "data.json").read_text())["dataset_yaml"]).parent
    return sorted((dataset / "images" / "test").glob("*.png"))


def test_boxes_equal_ultralytics_and_failures_listed(run, tmp_path):
    images = _test_images(run)
    assert images
    grey16 = tmp_path / "grey16.png"
    pixels = np.asarray(Image.open(images[0]).convert("L")).astype(np.uint16) * 257
    Image.fromarray(pixels).save(grey16)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "boxes.csv"
    proc = run_cli("predict", str(run), *map(str, images), str(grey16), str(tmp_path / "missing.png"), str(corrupt),
                   "--out", str(out), "--device", "cpu", "--batch-size", "2", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "2 input(s) could not be predicted" in proc.stderr
    failed = pd.read_csv(tmp_path / "boxes.failed.csv")
    assert sorted(failed["path"]) == sorted([str(tmp_path / "missing.png"), str(corrupt)])

    table = pd.read_csv(out)
    assert list(table.columns) == ["id", "class", "confidence", "x1", "y1", "x2", "y2"]
    ref = json.loads(subprocess.run(
        [sys.executable, "-c", REFERENCE, str(run / "checkpoints" / "best.pt"), "64", "0.001", *map(str, images)],
        capture_output=True, text=True, check=True, cwd=REPO).stdout)
    n_boxes = 0
    for path in images:
        mine = table[table["id"] == str(path)]
        theirs = ref[str(path)]
        assert len(mine) == len(theirs["xyxy"])
        n_boxes += len(mine)
        names = theirs["names"]
        assert list(mine["class"]) == [names[str(c)] for c in theirs["cls"]]
        np.testing.assert_allclose(mine["confidence"], theirs["conf"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(mine[["x1", "y1", "x2", "y2"]].to_numpy(),
                                   np.asarray(theirs["xyxy"]).reshape(-1, 4), atol=1e-3)
    assert n_boxes > 0
    same = table[table["id"] == str(grey16)]
    first = table[table["id"] == str(images[0])]
    np.testing.assert_allclose(same[["confidence", "x1", "y1", "x2", "y2"]].to_numpy(),
                               first[["confidence", "x1", "y1", "x2", "y2"]].to_numpy(), atol=1e-6)

    coco = json.loads((tmp_path / "boxes.coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == [*map(str, images), str(grey16)]
    assert all(im["width"] == 64 and im["height"] == 64 for im in coco["images"])
    assert len(coco["annotations"]) == len(table)
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    ann, row = coco["annotations"][0], table.iloc[0]
    assert categories[ann["category_id"]] == row["class"] and ann["score"] == pytest.approx(row["confidence"])
    assert ann["bbox"] == pytest.approx([row["x1"], row["y1"], row["x2"] - row["x1"], row["y2"] - row["y1"]])


PARITY = """
import json, sys
import numpy as np, onnxruntime as ort, torch
from safetensors.torch import load_file
from ultralytics import YOLO
net = YOLO(sys.argv[1]).model.float().eval()
folder = sys.argv[2]
weights = load_file(folder + "/model.safetensors")
sd = net.state_dict()
assert weights.keys() == sd.keys() and all(torch.equal(weights[k], sd[k].float()) for k in sd)
x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    out = net(x)
ref = (out[0] if isinstance(out, (list, tuple)) else out).numpy()
sess = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
print(json.dumps({"shape": list(got.shape), "ref_shape": list(ref.shape), "diff": float(np.abs(got - ref).max()),
                  "scale": float(np.abs(ref).max())}))
"""


def test_export_safetensors_and_onnx_parity(run, tmp_path):
    """`spft export --format onnx`: the safetensors weights equal best.pt's model state_dict; the ONNX model (dynamic
    batch: 3 images) gives Ultralytics' raw head output (before NMS) within 1e-4 of PyTorch on CPU."""
    folder = tmp_path / "export"
    run_cli("export", str(run), "--out", str(folder), "--format", "onnx", env={"YOLO_OFFLINE": "1"})
    config = json.loads((folder / "config.json").read_text())["spft"]
    assert config["task"] == "detection" and config["export"]["onnx"]["opset"] == 17 and config["imgsz"] == 64
    assert (folder / "MODEL_CARD.md").is_file() and not list((run / "checkpoints").glob("*.onnx"))
    proc = subprocess.run([sys.executable, "-c", PARITY, str(run / "checkpoints" / "best.pt"), str(folder)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == result["ref_shape"] and result["shape"][0] == 3
    assert result["diff"] <= 1e-4 * max(1.0, result["scale"]), result
    refused = run_cli("export", str(run), "--out", str(tmp_path / "ts"), "--format", "torchscript", check=False)
    assert refused.returncode == 2 and len([s for s in refused.stderr.splitlines() if s.strip()]) == 1

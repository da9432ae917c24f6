"""Predicted vs ground-truth boxes on a few validation images (paper Fig. 5), written into the run directory.

Ground truth in green, predictions in red with class and confidence; one PNG per image (``figures/val_<id>.png``).
Plain PIL drawing on purpose: no fonts or assets to download, so it works offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, ImageDraw

from spft.data.yolo_layout import label_path, read_dataset, split_image_list

log = logging.getLogger(__name__)


def _ground_truth(image: Path, width: int, height: int) -> list[tuple[int, float, float, float, float]]:
    lbl = label_path(image)
    boxes = []
    if lbl.is_file():
        for line in lbl.read_text().splitlines():
            if line.strip():
                c, cx, cy, w, h = line.split()
                cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
                boxes.append((int(c), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes


def draw_predictions(weights: Path, cfg, dataset_yaml: Path, out_dir: Path, n_images: int,
                     conf: float = 0.25) -> list[Path]:
    """Draw ground truth and predictions of ``weights`` on the first ``n_images`` validation images with boxes."""
    from ultralytics import RTDETR, YOLO

    from spft.devices import eval_device, ultralytics_device
    from spft.tasks.detection import restore_pil_open
    from spft.tasks.detection.evaluate import is_rtdetr

    restore_pil_open()
    names = read_dataset(dataset_yaml)["names"]
    images = [p for p in split_image_list(dataset_yaml, "val") if label_path(p).is_file()
              and label_path(p).stat().st_size > 0][:n_images]
    if not images:
        return []
    model = (RTDETR if is_rtdetr(cfg) else YOLO)(str(weights))
    results = model.predict([str(p) for p in images], imgsz=cfg.detection.imgsz, conf=conf, verbose=False,
                            device=ultralytics_device(eval_device(cfg)))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image, result in zip(images, results):
        canvas = Image.open(image).convert("RGB")
        gt = _ground_truth(image, *canvas.size)
        k = max(1, 512 // max(canvas.size))  # small images are enlarged so the labels stay readable
        canvas = canvas.resize((canvas.width * k, canvas.height * k), Image.NEAREST)
        draw = ImageDraw.Draw(canvas)
        for c, x0, y0, x1, y1 in gt:
            draw.rectangle([x0 * k, y0 * k, x1 * k, y1 * k], outline=(0, 200, 0))
            draw.text((x0 * k + 1, y0 * k + 1), str(names[c]), fill=(0, 200, 0))
        for box, c, p in zip(result.boxes.xyxy.tolist(), result.boxes.cls.tolist(), result.boxes.conf.tolist()):
            box = [v * k for v in box]
            draw.rectangle(box, outline=(220, 0, 0))
            draw.text((box[0] + 1, box[3] - 10), f"{names[int(c)]} {p:.2f}", fill=(220, 0, 0))
        target = out_dir / f"val_{image.stem}.png"
        canvas.save(target)
        written.append(target)
    log.info("wrote %d prediction figures to %s", len(written), out_dir)
    return written

"""Detection prediction: a finished detection run's best (EMA) Ultralytics weights applied to new images.

``predict(run_dir, inputs, ...) -> DetectionPredictions`` is what ``spft predict`` calls through
:mod:`spft.tasks.registry`; :func:`load` gives the :class:`Detector` that ``spft.load`` returns. The weights are
``checkpoints/best.pt`` (``last.pt`` on request, or when best is damaged), verified against the digest spft recorded
when it wrote them before Ultralytics unpickles them (:func:`spft.experiments.checkpoints.newest_intact`), as
``spft evaluate`` does. The detector runs with the run's settings: ``detection.imgsz``, ``detection.conf`` (the
confidence threshold evaluation uses) and Ultralytics' NMS defaults that its validation used (``iou``, ``max_det``,
``agnostic_nms`` of ``ultralytics/cfg/default.yaml``), so the boxes of an image are those of Ultralytics' own
``model.predict(image, imgsz=, conf=)``.

Images: Ultralytics trained on what ``cv2.imread`` gives for the prepared dataset's 8-bit files (3 channels, BGR;
a grey PNG becomes three equal channels). Here every input is read by :func:`spft.data.io.load_image` (so 16-bit
PNGs are scaled 0..65535 -> 0..255 and DICOM goes through the VOI LUT, as ``spft prepare vindr-cxr`` writes them),
as RGB, and handed to Ultralytics as that BGR array. For a ``vindr_cxr`` run, an image with a long side over
``detection.long_side`` is first resized (grey, bilinear) exactly as preparation resized the training images; its
boxes are scaled back. Boxes are always in the original image's pixels.

Output (:meth:`DetectionPredictions.write`): the table (one row per box: ``id``, ``class``, ``confidence``, ``x1``,
``y1``, ``x2``, ``y2``; an image without a box above ``conf`` has no row) and ``<out stem>.coco.json`` (COCO
detection results: ``images`` with every predicted image, ``annotations`` with ``bbox [x, y, w, h]`` and ``score``,
``categories`` with id = class index + 1). Unreadable inputs are failures, listed, never skipped silently.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spft.data.inputs import Failure, InputImage, collect_inputs
from spft.errors import ConfigError, DataError, MissingFileError
from spft.tasks.common.prediction import Predictions, batch_loop

log = logging.getLogger(__name__)

COLUMNS = ["id", "class", "confidence", "x1", "y1", "x2", "y2"]


@dataclass
class DetectionPredictions(Predictions):
    """The box table plus what the COCO file needs: every predicted image's size and the classes."""

    images: list[dict] = field(default_factory=list)  # {"id", "width", "height"} per predicted image, in order
    classes: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def coco_path(self, out: str | Path) -> Path:
        out = Path(out)
        return out.with_name((out.name[: -len(out.suffix)] if out.suffix else out.name) + ".coco.json")

    def coco(self) -> dict:
        """COCO-style detection results (``bbox``: ``[x, y, width, height]`` in the image's pixels)."""
        image_ids = {im["id"]: k + 1 for k, im in enumerate(self.images)}
        category = {c: j + 1 for j, c in enumerate(self.classes)}
        annotations = []
        for n, row in enumerate(self.table.to_dict("records"), start=1):
            x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            annotations.append({"id": n, "image_id": image_ids[row["id"]], "category_id": category[row["class"]],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "score": float(row["confidence"]), "iscrowd": 0})
        return {"info": {"description": f"spft predict {self.source}"},
                "images": [{"id": image_ids[im["id"]], "file_name": im["id"], "width": im["width"],
                            "height": im["height"]} for im in self.images],
                "annotations": annotations,
                "categories": [{"id": category[c], "name": c} for c in self.classes]}

    def write(self, out: str | Path) -> tuple[Path, Path | None]:
        from spft.atomic import atomic_write_text

        table_file, failed_file = super().write(out)
        atomic_write_text(self.coco_path(table_file), json.dumps(self.coco(), indent=1) + "\n")
        log.info("COCO results -> %s", self.coco_path(table_file))
        return table_file, failed_file


def nms_settings() -> dict:
    """Ultralytics' NMS defaults (what the run's validation used: spft passes none of them)."""
    from ultralytics.cfg import DEFAULT_CFG

    return {"iou": float(DEFAULT_CFG.iou), "max_det": int(DEFAULT_CFG.max_det),
            "agnostic_nms": bool(DEFAULT_CFG.agnostic_nms)}


class Detector:
    """A finished detection run ready to predict (what ``spft.load`` returns for a detection run).

    ``classes``, ``settings`` (``imgsz``, ``conf``, ``iou``, ``max_det``, ``agnostic_nms`` passed to Ultralytics),
    ``weights`` (the verified ``.pt``), ``model`` (the Ultralytics ``YOLO`` / ``RTDETR``), ``device``.
    """

    task = "detection"

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto"):
        from spft.devices import ultralytics_device
        from spft.experiments.checkpoints import newest_intact
        from spft.experiments.rundir import load_run_config
        from spft.tasks.detection.evaluate import is_rtdetr

        run_dir = Path(run_dir).expanduser()
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir}: detection predicts from a run directory (an export folder's model.onnx / "
                              "model.safetensors are for Ultralytics or onnxruntime)")
        if checkpoint not in ("best", "last"):
            raise ConfigError(f"--checkpoint: expected best or last, got {checkpoint!r}")
        cfg = load_run_config(run_dir)
        if cfg.task != "detection":
            raise ConfigError(f"{run_dir} is a {cfg.task} run, not a detection run")
        other = "last" if checkpoint == "best" else "best"
        # Ultralytics unpickles .pt files: only one whose digest spft recorded when writing it is handed over
        weights = newest_intact(run_dir / "checkpoints", (f"{checkpoint}.pt", f"{other}.pt"), loadable=False)
        if weights is None:
            raise MissingFileError(f"{run_dir / 'checkpoints'} holds no .pt checkpoint (has the run finished its "
                                   "first epoch?)")
        from ultralytics import RTDETR, YOLO

        from spft.tasks.detection import restore_pil_open

        restore_pil_open()
        self.cfg = cfg
        self.source = run_dir
        self.name = run_dir.resolve().name
        self.weights = weights
        self.model = (RTDETR if is_rtdetr(cfg) else YOLO)(str(weights))
        names = self.model.names
        self.classes = [str(names[i]) for i in sorted(names)]
        self.device = ultralytics_device(device)
        self.settings = {"imgsz": int(cfg.detection.imgsz), "conf": float(cfg.detection.conf), **nms_settings()}
        self.long_side = int(cfg.detection.long_side) if cfg.data.name == "vindr_cxr" else None

    def __repr__(self) -> str:
        return (f"Detector({str(self.source)!r}, classes={self.classes}, settings={self.settings}, "
                f"device={self.device!r})")

    def image_array(self, path: str | Path) -> tuple[np.ndarray, int, int]:
        """The BGR uint8 array Ultralytics gets for the image at ``path``, and the original width and height."""
        from PIL import Image

        from spft.data.io import load_image

        if self.long_side is None:
            rgb = load_image(path, color="rgb")
            width, height = rgb.size
        else:  # vindr_cxr: grey, resized as `spft prepare vindr-cxr` wrote the training PNGs
            from spft.data.vindr_cxr import prepared_size

            grey = load_image(path, color="grey")
            width, height = grey.size
            size = prepared_size(width, height, self.long_side)
            rgb = (grey if size == grey.size else grey.resize(size, Image.BILINEAR)).convert("RGB")
        return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]), width, height

    def predict_arrays(self, arrays: list[np.ndarray]) -> list:
        """Ultralytics results of BGR arrays (one call; arrays of one shape letterbox as a single image does)."""
        from spft.tasks.detection.evaluate import _quiet_ultralytics

        with _quiet_ultralytics():  # keep stdout for the output file name
            return self.model.predict(arrays, device=self.device, verbose=False, **self.settings)

    def run(self, items: list[InputImage], batch_size: int = 32, workers: int | None = None, progress: bool = False
            ) -> tuple[pd.DataFrame, list[dict], list[Failure]]:
        """Predict ``items``: (box table, predicted images with their sizes, failures)."""
        rows: list[dict] = []
        images: list[dict] = []

        def forward(entries):
            results = self.predict_arrays([array for _, (array, _, _) in entries])
            for (i, (array, width, height)), result in zip(entries, results):
                item = items[i]
                sx, sy = width / array.shape[1], height / array.shape[0]
                boxes = result.boxes
                xyxy = boxes.xyxy.cpu().double().numpy() * np.array([sx, sy, sx, sy])
                for (x1, y1, x2, y2), c, p in zip(xyxy, boxes.cls.cpu().int().tolist(), boxes.conf.cpu().tolist()):
                    rows.append({"id": item.id, "class": self.classes[c], "confidence": float(p), "x1": float(x1),
                                 "y1": float(y1), "x2": float(x2), "y2": float(y2)})
                images.append({"id": item.id, "width": int(width), "height": int(height)})

        # one shape per call: Ultralytics letterboxes a mixed batch differently
        failures = batch_loop(items, [item.id for item in items], lambda item: self.image_array(item.path), forward,
                              batch_size, workers, progress, same_batch=lambda a, b: a[0].shape == b[0].shape)
        return pd.DataFrame(rows, columns=COLUMNS), images, failures

    def predict(self, inputs, batch_size: int = 32, workers: int | None = None, progress: bool = False
                ) -> pd.DataFrame:
        """The box table for ``inputs`` (a path, folder, glob or CSV, or a list of them: :mod:`spft.data.inputs`);
        inputs that cannot be read are listed in ``table.attrs["failed"]`` as ``(id, error)``, with a warning."""
        inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        result = predict(self, inputs, batch_size, workers=workers, progress=progress)
        if result.failures:
            log.warning("%d input(s) could not be predicted: %s", len(result.failures),
                        "; ".join(f"{f.id}: {f.error}" for f in result.failures[:5]))
        table = result.table
        table.attrs["failed"] = [(f.id, f.error) for f in result.failures]
        table.attrs["images"] = result.images
        return table


def load(source: str | Path, checkpoint: str = "best", device: str = "auto") -> Detector:
    """A detection run directory's detector (``checkpoint``: best / last; the EMA weights Ultralytics saved)."""
    return Detector(source, checkpoint, device)


def predict(model_source, inputs: list[str] | tuple[str, ...], batch_size: int = 32, device: str = "auto",
            checkpoint: str = "best", image_column: str | None = None, root: str | None = None,
            workers: int | None = None, progress: bool = False, items: list[InputImage] | None = None
            ) -> DetectionPredictions:
    """Boxes for every image ``inputs`` names (files, folders, globs, CSVs: :func:`spft.data.inputs.collect_inputs`)
    with ``model_source`` (a detection run directory or a loaded :class:`Detector`); ``items``: already collected
    images instead (segmentation's prompts)."""
    model = model_source if isinstance(model_source, Detector) else load(model_source, checkpoint, device)
    items, failures = (list(items), []) if items is not None else collect_inputs(inputs, image_column, None, root)
    if not items and not failures:
        raise DataError("no inputs given")
    log.info("predicting %d image(s) with %s (%s; imgsz %d, conf %g, iou %g)", len(items), model.weights,
             model.device, model.settings["imgsz"], model.settings["conf"], model.settings["iou"])
    table, images, failed = model.run(items, batch_size, workers, progress)
    return DetectionPredictions(table, failures + failed, str(model.source), model.name, images=images,
                                classes=list(model.classes))


"""``spft export RUN --out DIR`` for a detection (Ultralytics YOLO / RT-DETR) run.

* ``--format safetensors`` (default): ``model.safetensors`` — the state_dict of the model in the run's verified
  ``best.pt`` (the EMA weights Ultralytics saves as ``model``), float32: weights for re-building the Ultralytics
  model from its YAML (``config.json``'s ``spft.model_yaml``: ``DetectionModel(yaml)`` then ``load_state_dict``),
  not a pickle; ``config.json`` (``spft`` block: task, class names, imgsz, conf, NMS settings, model YAML, source);
  ``MODEL_CARD.md``, ``export.json``.
* ``--format onnx``: all of the above plus ``model.onnx`` written by Ultralytics' own exporter
  (``YOLO(best.pt).export(format="onnx", dynamic=True, imgsz=...)``, offline: a copy of the verified ``.pt`` in a
  temporary folder, so nothing is written into the run). Its input is ``images`` ``[batch, 3, H, W]`` (RGB 0..1,
  letterboxed), its output the raw head tensor before NMS, as Ultralytics' PyTorch model returns it.

Ultralytics' own ``.pt`` files are pickles; spft verifies their digest before Ultralytics loads them and never
ships one in an export. ``spft predict DIR`` on a detection export folder is refused in one line (predict from the
run directory, or run ``model.onnx`` with Ultralytics / onnxruntime).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from spft.tasks.common.export_folder import check_format, fresh_folder, staged_folder, task_card, write_json

log = logging.getLogger(__name__)

FORMATS = ("safetensors", "onnx")
ONNX_OPSET = 17
WHY_NOT = {"torchscript": "use --format onnx or safetensors"}


def export_onnx(detector, folder: Path) -> dict:
    """``folder/model.onnx`` through Ultralytics' exporter (dynamic batch), from a copy of the verified weights."""
    from spft.tasks.detection.evaluate import _quiet_ultralytics, is_rtdetr

    with tempfile.TemporaryDirectory(prefix="spft-onnx-") as work:
        weights = Path(work) / "model.pt"
        shutil.copyfile(detector.weights, weights)
        from ultralytics import RTDETR, YOLO

        model = (RTDETR if is_rtdetr(detector.cfg) else YOLO)(str(weights))
        with _quiet_ultralytics():
            made = model.export(format="onnx", dynamic=True, imgsz=detector.settings["imgsz"], opset=ONNX_OPSET,
                                simplify=False, device="cpu", verbose=False)
        shutil.move(str(made), folder / "model.onnx")
    import ultralytics

    return {"file": "model.onnx", "opset": ONNX_OPSET, "exporter": f"ultralytics {ultralytics.__version__}",
            "inputs": {"images": ["batch", 3, "height", "width"]}, "outputs": "raw head output, before NMS",
            "imgsz": detector.settings["imgsz"]}


def export_run(run_dir: str | Path, out: str | Path, format: str = "safetensors",  # noqa: A002
               checkpoint: str = "best") -> Path:
    """Write the export folder ``out`` for the detection run ``run_dir``; returns ``out``."""
    import torch
    from safetensors.torch import save_file

    import spft
    from spft.tasks.detection.predict import Detector

    check_format(format, FORMATS, "detection", WHY_NOT)
    run_dir, out = Path(run_dir), Path(out).expanduser()
    fresh_folder(out)
    detector = Detector(run_dir, checkpoint, device="cpu")
    net = detector.model.model
    state = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
             for k, v in net.state_dict().items()}
    formats: dict = {"safetensors": {"file": "model.safetensors", "layout": "Ultralytics DetectionModel state_dict"}}
    with staged_folder(out) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if format == "onnx":
            formats["onnx"] = export_onnx(detector, tmp)
        config = {"spft": {"task": "detection", "name": detector.name, "classes": detector.classes,
                           "model_yaml": getattr(net, "yaml", None), **detector.settings,
                           "source": {"run_dir": str(run_dir.resolve()), "checkpoint": detector.weights.name,
                                      "model_name": detector.cfg.model.name},
                           "spft_version": spft.__version__, "export": formats}}
        write_json(tmp / "config.json", json.loads(json.dumps(config, default=str)))
        write_json(tmp / "export.json", {"source_run": str(run_dir.resolve()), "checkpoint": checkpoint,
                                         "formats": formats})
        about = ["## Model", "", f"- Ultralytics `{detector.cfg.model.name}`, imgsz {detector.settings['imgsz']}, "
                 f"conf {detector.settings['conf']}, NMS iou {detector.settings['iou']}",
                 f"- Weights: `{detector.weights.name}` of the run (Ultralytics saves its EMA as the model)",
                 f"- Classes: {', '.join(detector.classes)}", ""]
        usage = ["`model.safetensors`: weights for re-building the Ultralytics model from its YAML (`config.json` "
                 "`spft.model_yaml`). `model.onnx` (with `--format onnx`): raw head output before NMS, input "
                 "letterboxed RGB 0..1. Predict with spft from the run directory: "
                 "`spft predict RUN_DIR images/ --out boxes.csv`."]
        (tmp / "MODEL_CARD.md").write_text(task_card(run_dir, detector.name, formats, about, usage,
                                                     ("seed", "detection", "recipe", "optim", "trainer")),
                                           encoding="utf-8")
    log.info("exported %s (%s) to %s", run_dir, ", ".join(formats), out)
    return out

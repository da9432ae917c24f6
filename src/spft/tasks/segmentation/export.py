"""``spft export RUN --out DIR`` for a SAM2 segmentation run: a folder that needs neither Lightning nor the run.

* ``model.safetensors`` + ``config.json`` — the weights the run evaluates with (EMA of ``best.ckpt``) written by
  transformers' own ``Sam2Model.save_pretrained``: transformers' key layout and ``Sam2Config``, so
  ``transformers.Sam2Model.from_pretrained(DIR)`` (or ``AutoModel``) loads the model; ``config.json`` has an
  ``spft`` block besides (task, structures, image size, colour, the preprocessing record, the source run, formats);
* ``preprocessor_config.json`` — the run's preprocessing as transformers' ``Sam2ImageProcessor`` (square resize to
  the model's size, filter, rescale, mean / std). spft itself resizes with PIL (see :mod:`spft.models.sam2`), so
  transformers' processor may differ from spft's pixels by a grey level;
* ``MODEL_CARD.md``, ``export.json``.

``--format onnx`` is refused in one line (:data:`NO_ONNX`): spft has no verified ONNX export of transformers' SAM2
forward (prompt encoder + two-way mask decoder) with a parity test, so it writes none. ``spft predict DIR``
/ ``spft.load(DIR)`` read the folder back (:func:`spft.tasks.segmentation.predict.load_export`) and predict
exactly as from the run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from spft.tasks.common.export_folder import check_format, fresh_folder, staged_folder, task_card, write_json

log = logging.getLogger(__name__)

FORMATS = ("safetensors",)
NO_ONNX = ("spft has no verified ONNX export of SAM2's box-prompted forward; use the safetensors folder with "
           "transformers or spft")
WHY_NOT = {"onnx": NO_ONNX, "torchscript": "use the safetensors folder with transformers or spft"}


def processor_config(prep) -> dict:
    """The run's :class:`~spft.models.encoders.Preprocessing` (a square resize) as a ``Sam2ImageProcessor`` config."""
    from transformers import Sam2ImageProcessor

    height, width = prep.resize_size
    proc = Sam2ImageProcessor(size={"height": int(height), "width": int(width)}, resample=int(prep.interpolation),
                              do_rescale=prep.rescale is not None, image_mean=list(prep.mean),
                              image_std=list(prep.std),
                              rescale_factor=float(prep.rescale) if prep.rescale is not None else 1 / 255)
    return {**proc.to_dict(), "image_processor_type": "Sam2ImageProcessor"}


def _card(run_dir: Path, seg, formats: dict) -> str:
    about = ["## Model", "",
             f"- transformers `Sam2Model` ({seg.cfg.model.name or 'built from model.config, random initialisation'}), "
             f"input {seg.size} x {seg.size}, one box prompt per structure, single-mask output",
             f"- Weights: {seg.weights_kind} of `{seg.checkpoint.name}`",
             f"- Structures: {', '.join(seg.structures)}", "",
             "## Preprocessing", "",
             f"- `{seg.color}` image, square resize to {seg.size} ({seg.preprocessing.interpolation_name}, PIL), "
             f"rescale {seg.preprocessing.rescale}, mean {list(seg.preprocessing.mean)}, "
             f"std {list(seg.preprocessing.std)}",
             "- Boxes are scaled into the input by `S / width`, `S / height`; logits are upsampled to the image's "
             "size and thresholded at 0", ""]
    usage = ["```bash", "spft predict THIS_FOLDER images/ --prompts boxes.csv --out masks.csv", "```", "",
             "`boxes.csv`: id, structure, x1, y1, x2, y2 in the image's pixels (or a detection run's predictions).",
             "The model alone: `transformers.Sam2Model.from_pretrained(THIS_FOLDER)`."]
    return task_card(run_dir, seg.name, formats, about, usage, ("seed", "segmentation", "recipe", "optim", "trainer"))


def export_run(run_dir: str | Path, out: str | Path, format: str = "safetensors",  # noqa: A002
               checkpoint: str = "best") -> Path:
    """Write the export folder ``out`` for the segmentation run ``run_dir``; returns ``out``."""
    import spft
    from spft.tasks.segmentation.predict import Segmenter

    check_format(format, FORMATS, "segmentation", WHY_NOT)
    run_dir, out = Path(run_dir), Path(out).expanduser()
    fresh_folder(out)
    seg = Segmenter(run_dir, checkpoint, device="cpu")
    formats = {"safetensors": {"file": "model.safetensors", "layout": "transformers Sam2Model"}}
    with staged_folder(out) as tmp:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        seg.model.sam.save_pretrained(str(tmp))
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        config["spft"] = {
            "task": "segmentation", "name": seg.name, "structures": seg.structures, "image_size": seg.size,
            "color": seg.color, "preprocessing": seg.preprocessing.record(), "weights": seg.weights_kind,
            "source": {"run_dir": str(run_dir.resolve()), "checkpoint": seg.checkpoint.name,
                       "model_name": seg.cfg.model.name},
            "spft_version": spft.__version__, "export": formats}
        write_json(tmp / "config.json", config)
        write_json(tmp / "preprocessor_config.json", processor_config(seg.preprocessing))
        write_json(tmp / "export.json", {"source_run": str(run_dir.resolve()), "checkpoint": checkpoint,
                                         "formats": formats})
        (tmp / "MODEL_CARD.md").write_text(_card(run_dir, seg, formats), encoding="utf-8")
    log.info("exported %s to %s", run_dir, out)
    return out

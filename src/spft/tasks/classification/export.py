"""``spft export RUN --out DIR``: a classification run as a self-contained model folder.

The folder needs neither Lightning nor the run directory:

* ``model.safetensors`` — the weights the run evaluates with (EMA of ``best.ckpt``): the encoder's own keys at top
  level, so ``transformers.AutoModel.from_pretrained(DIR)`` loads the encoder (it reports the ``spft_head.*`` keys
  as unused — that is the head, which transformers does not know), and the MLP head under ``spft_head.``;
* ``config.json`` — the encoder's transformers config plus an ``spft`` block (task, classes, pooling, head sizes,
  n_prefix, loss, color, the preprocessing record, the source run, the export formats with opset and exporter);
* ``preprocessor_config.json`` — the run's preprocessing as transformers' ``BitImageProcessor``
  (``AutoImageProcessor.from_pretrained(DIR)`` gives the same pixels as spft for 8-bit images);
* ``thresholds.json``, ``calibration.json`` — copied from the run (defaults when the run has none: threshold 0.5,
  temperature 1, marked as defaults);
* ``MODEL_CARD.md`` (:mod:`spft.tasks.classification.model_card`), ``export.json`` (what was written, how);
* ``--format onnx``: ``model.onnx`` (``pixel_values`` -> ``logits``, ``probabilities``; dynamic batch axis;
  temperature and sigmoid/softmax inside); ``--format torchscript``: ``model.torchscript.pt`` (``torch.jit.trace``,
  same inputs and outputs). Both also write everything above.

``spft.load(DIR)`` / ``spft predict DIR ...`` read the folder back and predict exactly as from the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from spft.errors import ConfigError, DependencyError
from spft.tasks.classification.source import EXPORT_WEIGHTS, HEAD_PREFIX, ClassifierRecord, load_run
from spft.tasks.common.export_folder import check_format, fresh_folder, staged_folder, write_json

log = logging.getLogger(__name__)

FORMATS = ("safetensors", "onnx", "torchscript")
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_OPSET = 18


class ExportGraph(nn.Module):
    """``pixel_values -> (logits, probabilities)`` with the run's temperature and sigmoid (bce) / softmax (ce)."""

    def __init__(self, model: nn.Module, temperature: float = 1.0, loss: str = "bce"):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        self.softmax = loss == "ce"

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixel_values)
        z = logits / self.temperature if self.temperature != 1.0 else logits
        return logits, (torch.softmax(z, -1) if self.softmax else torch.sigmoid(z))


def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The classifier's weights with the encoder's own key names at top level and the head under ``spft_head.``."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("encoder."):
            out[key[len("encoder."):]] = value.detach().contiguous().clone()
        elif key.startswith("head."):
            out[HEAD_PREFIX + key[len("head."):]] = value.detach().contiguous().clone()
        else:
            raise ConfigError(f"unexpected weight {key!r}: the classifier has only encoder.* and head.* weights")
    return out


def processor_config(prep) -> dict:
    """The run's :class:`~spft.models.encoders.Preprocessing` as a ``BitImageProcessor`` preprocessor_config.json."""
    if prep.resize == "shortest_edge":
        size = {"shortest_edge": int(prep.resize_size[0])}
    elif prep.resize == "exact":
        size = {"height": int(prep.resize_size[0]), "width": int(prep.resize_size[1])}
    else:
        size = {"shortest_edge": int(prep.size)}  # unused: do_resize is false
    crop = prep.crop if prep.crop is not None else (prep.size, prep.size)
    return {
        "image_processor_type": "BitImageProcessor",
        "do_resize": prep.resize != "none",
        "size": size,
        "resample": int(prep.interpolation),
        "do_center_crop": prep.crop is not None,
        "crop_size": {"height": int(crop[0]), "width": int(crop[1])},
        "do_rescale": prep.rescale is not None,
        "rescale_factor": float(prep.rescale) if prep.rescale is not None else 1 / 255,
        "do_normalize": True,
        "image_mean": [float(v) for v in prep.mean],
        "image_std": [float(v) for v in prep.std],
        "do_convert_rgb": True,
    }


def encoder_config(model: nn.Module) -> dict:
    config = model.encoder.config
    data = json.loads(config.to_json_string(use_diff=False))
    data["architectures"] = [type(model.encoder).__name__]
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _spft_block(loaded: ClassifierRecord, formats: dict) -> dict:
    import spft

    model = loaded.model
    return {
        "task": "classification", "name": loaded.name, "classes": loaded.classes, "n_classes": len(loaded.classes),
        "pooling": model.pooling, "head_hidden": int(model.head.net[1].out_features),
        "head_dropout": float(model.head.net[3].p), "hidden_size": int(model.head.net[1].in_features),
        "n_prefix": int(model.n_prefix), "loss": loaded.loss, "color": loaded.color,
        "image_column": loaded.meta.get("image_column"), "preprocessing": loaded.preprocessing.record(),
        "temperature": loaded.temperature, "weights_file": EXPORT_WEIGHTS, "head_prefix": HEAD_PREFIX,
        "source": {"run_dir": str(loaded.source.resolve()), "checkpoint": loaded.meta.get("checkpoint"),
                   "epoch": loaded.meta.get("epoch"), "weights": loaded.meta.get("weights"),
                   "model_name": loaded.meta.get("model_name")},
        "spft_version": spft.__version__, "export": formats,
    }


def _operating_files(loaded: ClassifierRecord, run_dir: Path, folder: Path) -> None:
    for name in ("thresholds.json", "calibration.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, folder / name)
    if not (folder / "thresholds.json").is_file():
        write_json(folder / "thresholds.json", {
            "method": "default", "target": None, "split": None,
            "note": "the run had no thresholds.json: 0.5 for every class (not a chosen operating point)",
            "classes": {c: {"threshold": 0.5} for c in loaded.classes}})
    if not (folder / "calibration.json").is_file():
        write_json(folder / "calibration.json", {
            "method": "none", "temperature": 1.0, "note": "the run had no calibration.json: uncalibrated"})


def _example(loaded: ClassifierRecord, batch: int = 2) -> torch.Tensor:
    side = int(loaded.preprocessing.size)
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


def export_onnx(loaded: ClassifierRecord, path: Path) -> dict:
    """``model.onnx`` with a dynamic batch axis: the dynamo exporter (``torch.export``), else the legacy one."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise DependencyError("--format onnx needs the onnx package: pip install 'spft[export]'") from exc
    wrapper = ExportGraph(loaded.model, loaded.temperature, loaded.loss).eval()
    example = _example(loaded)
    names = {"input_names": ["pixel_values"], "output_names": ["logits", "probabilities"]}
    errors = []
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():  # the exporter prints progress
        warnings.simplefilter("ignore")
        try:
            import onnxscript  # noqa: F401

            torch.onnx.export(wrapper, (example,), str(path), dynamo=True, opset_version=ONNX_OPSET,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, **names)
            exporter, opset = "dynamo (torch.export)", ONNX_OPSET
        except Exception as exc:  # noqa: BLE001 — any exporter failure: try the legacy exporter, say why
            errors.append(f"dynamo exporter: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            path.unlink(missing_ok=True)
            opset = 17
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                              dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"},
                                            "probabilities": {0: "batch"}}, **names)
            exporter = "legacy (TorchScript-based)"
            log.warning("ONNX: the dynamo exporter failed (%s); used the legacy exporter", errors[0])
    return {"file": path.name, "opset": opset, "exporter": exporter, "torch": torch.__version__,
            "inputs": {"pixel_values": ["batch", 3, loaded.preprocessing.size, loaded.preprocessing.size]},
            "outputs": {"logits": ["batch", len(loaded.classes)], "probabilities": ["batch", len(loaded.classes)]},
            "probabilities": ("softmax" if loaded.loss == "ce" else "sigmoid") + f"(logits / {loaded.temperature:g})",
            **({"fallback_reason": errors[0]} if errors else {})}


def export_torchscript(loaded: ClassifierRecord, path: Path) -> dict:
    wrapper = ExportGraph(loaded.model, loaded.temperature, loaded.loss).eval().requires_grad_(False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks of the encoder
        traced = torch.jit.trace(wrapper, (_example(loaded),), check_trace=False, strict=False)
        traced.save(str(path))
    return {"file": path.name, "exporter": "torch.jit.trace", "torch": torch.__version__,
            "inputs": {"pixel_values": ["batch", 3, loaded.preprocessing.size, loaded.preprocessing.size]},
            "outputs": ["logits", "probabilities"],
            "probabilities": ("softmax" if loaded.loss == "ce" else "sigmoid") + f"(logits / {loaded.temperature:g})"}


def export_run(run_dir: str | Path, out: str | Path, format: str = "safetensors",  # noqa: A002
               checkpoint: str = "best") -> Path:
    """Write the export folder ``out`` for the classification run ``run_dir``; returns ``out``.

    The folder is written under a temporary name beside ``out`` and renamed when complete, so an interrupted export
    leaves no half folder at ``out``.
    """
    from safetensors.torch import save_file

    from spft.tasks.classification.model_card import model_card

    check_format(format, FORMATS, "classification")
    run_dir, out = Path(run_dir), Path(out).expanduser()
    fresh_folder(out)
    loaded = load_run(run_dir, checkpoint)
    loaded.model.cpu().eval()
    with staged_folder(out) as tmp:
        save_file(export_state_dict(loaded.model), str(tmp / EXPORT_WEIGHTS), metadata={"format": "pt"})
        formats: dict = {"safetensors": {"file": EXPORT_WEIGHTS}}
        if format == "onnx":
            formats["onnx"] = export_onnx(loaded, tmp / ONNX_FILE)
        elif format == "torchscript":
            formats["torchscript"] = export_torchscript(loaded, tmp / TORCHSCRIPT_FILE)
        config = encoder_config(loaded.model)
        config["spft"] = _spft_block(loaded, formats)
        write_json(tmp / "config.json", config)
        write_json(tmp / "preprocessor_config.json", processor_config(loaded.preprocessing))
        _operating_files(loaded, run_dir, tmp)
        write_json(tmp / "export.json", {"source_run": str(run_dir.resolve()), "checkpoint": checkpoint,
                                         "formats": formats})
        (tmp / "MODEL_CARD.md").write_text(model_card(run_dir, loaded, formats), encoding="utf-8")
    log.info("exported %s (%s) to %s", run_dir, ", ".join(formats), out)
    return out

"""A trained classifier read back for prediction: from a run directory or from an ``spft export`` folder.

Both give a :class:`ClassifierRecord`: the :class:`~spft.models.classifier.SpftClassifier` with the weights a run
evaluates with (the EMA copy of ``checkpoints/best.ckpt`` when the run used EMA, else the raw weights), the exact
preprocessing the run trained with (the ``preprocessing`` record of ``data.json``), the colour mode
(``data.color``), the loss (``bce``: sigmoid per class; ``ce``: softmax), the temperature of ``calibration.json``
and the per-class thresholds of ``thresholds.json``.

* Run directory: ``config.yaml`` builds the architecture (:func:`~spft.models.classifier.build_classifier`), the
  checkpoint is read verified and with ``weights_only=True`` (:func:`spft.experiments.checkpoints.load_checkpoint`;
  ``best`` falls back to ``last`` with a warning when damaged, as ``spft evaluate`` does). Lightning is not needed.
* Export folder: ``config.json`` (the encoder's transformers config + an ``spft`` block) builds the architecture
  with random weights, ``model.safetensors`` fills it (encoder keys at top level, head keys under ``spft_head.``).

``calibration.json`` (``{"method": "none"|"temperature", "temperature": T, ...}``) and ``thresholds.json``
(``{"method", "target", "split", "classes": {class: {"threshold": t, ...} | null}}``) are optional: without them
the temperature is 1 and every threshold 0.5, said once on stderr; a class whose entry is null (or missing) gets
0.5, with a warning naming it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spft.errors import CheckpointError, ConfigError, DataError, MissingFileError

log = logging.getLogger(__name__)

EXPORT_WEIGHTS = "model.safetensors"
HEAD_PREFIX = "spft_head."
DEFAULT_THRESHOLD = 0.5


@dataclass
class ClassifierRecord:
    """What a run directory or an export folder holds for a classifier, read back: the network on the CPU in eval
    mode, its classes, preprocessing, calibration and thresholds. One name per layer of a trained classifier:
    :class:`spft.models.classifier.SpftClassifier` is the network (encoder + head), ``ClassificationModule`` its
    Lightning training wrapper, ``ClassifierRecord`` what its files hold, :class:`spft.tasks.classification.predict.
    Classifier` the predictor ``spft.load`` returns (built from a record), ``ExportGraph`` the graph ``spft export``
    writes to ONNX / TorchScript (logits and calibrated probabilities)."""

    model: torch.nn.Module
    classes: list[str]
    preprocessing: object  # spft.models.encoders.Preprocessing
    color: str
    loss: str
    temperature: float
    thresholds: dict[str, float]
    source: Path
    kind: str  # "run" | "export"
    name: str
    calibration: dict = field(default_factory=dict)  # calibration.json as read (defaults when absent)
    threshold_record: dict = field(default_factory=dict)  # thresholds.json as read ({} when absent)
    meta: dict = field(default_factory=dict)  # checkpoint file and epoch, image column, pooling ...


def is_export_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and (path / EXPORT_WEIGHTS).is_file()


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is damaged: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} is damaged: expected a JSON object, got {type(data).__name__}")
    return data


def read_calibration(folder: Path) -> tuple[float, dict, bool]:
    """``(temperature, record, present)`` from ``folder/calibration.json``; ``(1.0, {...none}, False)`` without it."""
    path = folder / "calibration.json"
    data = _read_json(path)
    if data is None:
        return 1.0, {"method": "none", "temperature": 1.0}, False
    method = data.get("method", "temperature")
    if method == "none":
        return 1.0, data, True
    if method != "temperature":
        raise DataError(f"{path}: unknown calibration method {method!r} (expected 'none' or 'temperature')")
    try:
        t = float(data["temperature"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: method 'temperature' needs a number 'temperature'") from exc
    if not math.isfinite(t) or t <= 0:
        raise DataError(f"{path}: temperature must be a positive finite number, got {data['temperature']!r}")
    return t, data, True


def read_thresholds(folder: Path, classes: list[str]) -> tuple[dict[str, float], dict, bool]:
    """``(threshold per class, record, present)`` from ``folder/thresholds.json`` (0.5 for each class without one)."""
    path = folder / "thresholds.json"
    data = _read_json(path)
    if data is None:
        return dict.fromkeys(classes, DEFAULT_THRESHOLD), {}, False
    entries = data.get("classes")
    if not isinstance(entries, dict):
        raise DataError(f"{path}: expected a 'classes' mapping of class -> {{threshold: ...}} or null")
    unknown = [c for c in entries if c not in classes]
    if unknown:
        raise DataError(f"{path}: classes {unknown} are not the model's ({', '.join(classes)})")
    out, defaulted = {}, []
    for c in classes:
        entry = entries.get(c)
        if entry is None:
            out[c] = DEFAULT_THRESHOLD
            defaulted.append(c)
            continue
        try:
            t = float(entry["threshold"] if isinstance(entry, dict) else entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: class {c!r} has no numeric 'threshold'") from exc
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):  # a probability: NaN, 1.5 or -1 would silently mean all/none
            raise DataError(f"{path}: class {c!r} threshold {t} is not a probability in [0, 1]")
        out[c] = t
    if defaulted:
        log.warning("%s: no threshold for %s (null or missing): 0.5 used", path, ", ".join(defaulted))
    return out, data, True


def _say_defaults(folder: Path, has_calibration: bool, has_thresholds: bool) -> None:
    missing = [name for name, present in (("calibration.json", has_calibration), ("thresholds.json", has_thresholds))
               if not present]
    if missing:
        what = {"calibration.json": "temperature 1 (uncalibrated probabilities)",
                "thresholds.json": "threshold 0.5 for every class"}
        log.warning("%s has no %s: %s", folder, " or ".join(missing), "; ".join(what[m] for m in missing))


def load_run(run_dir: str | Path, checkpoint: str = "best") -> ClassifierRecord:
    """The classifier of a classification run directory (on the CPU, in eval mode)."""
    from spft.experiments.checkpoints import checkpoint_file, eval_weights, load_checkpoint
    from spft.experiments.rundir import load_run_config
    from spft.models.classifier import build_classifier
    from spft.models.encoders import preprocessing_from_record

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if cfg.task != "classification":
        raise ConfigError(f"{run_dir} is a {cfg.task} run, not a classification run")
    data = _read_json(run_dir / "data.json") or {}
    ckpt = checkpoint_file(run_dir, checkpoint)
    state = load_checkpoint(ckpt)
    classes = list(data.get("classes") or state.get("spft", {}).get("classes") or [])
    saved = state.get("spft", {}).get("classes")
    if saved is not None and list(saved) != classes:
        raise CheckpointError(f"{ckpt}: its classes {list(saved)} differ from data.json's {classes}")
    if not classes:
        raise DataError(f"{run_dir}: neither data.json nor the checkpoint names the classes")
    model, prep = build_classifier(_model_section(cfg.model, bool(data.get("preprocessing"))), len(classes),
                                   cfg.data.image_size)
    if data.get("preprocessing"):
        prep = preprocessing_from_record(data["preprocessing"])
    weights, which = eval_weights(state["state_dict"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt} does not fit the model of {run_dir / 'config.yaml'}: "
                              f"{str(exc).splitlines()[0]}") from exc
    model.eval()
    temperature, calibration, has_cal = read_calibration(run_dir)
    thresholds, record, has_thr = read_thresholds(run_dir, classes)
    _say_defaults(run_dir, has_cal, has_thr)
    meta = {"checkpoint": str(ckpt), "epoch": state.get("epoch"), "weights": which,
            "image_column": getattr(cfg.data, "image_column", "image"), "pooling": cfg.model.pooling,
            "model_name": cfg.model.name,
            "head_hidden": cfg.model.head_hidden, "head_dropout": cfg.model.head_dropout}
    return ClassifierRecord(model, classes, prep, cfg.data.color, cfg.loss, temperature, thresholds, run_dir, "run",
                            run_dir.name, calibration, record, meta)


def _model_section(model_cfg, has_preprocessing: bool):
    """``model_cfg``, or for a built-in ``spft:`` encoder whose folder is not cached the same section with its
    architecture as ``model.config`` (random weights): the checkpoint holds every weight and ``data.json`` the
    preprocessing, so reading a run back never pretrains the encoder again."""
    import dataclasses

    from spft.models.encoders import ARCHITECTURE_KEYS
    from spft.models.foundation import builtin_architecture, builtin_folder, is_builtin

    if not (has_preprocessing and is_builtin(model_cfg.name)) or builtin_folder(model_cfg.name) is not None:
        return model_cfg
    extra = {k: v for k, v in (model_cfg.config or {}).items() if k not in ARCHITECTURE_KEYS}
    return dataclasses.replace(model_cfg, name=None, config={**builtin_architecture(model_cfg.name), **extra})


def load_export(folder: str | Path) -> ClassifierRecord:
    """The classifier of an ``spft export`` folder (no run directory, no Lightning).

    The folder is untrusted: ``config.json`` (the ``spft`` block, the encoder's ``model_type`` and sizes) and the
    tensor shapes in ``model.safetensors``' header are checked against each other before anything is built
    (:mod:`spft.tasks.common.export_check`); a wrong value is one line naming the file and key."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    from spft.models.classifier import SpftClassifier
    from spft.models.encoders import preprocessing_from_record
    from spft.tasks.common import export_check as chk

    folder = Path(folder)
    path, weights_file = folder / "config.json", folder / EXPORT_WEIGHTS
    config, block = chk.read_config(folder, "classification")
    classes = list(chk.names(block.get("classes"), path, "spft.classes"))
    pooling = chk.choice(block.get("pooling", "mean"), path, "spft.pooling", ("mean", "cls"))
    head_hidden = chk.positive_int(block.get("head_hidden"), path, "spft.head_hidden", chk.SIZE_KEYS["hidden_size"])
    dropout = chk.number(block.get("head_dropout", 0.0), path, "spft.head_dropout", 0.0, 1.0)
    loss = chk.choice(block.get("loss", "bce"), path, "spft.loss", chk.LOSSES)
    color = chk.choice(block.get("color", "grey"), path, "spft.color", chk.COLORS)
    chk.check_preprocessing(block.get("preprocessing"), path)
    found = chk.safetensors_shapes(weights_file)  # the header only: a pickle or a damaged file stops here
    hf_config = chk.encoder_config(config, path)

    def build() -> SpftClassifier:
        return SpftClassifier(AutoModel.from_config(hf_config), len(classes), pooling, head_hidden, dropout)

    expected = chk.expected_shapes(build, path)  # on the meta device: no memory, whatever the sizes say
    chk.compare_shapes(found, {(HEAD_PREFIX + k[len("head."):] if k.startswith("head.") else k[len("encoder."):]): v
                               for k, v in expected.items()}, weights_file, path)
    if "hidden_size" in block and block["hidden_size"] != expected["head.net.1.weight"][1]:
        raise ConfigError(f"{path}: spft.hidden_size is {block['hidden_size']!r}, the encoder's features are "
                          f"{expected['head.net.1.weight'][1]}")
    model = build()
    if "n_prefix" in block and model.n_prefix != block["n_prefix"]:
        raise CheckpointError(f"{folder}: the encoder has {model.n_prefix} prefix tokens, config.json says "
                              f"{block['n_prefix']!r}")
    tensors = load_file(weights_file)
    weights = {(f"head.{k[len(HEAD_PREFIX):]}" if k.startswith(HEAD_PREFIX) else f"encoder.{k}"): v
               for k, v in tensors.items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights_file} does not fit {path}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    prep = preprocessing_from_record(block["preprocessing"])
    temperature, calibration, has_cal = read_calibration(folder)
    thresholds, record, has_thr = read_thresholds(folder, classes)
    _say_defaults(folder, has_cal, has_thr)
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    meta = {"image_column": block.get("image_column"), "pooling": pooling, "head_hidden": head_hidden,
            "export": str(folder), **source}
    return ClassifierRecord(model, classes, prep, color, loss, temperature, thresholds, folder, "export",
                            str(block.get("name") or folder.name), calibration, record, meta)


def load_source(source: str | Path, checkpoint: str = "best") -> ClassifierRecord:
    """A run directory or an export folder."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise MissingFileError(f"{source}: no such run directory or export folder")
    if is_export_folder(source):
        if checkpoint != "best":
            raise ConfigError(f"{source} is an export folder (the best EMA weights only): --checkpoint {checkpoint} "
                              "needs the run directory")
        return load_export(source)
    return load_run(source, checkpoint)

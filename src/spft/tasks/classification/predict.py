"""Classification prediction: a trained model (run directory or export folder) applied to new images.

``predict(model_source, inputs, ...) -> Predictions`` is what ``spft predict`` calls through
:mod:`spft.tasks.registry`; :func:`load` gives the :class:`Classifier` that ``spft.load`` returns. One table row per
image: ``id``, ``prob_<class>`` (calibrated: ``sigmoid(logit / T)``, or ``softmax(logits / T)`` for ``loss: ce``,
``T`` from ``calibration.json``, 1 without it) and ``pred_<class>`` (0/1: probability >= the class's threshold from
``thresholds.json``, 0.5 without it; for ``loss: ce`` the argmax, one-hot). Images are read by
:func:`spft.data.io.load_image` in the run's ``data.color`` and preprocessed by
:class:`spft.data.transforms.ImageTransform` with the run's recorded preprocessing — exactly what evaluation does, so
predicting a run's own test images gives its ``predictions_test.csv`` probabilities (at temperature 1).

Decoding runs in a thread pool (Pillow releases the GIL) a few batches ahead of the model. On a GPU the model runs
under bf16 autocast, as ``spft evaluate`` does; on the CPU in float32. ``engine`` picks what runs the forward
(:mod:`spft.tasks.classification.engine`): PyTorch (the default), or an export folder's ``model.onnx`` in
onnxruntime on the CPU; everything around the forward is the same. Inputs that
cannot be read are collected as failures (never skipped silently); the others are still predicted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spft.data.inputs import Failure, InputImage, collect_inputs
from spft.data.io import array_to_image
from spft.devices import resolve_device
from spft.errors import ConfigError, DataError
from spft.tasks.classification.source import ClassifierRecord, load_source
from spft.tasks.common.prediction import Predictions, batch_loop

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


class Classifier:
    """A trained SPFT classifier ready to predict (what ``spft.load`` returns for a classification model).

    ``classes``, ``thresholds`` (class -> threshold of ``pred_<class>``), ``temperature``, ``preprocessing`` (the
    run's :class:`~spft.models.encoders.Preprocessing`), ``color``, ``loss``, ``model`` (the torch module, eval
    mode), ``device``, ``engine`` (``torch`` or ``onnx``: what runs the forward; heatmaps need ``torch``).
    :meth:`predict` returns the table ``spft predict`` writes.
    """

    task = "classification"

    def __init__(self, loaded: ClassifierRecord, device: str | torch.device = "auto", engine: str = "torch"):
        from spft.data.transforms import ImageTransform
        from spft.tasks.classification.engine import OnnxForward, resolve_engine

        self.loaded = loaded
        self.classes = list(loaded.classes)
        self.thresholds = dict(loaded.thresholds)
        self.temperature = float(loaded.temperature)
        self.preprocessing = loaded.preprocessing
        self.color = loaded.color
        self.loss = loaded.loss
        self.name = loaded.name
        self.source = loaded.source
        self.engine = resolve_engine(engine, self.source, device)
        self.device = torch.device("cpu") if self.engine == "onnx" else resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.onnx = (OnnxForward(self.source, len(self.classes), int(self.preprocessing.size))
                     if self.engine == "onnx" else None)
        self.transform = ImageTransform(self.preprocessing)

    def __repr__(self) -> str:
        return (f"Classifier({str(self.source)!r}, classes={self.classes}, loss={self.loss!r}, "
                f"temperature={self.temperature:g}, device={str(self.device)!r}, engine={self.engine!r})")

    # ---- model ------------------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def probabilities_of_logits(self, logits) -> np.ndarray:
        """Calibrated probabilities (float64): ``sigmoid(logits / T)`` per class, or ``softmax(logits / T)`` for
        ``ce`` — computed as the run's own evaluation computes them
        (:func:`spft.metrics.calibration.calibrated_probabilities`), so thresholds compare identically."""
        from spft.metrics.calibration import calibrated_probabilities

        z = logits.float().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits, np.float32)
        return calibrated_probabilities(z, self.temperature, self.loss == "ce")

    @torch.inference_mode()
    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits of one batch of ``pixel_values`` (``[B, 3, H, W]``, already preprocessed), on the CPU: the
        :attr:`engine`'s forward (the only step where the engines differ)."""
        if self.onnx is not None:
            return self.onnx(pixel_values)
        with self._autocast():
            return self.model(pixel_values.to(self.device, non_blocking=True)).float().cpu()

    def predict_pixels(self, pixel_values: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """Calibrated probabilities ``[N, C]`` of preprocessed ``pixel_values`` ``[N, 3, H, W]`` (no decoding)."""
        out = [self.probabilities_of_logits(self.logits(pixel_values[i:i + batch_size]))
               for i in range(0, len(pixel_values), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float64)

    # ---- images -----------------------------------------------------------------------------------------------------
    def _pixels_of(self, item) -> torch.Tensor:
        from spft.data.io import load_image

        if isinstance(item, InputImage):
            return self.transform(load_image(item.path, color=self.color))
        return self.transform(array_to_image(item, self.color))

    def run(self, items: list, ids: list[str], batch_size: int = 32, workers: int | None = None,
            progress: bool = False) -> tuple[pd.DataFrame, list[Failure]]:
        """Predict ``items`` (:class:`InputImage` or arrays / PIL images) named ``ids``: (table, failures)."""
        kept: list[int] = []
        probs: list[np.ndarray] = []

        def forward(entries):
            probs.append(self.predict_pixels(torch.stack([pixels for _, pixels in entries]), batch_size))
            kept.extend(i for i, _ in entries)

        failures = batch_loop(items, ids, self._pixels_of, forward, batch_size, workers, progress)
        p = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), np.float64)
        return self.table([ids[i] for i in kept], p), failures

    def table(self, ids: list[str], probs: np.ndarray) -> pd.DataFrame:
        """``id``, ``prob_<class>``..., ``pred_<class>``... for these probabilities."""
        columns: dict[str, object] = {"id": list(ids)}
        probs = np.asarray(probs, dtype=np.float64).reshape(len(ids), len(self.classes))
        for j, c in enumerate(self.classes):
            columns[f"prob_{c}"] = probs[:, j]
        if self.loss == "ce":
            top = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
            for j, c in enumerate(self.classes):
                columns[f"pred_{c}"] = (top == j).astype(int)
        else:
            for j, c in enumerate(self.classes):
                columns[f"pred_{c}"] = (probs[:, j] >= self.thresholds[c]).astype(int)
        return pd.DataFrame(columns)

    def predict(self, inputs, batch_size: int = 32, workers: int | None = None, progress: bool = False,
                on_error: str = "report") -> pd.DataFrame:
        """The prediction table for ``inputs``: a path, a folder, a glob, a CSV (see :mod:`spft.data.inputs`), a
        numpy array or a PIL image, or a list of any of these.

        Arrays and PIL images get the ids ``array[i]`` / ``image[i]`` (``i``: position in ``inputs``). Inputs that
        cannot be read are left out of the table and listed in ``table.attrs["failed"]`` as ``(id, error)`` with a
        warning (``on_error="report"``), or raise the first one (``on_error="raise"``).
        """
        if on_error not in ("report", "raise"):
            raise ConfigError(f"on_error: expected 'report' or 'raise', got {on_error!r}")
        single = isinstance(inputs, (str, os.PathLike, np.ndarray)) or _is_pil(inputs)
        items, ids, failures = self._expand([inputs] if single else list(inputs))
        table, failed = self.run(items, ids, batch_size, workers, progress)
        failures += failed
        if failures and on_error == "raise":
            raise DataError(f"{failures[0].id}: {failures[0].error}")
        if failures:
            log.warning("%d input(s) could not be predicted: %s", len(failures),
                        "; ".join(f"{f.id}: {f.error}" for f in failures[:5]) + (" ..." if len(failures) > 5 else ""))
        table.attrs["failed"] = [(f.id, f.error) for f in failures]
        return table

    def heatmaps(self, image, classes: list[str] | str | None = None, method: str = "gradcam",
                 original: bool = True) -> dict[str, np.ndarray]:
        """Where the model looks in one image (a path, numpy array or PIL image): ``{class: map}``
        (:mod:`spft.models.heatmaps`; float32, non-negative, raw scale). ``method``: ``gradcam`` (per class; default
        every class) or ``rollout`` (attention rollout, class-agnostic: one map under the key ``"rollout"``).
        ``original``: the map on the original image's pixels (zero outside the centre crop), else on the crop.
        Runs in float32 with gradients (not under autocast), on the PyTorch model: not with ``engine="onnx"``."""
        from spft.data.io import load_image
        from spft.models import heatmaps as hm

        self._need_torch()
        picture = (load_image(image, color=self.color) if isinstance(image, (str, os.PathLike))
                   else array_to_image(image, self.color))
        pixels = self.transform(picture).unsqueeze(0).to(self.device)
        if method == "rollout":
            maps = {"rollout": hm.attention_rollout(self.model, pixels)[0]}
        elif method == "gradcam":
            names = self.classes if classes is None else [classes] if isinstance(classes, str) else list(classes)
            unknown = [c for c in names if c not in self.classes]
            if unknown:
                raise ConfigError(f"heatmaps: unknown class(es) {unknown} (classes: {', '.join(self.classes)})")
            maps = {c: hm.gradcam(self.model, pixels, self.classes.index(c))[0] for c in names}
        else:
            raise ConfigError(f"heatmaps: method must be 'gradcam' or 'rollout', got {method!r}")
        if original:
            maps = {k: hm.to_original(v, self.preprocessing, *picture.size) for k, v in maps.items()}
        return maps

    def save_heatmaps(self, inputs, out_dir: str | Path, classes: list[str] | str | None = None,
                      method: str = "gradcam", batch_size: int = 8, workers: int | None = None,
                      progress: bool = False) -> pd.DataFrame:
        """Predict ``inputs`` (as :meth:`predict` takes them) and write heatmap files into ``out_dir``:
        ``<image stem>__<class>.npy`` (float32, the image's height x width, non-negative) and ``.png`` (overlay) for
        ``classes`` (default: the classes predicted positive at :attr:`thresholds`; ``"all"``; with ``rollout`` one
        class-agnostic map per image), listed in ``out_dir/heatmaps.csv``. Returns that listing (``id, class,
        prob, npy, png``); inputs that could not be predicted or mapped are in ``listing.attrs["failed"]``."""
        from spft.tasks.classification.explain import check_request, write_heatmaps

        self._need_torch()
        check_request(self, classes, method)
        single = isinstance(inputs, (str, os.PathLike, np.ndarray)) or _is_pil(inputs)
        items, ids, failures = self._expand([inputs] if single else list(inputs))
        table, failed = self.run(items, ids, batch_size, workers, progress)
        listing, bad, _ = write_heatmaps(self, items, ids, table, out_dir, classes, method, batch_size, progress)
        failures += failed + bad
        if failures:
            log.warning("%d input(s) without heatmaps: %s", len(failures),
                        "; ".join(f"{f.id}: {f.error}" for f in failures[:5]) + (" ..." if len(failures) > 5 else ""))
        listing.attrs["failed"] = [(f.id, f.error) for f in failures]
        return listing

    def _need_torch(self) -> None:
        if self.engine != "torch":
            raise ConfigError("heatmaps need engine='torch' (spft.load(..., engine='torch')): Grad-CAM and attention "
                              "rollout differentiate the PyTorch model, which model.onnx (outputs only) cannot")

    def _expand(self, inputs: Iterable) -> tuple[list, list[str], list[Failure]]:
        items, ids, failures = [], [], []
        paths: list[tuple[int, str]] = []
        for k, value in enumerate(inputs):
            if isinstance(value, (str, os.PathLike)):
                paths.append((len(items), str(value)))
                items.append(None)
                ids.append("")
            elif isinstance(value, np.ndarray) or _is_pil(value):
                items.append(value)
                ids.append(f"{'image' if _is_pil(value) else 'array'}[{k}]")
            else:
                raise ConfigError(f"input {k}: expected a path, a numpy array or a PIL image, got "
                                  f"{type(value).__name__}")
        # paths expand in place (a folder or CSV is many images)
        out_items, out_ids = [], []
        expanded = {}
        for pos, text in paths:
            found, failed = collect_inputs([text], preferred_column=self.loaded.meta.get("image_column"))
            expanded[pos] = found
            failures += failed
        for pos, (item, id_) in enumerate(zip(items, ids)):
            if pos in expanded:
                out_items += expanded[pos]
                out_ids += [f.id for f in expanded[pos]]
            else:
                out_items.append(item)
                out_ids.append(id_)
        return out_items, out_ids, failures


def _is_pil(value) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Image.Image)


def load(source: str | Path, checkpoint: str = "best", device: str = "auto", engine: str = "torch") -> Classifier:
    """A run directory's (``checkpoint``: best / last; EMA weights when the run used EMA) or an export folder's
    classifier, ready to predict on ``device`` (auto: CUDA when available) with ``engine`` (``torch``, or ``onnx``:
    the export folder's ``model.onnx`` in onnxruntime on the CPU; :mod:`spft.tasks.classification.engine`)."""
    from spft.tasks.classification.engine import resolve_engine

    resolve_engine(engine, Path(source).expanduser(), device)  # before the model is built: one line, at once
    return Classifier(load_source(source, checkpoint), device, engine)


def predict(model_source, inputs: list[str] | tuple[str, ...], batch_size: int = 32, device: str = "auto",
            checkpoint: str = "best", image_column: str | None = None, root: str | None = None,
            workers: int | None = None, progress: bool = False, heatmaps: str | Path | None = None,
            heatmap_classes: list[str] | str | None = None, heatmap_method: str = "gradcam",
            engine: str = "torch") -> Predictions:
    """Predict every image ``inputs`` names (files, folders, globs, CSVs: :func:`spft.data.inputs.collect_inputs`)
    with ``model_source`` (a run directory, an export folder or a loaded :class:`Classifier`).

    ``heatmaps``: a folder for heatmap files of the predicted images (:func:`spft.tasks.classification.explain.
    write_heatmaps`: ``heatmap_classes``, default the classes predicted positive; ``heatmap_method`` gradcam or
    rollout); images whose heatmap fails join the failures. ``engine``: ``torch`` or ``onnx`` (:func:`load`;
    heatmaps need ``torch``)."""
    from spft.tasks.classification.engine import resolve_engine

    if heatmaps is None and heatmap_classes is not None:
        raise ConfigError("heatmap classes given without a heatmap folder (--heatmaps DIR)")
    if isinstance(model_source, Classifier):
        model = model_source
    else:
        resolve_engine(engine, Path(model_source).expanduser(), device, heatmaps=heatmaps is not None)  # before load
        model = load(model_source, checkpoint, device, engine)
    if heatmaps is not None:
        from spft.tasks.classification.explain import check_request

        model._need_torch()
        check_request(model, heatmap_classes, heatmap_method)  # before the (long) prediction
    items, failures = collect_inputs(inputs, image_column, model.loaded.meta.get("image_column"), root)
    if not items and not failures:
        raise DataError("no inputs given")
    log.info("predicting %d image(s) with %s (%s, %s, temperature %g)", len(items), model.source, model.engine,
             model.device, model.temperature)
    table, failed = model.run(items, [i.id for i in items], batch_size, workers, progress)
    result = Predictions(table, failures + failed, str(model.source), model.name)
    if heatmaps is not None:
        from spft.tasks.classification.explain import write_heatmaps

        listing, failed, result.heatmaps = write_heatmaps(model, items, [i.id for i in items], table, heatmaps,
                                                          heatmap_classes, heatmap_method,
                                                          min(batch_size, 8), progress)
        result.heatmap_table = listing
        result.failures += failed
    return result



# --- the demo's last step --------------------------------------------------------------------------------------


def demo_predictions(run_dir: str | Path, n: int = 4) -> tuple[Path, Path, int]:
    """Predict ``n`` test images of a finished demo run (those with findings first) and write their heatmaps:
    ``RUN/demo_predictions/predictions.csv`` and ``RUN/demo_predictions/heatmaps/``. Returns (table file, heatmap
    folder, number of maps)."""
    from spft.data.registry import load_table
    from spft.experiments.rundir import load_run_config

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    table = load_table(cfg.data, cfg.seed)
    test = [(p, y) for p, s, y in zip(table.paths, table.splits, table.labels) if s == "test"]
    test.sort(key=lambda t: -int(np.nansum(t[1]) > 0))  # stable: images with findings first, in table order
    paths = [p for p, _ in test[:n]]
    if not paths:
        raise DataError(f"{run_dir}: no test images to predict")
    folder = run_dir / "demo_predictions"
    result = predict(run_dir, paths, device="cpu", workers=1, heatmaps=folder / "heatmaps")
    table_file, _ = result.write(folder / "predictions.csv")
    return table_file, folder / "heatmaps", len(result.heatmap_table)

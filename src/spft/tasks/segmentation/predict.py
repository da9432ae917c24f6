"""Segmentation prediction: a finished SAM2 run's best (EMA) weights applied to new images, one box prompt per
structure.

``predict(run_dir, inputs, prompts=...) -> SegmentationPredictions`` is what ``spft predict RUN INPUTS --prompts P``
calls through :mod:`spft.tasks.registry`; :func:`load` gives the :class:`Segmenter` that ``spft.load`` returns.
SAM2 segments what a box points at, so prompts are required (refused in one line without them):

* a boxes CSV: an ``id`` (or ``path``) column naming the image as it is given to predict (the id, or the same file
  by path: absolute, or relative to the CSV's folder or to the working directory), ``structure`` (one of the run's
  ``segmentation.structures``), ``x1``, ``y1``, ``x2``, ``y2`` in the image's own pixels; one box per image and
  structure;
* a detection run's predictions CSV (``id``, ``class``, ``confidence``, ``x1`` ... ``y2``: what
  ``spft predict DETECTION_RUN`` writes): for each image and structure, the box of that class with the highest
  confidence; classes that are not structures are ignored;
* a detection run directory: that run predicts the same inputs first (:mod:`spft.tasks.detection.predict`), then as
  above.

Prediction is exactly the evaluation path of :mod:`spft.tasks.segmentation.evaluate`: the image is read by
:func:`spft.data.io.load_image` in the run's ``data.color``, resized to SAM2's square input
(:meth:`spft.data.masks.MaskDataset.model_input`, the run's recorded preprocessing), the boxes scaled by
``S / width`` and ``S / height`` into that input, the EMA weights run in float32, and the logits upsampled to the
image's own size and thresholded at 0 (``evaluate._predict_original``). Predicting a run's own test images with the
boxes evaluation derives from their masks gives the masks evaluation writes.

Output (:meth:`SegmentationPredictions.write`): the table, one row per image and prompted structure: ``id``,
``structure``, ``rle``, ``height``, ``width``, ``mask_file``; ``rle`` is CheXmask's run-length encoding (the
convention of :mod:`spft.data.mask_contract`): ``"start length start length ..."`` with 1-indexed starts into the
**row-major** (C-order) flattened ``height x width`` mask, foreground runs only, blank for an empty mask. And one PNG
per row (0 / 255, the image's size) in ``<out stem>_masks/`` (``mask_file``, relative to the table's folder). An
image that cannot be read, or has no prompt box for any structure, is a failure: listed, never skipped silently; a
structure without a box in an image that has others has no row (counted in a warning).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spft.data.inputs import Failure, InputImage, collect_inputs
from spft.errors import ConfigError, DataError, MissingFileError, MissingKeyError
from spft.tasks.common.prediction import Predictions, batch_loop, safe_stem

log = logging.getLogger(__name__)

COLUMNS = ["id", "structure", "rle", "height", "width"]
BOX = ("x1", "y1", "x2", "y2")
NO_PROMPTS = ("segmentation needs box prompts: give --prompts BOXES.csv (id, structure, x1, y1, x2, y2) or "
              "--prompts DETECTION_RUN (or its predictions CSV)")

Prompts = dict[str, dict[str, tuple[float, float, float, float]]]  # image key -> structure -> box (image pixels)


@dataclass
class SegmentationPredictions(Predictions):
    """One row per image and structure (RLE); :meth:`write` adds one mask PNG per row."""

    structures: list[str] = field(default_factory=list)
    n_images: int = 0

    def masks_dir(self, out: str | Path) -> Path:
        out = Path(out)
        return out.with_name((out.name[: -len(out.suffix)] if out.suffix else out.name) + "_masks")

    def write(self, out: str | Path) -> tuple[Path, Path | None]:
        """The table at ``out`` (with ``mask_file``), the failures' sidecar, and the PNGs in ``<out stem>_masks/``."""
        from PIL import Image

        from spft.atomic import atomic_write_image
        from spft.data.mask_contract import decode_chexmask_rle

        out = Path(out).expanduser()
        folder = self.masks_dir(out)
        folder.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        stems: dict[str, str] = {}
        files = []
        for row in self.table.to_dict("records"):
            if row["id"] not in stems:
                stems[row["id"]] = safe_stem(row["id"], taken)
            name = f"{stems[row['id']]}_{row['structure']}.png"
            mask = decode_chexmask_rle(row["rle"], int(row["height"]), int(row["width"]))
            atomic_write_image(folder / name, Image.fromarray(mask * np.uint8(255)))
            files.append(f"{folder.name}/{name}")
        self.table["mask_file"] = files if files else pd.Series([], dtype=str)
        log.info("%d mask PNG(s) -> %s", len(files), folder)
        return super().write(out)


def _number(value, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise DataError(f"{where}: box coordinate {value!r} is not a finite number")
    return x


def _keys(value: str, base: Path | None) -> list[str]:
    """The keys an image name matches under: as written, and as a resolved path (absolute, or relative to ``base``
    and to the working directory)."""
    keys = [value]
    path = Path(value).expanduser()
    for candidate in ([path] if path.is_absolute() else [p for p in (base / path if base else None, path) if p]):
        keys.append(str(candidate.resolve()))
    return keys


def prompts_from_table(frame: pd.DataFrame, structures: list[str], where: str, base: Path | None) -> Prompts:
    """Prompts from a boxes table (``structure`` column) or a detection predictions table (``class`` and
    ``confidence``: the most confident box per image and structure; other classes ignored)."""
    id_column = next((c for c in ("id", "path") if c in frame.columns), None)
    kind = "structure" if "structure" in frame.columns else "class" if "class" in frame.columns else None
    missing = [c for c in BOX if c not in frame.columns]
    if id_column is None or kind is None or missing:
        raise MissingKeyError(f"{where}: prompts need the columns id (or path), structure (or class), x1, y1, x2, y2; "
                              f"columns: {', '.join(map(str, frame.columns))}")
    detections = kind == "class"
    if detections and "confidence" not in frame.columns:
        raise MissingKeyError(f"{where}: a 'class' column (detection predictions) needs 'confidence' too")
    unknown = sorted(set(frame[kind].astype(str)) - set(structures))
    if unknown and not detections:
        raise DataError(f"{where}: structure(s) {unknown} are not the run's ({', '.join(structures)})")
    kept = frame[frame[kind].astype(str).isin(structures)]
    if detections and len(frame) and not len(kept):
        raise DataError(f"{where}: none of its classes ({', '.join(unknown[:10])}) is a structure of this run "
                        f"({', '.join(structures)}): no prompt for any image")
    if detections:
        log.info("%s: %d of %d box(es) are of a structure's class (%s); the most confident per image and structure "
                 "is the prompt", where, len(kept), len(frame), ", ".join(structures))
        kept = kept.assign(_conf=[_number(v, where) for v in kept["confidence"]])
        kept = kept.sort_values("_conf", ascending=False, kind="stable").drop_duplicates([id_column, kind])
    else:
        dup = kept[kept.duplicated([id_column, kind], keep=False)]
        if len(dup):
            first = dup.iloc[0]
            raise DataError(f"{where}: {len(dup)} rows give a second box for one image and structure (first: "
                            f"{first[id_column]}, {first[kind]}); give one box per image and structure")
    prompts: Prompts = {}
    for row in kept.to_dict("records"):
        name = str(row[id_column]).strip()
        box = tuple(_number(row[c], f"{where} ({name}, {row[kind]})") for c in BOX)
        if box[2] < box[0] or box[3] < box[1]:
            raise DataError(f"{where}: box of {name}, {row[kind]} has x2 < x1 or y2 < y1: {box}")
        for key in _keys(name, base):
            prompts.setdefault(key, {})[str(row[kind])] = box
    return prompts


def read_prompts(spec, structures: list[str], items: list[InputImage] | None = None, device: str = "auto",
                 batch_size: int = 32, workers: int | None = None, progress: bool = False) -> Prompts:
    """Prompts from ``spec``: a boxes / detection predictions CSV, a DataFrame, or a detection run directory (which
    then predicts ``items``)."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise ConfigError(NO_PROMPTS)
    if isinstance(spec, pd.DataFrame):
        return prompts_from_table(spec, structures, "prompts", None)
    path = Path(spec).expanduser()
    if path.is_dir():
        from spft.experiments.rundir import task_of_run

        if task_of_run(path) != "detection":
            raise ConfigError(f"--prompts {spec}: a run directory must be a detection run (it is a "
                              f"{task_of_run(path)} run)")
        from spft.tasks.detection.predict import load as load_detector
        from spft.tasks.detection.predict import predict as detect

        detector = load_detector(path, device=device)
        if not set(detector.classes) & set(structures):
            raise ConfigError(f"--prompts {spec}: none of the detection run's classes ({', '.join(detector.classes)}) "
                              f"is a structure of this run ({', '.join(structures)})")
        log.info("prompts: detecting the inputs with %s", path)
        found = detect(detector, [], batch_size, device, workers=workers, progress=progress, items=items or [])
        return prompts_from_table(found.table, structures, f"detections of {path}", None)
    if not path.is_file():
        raise ConfigError(f"--prompts {spec}: no such file or run directory. {NO_PROMPTS}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as a CSV: {str(exc).splitlines()[0]}") from exc
    from spft.csvsafe import unescape_frame

    frame = unescape_frame(frame)  # a detection run's predictions: ids as written before escaping (spft.csvsafe)
    return prompts_from_table(frame, structures, str(path), path.parent)


class Segmenter:
    """A finished SAM2 segmentation run ready to predict (what ``spft.load`` returns for a segmentation run).

    ``structures``, ``preprocessing``, ``color``, ``model`` (:class:`~spft.models.sam2.SpftSam2` with the weights the
    run evaluates with, eval mode), ``device``, ``size`` (SAM2's square input side).
    """

    task = "segmentation"

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto"):
        from spft.devices import resolve_device
        from spft.experiments.checkpoints import checkpoint_file, eval_weights, load_checkpoint
        from spft.experiments.rundir import load_run_config
        from spft.models.sam2 import build_sam2

        run_dir = Path(run_dir).expanduser()
        self.device = resolve_device(device)
        if not (run_dir / "config.yaml").is_file():  # an spft export folder

            model, prep, block = load_export(run_dir)
            self.cfg, self.source, self.name = None, run_dir, block.get("name") or run_dir.name
            self.structures, self.checkpoint = list(block["structures"]), run_dir / "model.safetensors"
            self.weights_kind = str(block.get("weights", "export"))
            self._ready(model, prep, block["color"])
            return
        cfg = load_run_config(run_dir)
        if cfg.task != "segmentation":
            raise ConfigError(f"{run_dir} is a {cfg.task} run, not a segmentation run")
        self.cfg = cfg
        self.source = run_dir
        self.name = run_dir.resolve().name
        self.structures = list(cfg.segmentation.structures)
        self.checkpoint = checkpoint_file(run_dir, checkpoint)  # verified; best falls back to last when damaged
        state = load_checkpoint(self.checkpoint)
        saved = state.get("spft", {}).get("classes")
        if saved is not None and list(saved) != self.structures:
            raise DataError(f"{self.checkpoint}: its structures {list(saved)} differ from config.yaml's "
                            f"{self.structures}")
        model, prep = build_sam2(cfg.model)  # the preprocessing the run trained and evaluated with
        weights, self.weights_kind = eval_weights(state["state_dict"])
        model.load_state_dict(weights)
        self._ready(model, prep, cfg.data.color)

    def _ready(self, model, prep, color: str) -> None:
        from spft.data.mask_contract import MaskTable
        from spft.data.masks import MaskDataset

        self.model = model.to(self.device).eval()
        self.preprocessing = prep
        self.color = color
        self.size = int(prep.size)
        self._inputs = MaskDataset(MaskTable(self.structures, [], [], [], [], []), "test", prep, self.color)

    def __repr__(self) -> str:
        return (f"Segmenter({str(self.source)!r}, structures={self.structures}, weights={self.weights_kind!r}, "
                f"device={str(self.device)!r})")

    def model_input(self, path) -> tuple[torch.Tensor, tuple[int, int]]:
        """SAM2's ``[3, S, S]`` input for the image at ``path`` and the image's ``(height, width)``."""
        from spft.data.io import load_image

        image = load_image(path, color=self.color)
        return self._inputs.model_input(image), (image.size[1], image.size[0])

    def model_boxes(self, boxes, shape: tuple[int, int]) -> torch.Tensor:
        """``[P, 4]`` boxes in the image's pixels -> SAM2 input pixels (x by ``S / width``, y by ``S / height``)."""
        height, width = shape
        scale = np.array([self.size / width, self.size / height] * 2, np.float64)
        return torch.tensor(np.asarray(boxes, np.float64).reshape(-1, 4) * scale, dtype=torch.float32)

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``[B, P, S, S]`` mask logits (CPU, float32) of ``[B, 3, S, S]`` inputs, ``[B, P, 4]`` input-pixel boxes."""
        return self.model(pixels.to(self.device), boxes.to(self.device)).float().cpu()

    def masks(self, path, boxes: dict[str, tuple[float, float, float, float]]) -> dict[str, np.ndarray]:
        """``{structure: bool mask at the image's size}`` for one image and its boxes (image pixels)."""
        from spft.tasks.segmentation.evaluate import _predict_original

        pixels, shape = self.model_input(path)
        names = [s for s in self.structures if s in boxes]
        logits = self.logits(pixels[None], self.model_boxes([boxes[s] for s in names], shape)[None])
        return dict(zip(names, _predict_original(logits[0], shape)))

    def run(self, items: list[InputImage], prompts: Prompts, batch_size: int = 8, workers: int | None = None,
            progress: bool = False) -> tuple[pd.DataFrame, int, list[Failure]]:
        """Predict ``items`` with ``prompts``: (RLE table, images predicted, failures)."""
        from spft.data.mask_contract import encode_chexmask_rle
        from spft.tasks.segmentation.evaluate import _predict_original

        rows: list[dict] = []
        done = 0
        unprompted = 0

        def boxes_of(item: InputImage) -> dict | None:
            for key in (item.id, str(Path(item.path).expanduser().resolve())):
                if key in prompts:
                    return prompts[key]
            return None

        def prepare(i: int, decoded):
            nonlocal unprompted
            boxes = boxes_of(items[i])
            if not boxes:
                return f"no prompt box for this image (structures: {', '.join(self.structures)})"
            pixels, shape = decoded
            names = [s for s in self.structures if s in boxes]
            unprompted += len(self.structures) - len(names)
            return pixels, shape, names, self.model_boxes([boxes[s] for s in names], shape)

        def forward(entries):
            nonlocal done
            logits = self.logits(torch.stack([e[0] for _, e in entries]), torch.stack([e[3] for _, e in entries]))
            for (i, (_, shape, names, _)), lg in zip(entries, logits):
                for name, mask in zip(names, _predict_original(lg, shape)):
                    rows.append({"id": items[i].id, "structure": name, "rle": encode_chexmask_rle(mask),
                                 "height": shape[0], "width": shape[1]})
                done += 1

        # one set of structures per forward pass
        failures = batch_loop(items, [item.id for item in items], lambda item: self.model_input(item.path), forward,
                              batch_size, workers, progress, prepare=prepare, same_batch=lambda a, b: a[2] == b[2])
        if unprompted:
            log.warning("%d (image, structure) pair(s) had no prompt box: no mask for them (no row)", unprompted)
        return pd.DataFrame(rows, columns=COLUMNS), done, failures

    def predict(self, inputs, prompts, batch_size: int = 8, workers: int | None = None, progress: bool = False
                ) -> pd.DataFrame:
        """The RLE table for ``inputs`` (paths, folders, globs, CSVs) with ``prompts`` (a CSV, a DataFrame or a
        detection run); failures in ``table.attrs["failed"]`` as ``(id, error)``, with a warning."""
        inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        result = predict(self, inputs, batch_size, prompts=prompts, workers=workers, progress=progress)
        if result.failures:
            log.warning("%d input(s) could not be predicted: %s", len(result.failures),
                        "; ".join(f"{f.id}: {f.error}" for f in result.failures[:5]))
        result.table.attrs["failed"] = [(f.id, f.error) for f in result.failures]
        return result.table


def load(source: str | Path, checkpoint: str = "best", device: str = "auto") -> Segmenter:
    """A segmentation run directory's SAM2 (``checkpoint``: best / last; EMA weights when the run used EMA), or an
    ``spft export`` folder's."""
    return Segmenter(source, checkpoint, device)


def predict(model_source, inputs: list[str] | tuple[str, ...], batch_size: int = 8, device: str = "auto",
            checkpoint: str = "best", image_column: str | None = None, root: str | None = None,
            workers: int | None = None, progress: bool = False, prompts=None) -> SegmentationPredictions:
    """Masks for every image ``inputs`` names (files, folders, globs, CSVs) with ``model_source`` (a segmentation
    run directory or a loaded :class:`Segmenter`) and ``prompts`` (required: see the module doc)."""
    if prompts is None:
        raise ConfigError(NO_PROMPTS)
    model = model_source if isinstance(model_source, Segmenter) else load(model_source, checkpoint, device)
    items, failures = collect_inputs(inputs, image_column, None, root)
    if not items and not failures:
        raise DataError("no inputs given")
    table = read_prompts(prompts, model.structures, items, str(model.device), batch_size, workers, progress)
    log.info("predicting %d image(s) with %s (%s weights, %s)", len(items), model.checkpoint, model.weights_kind,
             model.device)
    rows, done, failed = model.run(items, table, batch_size, workers, progress)
    return SegmentationPredictions(rows, failures + failed, str(model.source), model.name,
                                   structures=list(model.structures), n_images=done)


def load_export(folder: str | Path):
    """``(SpftSam2 in eval mode, Preprocessing, spft block)`` of an export folder, its ``config.json`` and the shapes
    of ``model.safetensors`` checked before anything is built (:mod:`spft.tasks.common.export_check`)."""
    from transformers import Sam2Model

    from spft.models.encoders import preprocessing_from_record
    from spft.models.sam2 import SpftSam2
    from spft.tasks.common import export_check as chk

    folder = Path(folder).expanduser()
    path, weights = folder / "config.json", folder / "model.safetensors"
    if not path.is_file():
        raise MissingFileError(f"{folder}: not an spft export folder (no config.json with an spft block)")
    config, block = chk.read_config(folder, "segmentation")
    chk.names(block.get("structures"), path, "spft.structures")
    chk.choice(block.get("color"), path, "spft.color", chk.COLORS)
    chk.check_preprocessing(block.get("preprocessing"), path)
    found = chk.safetensors_shapes(weights)  # the header only: a pickle or a damaged file stops here
    sam_config = chk.encoder_config(config, path, ("sam2",))
    chk.compare_shapes(found, chk.expected_shapes(lambda: Sam2Model(sam_config), path), weights, path)
    model = SpftSam2(Sam2Model.from_pretrained(str(folder))).eval()
    return model, preprocessing_from_record(block["preprocessing"]), block

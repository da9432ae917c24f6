"""The pre-resized image cache: ``spft prepare cache`` writes each image once at the model's input size.

An entry is the output of :meth:`ImageTransform.resize_crop` (after the grey/RGB conversion of ``spft.data.io``) saved
as lossless PNG under ``data.image_cache/<size>px-<color>-v<version>/``, named by a hash of the source path, the size,
the colour mode and the preprocessing. Reading it back gives the very same pixels (``resize_crop`` of a size x size
image is the identity), so results are identical with or without the cache. Entries are written to a temporary file
and renamed, so an interrupted preparation leaves only complete entries and simply resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from spft.data.contract import LabelTable
from spft.data.io import load_image

log = logging.getLogger(__name__)

CACHE_VERSION = 1
PREPROCESSING = "io.load_image + ImageTransform.resize_crop (shortest edge bicubic, centre crop)"


class ImageCache:
    """Where the cached copy of a source image lives for one (size, colour) pair, and how to write it."""

    def __init__(self, folder: str | os.PathLike, size: int, color: str):
        self.size = int(size)
        self.color = color
        self.folder = Path(folder).expanduser() / f"{self.size}px-{color}-v{CACHE_VERSION}"

    def entry(self, source: str | os.PathLike) -> Path:
        """The cache file of ``source`` (whether or not it exists yet)."""
        key = f"{os.path.abspath(source)}|{self.size}|{self.color}|{PREPROCESSING}|v{CACHE_VERSION}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.png"

    def write(self, source: str, resize_crop) -> bool:
        """Write the entry of ``source`` unless it exists; ``True`` when written. Atomic: temp file + rename."""
        target = self.entry(source)
        if target.is_file():
            return False
        image = resize_crop(load_image(source, self.color))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}-{threading.get_ident()}")
        try:
            image.save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return True

    def redirect(self, table: LabelTable) -> LabelTable:
        """``table`` with each path replaced by its cache entry where that exists (the others read the original)."""
        paths, hits = [], 0
        for path in table.paths:
            cached = self.entry(path)
            if cached.is_file():
                paths.append(str(cached))
                hits += 1
            else:
                paths.append(path)
        if hits < len(paths):
            log.warning("image cache %s: %d of %d images are not prepared and are read from the originals (run "
                        "`spft prepare cache CONFIG` to complete it)", self.folder, len(paths) - hits, len(paths))
        else:
            log.info("image cache %s: all %d images read pre-resized", self.folder, hits)
        return dataclasses.replace(table, paths=paths)

    def remove_partial(self) -> int:
        """Delete temporary files an interrupted preparation left behind; returns how many."""
        stale = list(self.folder.glob("*/*.png.tmp*")) if self.folder.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


def model_input_size(cfg) -> int:
    """The model's input size as training computes it (``data.image_size``, else the model's preprocessing)."""
    if cfg.data.image_size:
        return int(cfg.data.image_size)
    from spft.models.encoders import preprocessing_for

    return preprocessing_for(cfg.model.name, SimpleNamespace(config=_model_config(cfg.model)), None).size


def _model_config(model_cfg):
    """The transformers config of the model (no weights loaded), or ``None`` when it cannot be read."""
    from transformers import AutoConfig

    try:
        if model_cfg.name is None:
            mapping = dict(model_cfg.config or {})
            return AutoConfig.for_model(mapping.pop("model_type"), **mapping)
        return AutoConfig.from_pretrained(model_cfg.name, **(model_cfg.config or {}))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cannot read the config of %s (%s): size from the preprocessing defaults", model_cfg.name, exc)
        return None


def prepare_cache(cfg, workers: int | None = None) -> dict:
    """Write the cache entries of every present image of ``cfg.data`` (resumable); returns a summary dict.

    Raises:
        ValueError: ``data.image_cache`` is not set.
    """
    from tqdm import tqdm

    from spft.data.registry import load_table
    from spft.data.transforms import ImageTransform

    if not cfg.data.image_cache:
        raise ValueError("data.image_cache is not set: give the cache folder, e.g. data.image_cache=/scratch/cache")
    table = load_table(cfg.data, cfg.seed)
    size = model_input_size(cfg)
    cache = ImageCache(cfg.data.image_cache, size, cfg.data.color)
    removed = cache.remove_partial()
    if removed:
        log.info("removed %d partial entries left by an interrupted run", removed)
    sources = sorted(set(table.paths))
    present = [p for p in sources if Path(p).is_file()]
    resize_crop = ImageTransform(size, (0.0,) * 3, (1.0,) * 3).resize_crop
    summary = {"folder": str(cache.folder), "size": size, "images": len(sources), "written": 0, "skipped": 0,
               "missing": len(sources) - len(present), "failed": {}}

    def one(path: str) -> str:
        try:
            return "written" if cache.write(path, resize_crop) else "skipped"
        except (ValueError, OSError) as exc:
            summary["failed"][path] = str(exc)
            return "failed"

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(present), desc="caching", unit="img") as bar:
        for start in range(0, len(present), 1024):
            for outcome in pool.map(one, present[start:start + 1024]):
                if outcome != "failed":
                    summary[outcome] += 1
                bar.update(1)
    return summary

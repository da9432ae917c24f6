"""The pre-resized image cache: ``spft prepare cache`` writes each image once at the model's input size.

This module owns both cache formats (``data.image_cache_format``), their keys, their crash-safe writing and the
redirection of a table's paths to the cached copies. An entry is the output of :meth:`ImageTransform.resize_crop`
(after the grey/RGB conversion of ``spft.data.io``): the model's resize, then the square of side
``Preprocessing.cache_side`` that holds its centre crop (the crop itself for RAD-DINO, 518; 256 around dinov2-base's
224 crop). The full preprocessing of an entry gives the very same pixels as that of the original (resizing it again
is the identity and its centre crop is the original's crop window), so results are identical with or without the
cache, in either format. Keys include the resize, crop and filter (``Preprocessing.geometry``).

``png``: one lossless PNG per image under ``data.image_cache/<size>px-<color>-v<version>/``, named by a hash of the
source path, the size, the colour mode and the preprocessing; written to a temporary file and renamed, so an
interrupted preparation leaves only complete entries. An entry older than its source is stale: read from the source
(with a warning) and rewritten by the next preparation.

``npy``: rows of uint8 arrays (``np.lib.format.open_memmap``, ``[N, size, size]`` grey or ``[N, size, size, 3]``
RGB) under ``data.image_cache/<size>px-<color>-v<version>-npy-<hash of the preprocessing>/``:

- ``part-NNNN.npy``: the rows; a preparation that has new images adds one part (usually there is just one).
- ``part-NNNN.done.npy``: one byte per row, set only after the rows were flushed to disk (replaced atomically), so a
  half-written row is never counted as done; an interrupted preparation resumes into the rows that are not done.
- ``index.json``: source path -> [part, row, file size, mtime_ns] (replaced atomically). A source whose size or
  modification time differs from its entry is stale: read from the source (with a warning) and re-cached by the next
  preparation into a new row.

:meth:`ImageCache.redirect` hands the datasets ``"<part.npy>::<row>"`` paths, which :func:`spft.data.io.load_image`
reads from a memmap opened once per (worker) process; only path strings are pickled to DataLoader workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from spft.atomic import atomic_write_with, open_regular
from spft.data.contract import LabelTable
from spft.data.io import load_image, row_ref
from spft.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Part of every key, with the model's resize/crop/filter (Preprocessing.geometry): entries written by an older
# spft (whose shortest-edge resize rounded instead of truncating like transformers) or for another preprocessing are
# never read back.
PREPROCESSING = "io.load_image + ImageTransform.resize_crop (transformers' PIL resize and centre-crop rounding)"
CACHE_FORMATS = ("png", "npy")
CHUNK = 256  # images per step of a preparation: the npy "done" marks are flushed after each chunk


class ImageCache:
    """Where the cached copy of a source image lives for one (size, colour, format), how to write and read it."""

    def __init__(self, folder: str | os.PathLike, size: int, color: str, fmt: str = "png",
                 geometry: str | None = None):
        """``size``: side of the stored squares (``Preprocessing.cache_side``); ``geometry``: the model's resize,
        crop and filter (``Preprocessing.geometry()``; default: RAD-DINO's rule at ``size``), part of the key."""
        if fmt not in CACHE_FORMATS:
            raise DataError(f"data.image_cache_format must be one of {', '.join(CACHE_FORMATS)}, got {fmt!r}")
        self.size = int(size)
        self.color = color
        self.fmt = fmt
        if geometry is None:
            geometry = f"resize shortest_edge [{self.size}], centre crop [{self.size}, {self.size}], bicubic"
        self.preprocessing = f"{PREPROCESSING}; {geometry}"
        root = Path(folder).expanduser()
        if fmt == "png":
            self.folder = root / f"{self.size}px-{color}-v{CACHE_VERSION}"
            self._npy = None
        else:
            key = f"{self.size}|{color}|{self.preprocessing}|v{CACHE_VERSION}"
            digest = hashlib.sha1(key.encode()).hexdigest()[:8]
            self.folder = root / f"{self.size}px-{color}-v{CACHE_VERSION}-npy-{digest}"
            self._npy = _ArrayStore(self.folder, self.size, color, self.preprocessing)

    # -- png ---------------------------------------------------------------------------------------------------------

    def entry(self, source: str | os.PathLike) -> Path:
        """The PNG cache file of ``source`` (whether or not it exists yet)."""
        key = f"{os.path.abspath(source)}|{self.size}|{self.color}|{self.preprocessing}|v{CACHE_VERSION}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.png"

    def write(self, source: str, resize_crop) -> bool:
        """Write the PNG entry of ``source`` unless a fresh one exists; ``True`` when written. Atomic: temp + rename."""
        target = self.entry(source)
        if _png_fresh(target, source):
            return False
        source_st = os.stat(source)
        image = resize_crop(load_image(source, self.color))

        def not_older_than_source(tmp: Path) -> None:  # a source dated in the future: the entry is not older than it
            if os.stat(tmp).st_mtime_ns < source_st.st_mtime_ns:
                os.utime(tmp, ns=(source_st.st_atime_ns, source_st.st_mtime_ns))

        atomic_write_with(target, lambda fh: image.save(fh, format="PNG", compress_level=1),
                          before_rename=not_older_than_source)
        return True

    # -- both formats ------------------------------------------------------------------------------------------------

    def fill(self, sources: list[str], resize_crop, workers: int | None = None, progress=None) -> dict:
        """Cache every file of ``sources`` that is not cached yet (or is stale), with ``workers`` threads.

        Returns ``{"written", "skipped", "stale", "failed": {path: error}}``; ``progress(n)`` is called as images
        are done. Resumable: what an interrupted call completed is skipped by the next one.
        """
        workers = workers or min(8, os.cpu_count() or 1)
        progress = progress or (lambda n: None)
        if self._npy is not None:
            return self._npy.fill(sources, resize_crop, workers, progress)
        summary = {"written": 0, "skipped": 0, "stale": 0, "failed": {}}
        summary["stale"] = sum(1 for p in sources if self.entry(p).is_file() and not _png_fresh(self.entry(p), p))

        def one(path: str) -> str:
            try:
                return "written" if self.write(path, resize_crop) else "skipped"
            except (ValueError, OSError) as exc:
                summary["failed"][path] = str(exc)
                return "failed"

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(sources), CHUNK):
                chunk = sources[start:start + CHUNK]
                for outcome in pool.map(one, chunk):
                    if outcome != "failed":
                        summary[outcome] += 1
                progress(len(chunk))
        return summary

    def redirect(self, table: LabelTable) -> LabelTable:
        """``table`` with each path replaced by its cached copy where a fresh one exists (the others read the
        original). For ``npy`` the copies are ``"<part.npy>::<row>"`` strings that ``load_image`` reads."""
        if self._npy is not None:
            found = self._npy.lookup(table.paths)
        else:
            found = {}
            for path in table.paths:
                cached = self.entry(path)
                if cached.is_file():
                    found[path] = str(cached) if _png_fresh(cached, path) else None
        paths, hits, stale = [], 0, 0
        for path in table.paths:
            cached = found.get(path)
            stale += path in found and cached is None
            hits += cached is not None
            paths.append(cached or path)
        if stale:
            log.warning("image cache %s: %d images changed since they were cached and are read from the originals "
                        "(run `spft prepare cache CONFIG` to refresh them)", self.folder, stale)
        if hits < len(paths) - stale:
            log.warning("image cache %s: %d of %d images are not prepared and are read from the originals (run "
                        "`spft prepare cache CONFIG` to complete it)", self.folder, len(paths) - hits - stale,
                        len(paths))
        elif not stale:
            log.info("image cache %s: all %d images read pre-resized", self.folder, hits)
        return dataclasses.replace(table, paths=paths)

    def remove_partial(self) -> int:
        """Delete what an interrupted preparation left behind (temporary files, unindexed parts); returns how many."""
        if self._npy is not None:
            return self._npy.remove_partial()
        # temp files: ``.<entry>.<random>.tmp`` (spft.atomic), ``<entry>.tmp<pid>-<thread>`` from older versions
        stale = [p for p in self.folder.glob("*/*") if ".tmp" in p.name] if self.folder.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


def _png_fresh(entry: Path, source: str | os.PathLike) -> bool:
    """The PNG entry exists and was written after the source's last modification (an unreadable source: trusted)."""
    try:
        written = entry.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    try:
        return written >= os.stat(source).st_mtime_ns
    except OSError:
        return True  # the source is gone: redirect keeps the entry, as before; preparation skips missing sources


# -- npy -------------------------------------------------------------------------------------------------------------

_PART = re.compile(r"part-(\d{4,})\.npy")


def _source_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class _ArrayStore:
    """The ``npy`` format of :class:`ImageCache`: parts of rows, their done marks, and the index (see module doc)."""

    def __init__(self, folder: Path, size: int, color: str, preprocessing: str = PREPROCESSING):
        self.folder = folder
        self.size = size
        self.color = color
        self.preprocessing = preprocessing
        self.index_path = folder / "index.json"
        self.row_shape = (size, size) if color == "grey" else (size, size, 3)

    # reading -----------------------------------------------------------------------------------------------------

    def load_index(self) -> dict[str, list]:
        """``{source: [part, row, file size, mtime_ns]}``; empty when there is no index yet."""
        if not self.index_path.is_file():
            return {}
        try:
            data = json.loads(self.index_path.read_text())
            header = (data["version"], data["size"], data["color"], data["preprocessing"])
            entries = data["entries"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"image cache index {self.index_path} is unreadable ({exc}): delete {self.folder} and "
                             f"run `spft prepare cache` again") from exc
        expected = (CACHE_VERSION, self.size, self.color, self.preprocessing)
        if header != expected:
            raise DataError(f"image cache index {self.index_path} is for (version, size, color, preprocessing) "
                             f"{header}, expected {expected}: delete {self.folder} and run `spft prepare cache` again")
        return entries

    def part_path(self, part: int) -> Path:
        return self.folder / f"part-{part:04d}.npy"

    def done_path(self, part: int) -> Path:
        return self.folder / f"part-{part:04d}.done.npy"

    def open_part(self, part: int, mode: str = "r") -> tuple[np.ndarray, np.ndarray]:
        """(rows memmap, done marks) of a part. Raises ValueError naming the file when it is corrupt or truncated."""
        path, done_path = self.part_path(part), self.done_path(part)
        try:
            rows = np.lib.format.open_memmap(path, mode=mode)
        except FileNotFoundError:
            raise DataError(f"image cache array {path} is missing: run `spft prepare cache` again") from None
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"image cache array {path} is corrupt or truncated ({exc}): run `spft prepare cache` "
                             f"again to rewrite its images") from exc
        if rows.dtype != np.uint8 or rows.shape[1:] != self.row_shape:
            raise DataError(f"image cache array {path} holds {rows.dtype} rows of {list(rows.shape[1:])}, expected "
                             f"uint8 {list(self.row_shape)}: run `spft prepare cache` again to rewrite its images")
        try:
            done = np.load(done_path) if done_path.is_file() else np.zeros(rows.shape[0], np.uint8)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"image cache marks {done_path} are corrupt ({exc}): run `spft prepare cache` "
                             f"again") from exc
        if done.shape != (rows.shape[0],):
            raise DataError(f"image cache marks {done_path} have shape {done.shape}, expected ({rows.shape[0]},): "
                             f"run `spft prepare cache` again")
        return rows, done

    def lookup(self, paths: list[str]) -> dict[str, str | None]:
        """For each path with a done entry: its row reference when fresh, ``None`` when its source changed.

        Raises:
            ValueError: The index or an array it refers to is corrupt or truncated (naming the file).
        """
        entries = self.load_index()
        done_of: dict[int, np.ndarray] = {}
        found: dict[str, str | None] = {}
        for path in paths:
            entry = entries.get(os.path.abspath(path))
            if entry is None:
                continue
            part, row, size, mtime = entry
            if part not in done_of:
                done_of[part] = self.open_part(part)[1]
            if not (row < len(done_of[part]) and done_of[part][row]):
                continue
            try:
                fresh = _source_key(path) == (size, mtime)
            except OSError:
                continue  # the source is gone: read it "from the original", which fails as it would uncached
            found[path] = row_ref(self.part_path(part), row) if fresh else None
        return found

    # writing -----------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        """One preparation at a time per store (an advisory lock; a no-op where fcntl is missing)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # Windows
            yield
            return
        with os.fdopen(open_regular(self.folder / ".lock", os.O_WRONLY | os.O_CREAT), "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RuntimeError(f"another `spft prepare cache` is writing {self.folder}: wait for it to "
                                   f"finish") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_index(self, entries: dict[str, list]) -> None:
        data = {"version": CACHE_VERSION, "size": self.size, "color": self.color, "preprocessing": self.preprocessing,
                "entries": entries}
        atomic_write_with(self.index_path, lambda fh: fh.write(json.dumps(data).encode()))

    def _write_done(self, part: int, done: np.ndarray) -> None:
        atomic_write_with(self.done_path(part), lambda fh: np.save(fh, done))

    def remove_partial(self) -> int:
        """Delete temporary files and parts the index does not refer to (a preparation killed before its index)."""
        if not self.folder.is_dir():
            return 0
        with self._locked():
            return self._remove_partial()

    def _remove_partial(self) -> int:
        try:
            used = {entry[0] for entry in self.load_index().values()}
        except ValueError:
            return 0  # an unreadable index: leave everything for the user to look at
        removed = 0
        for path in self.folder.iterdir():
            match = _PART.fullmatch(path.name.replace(".done.npy", ".npy"))
            if ".tmp" in path.name or (match and int(match.group(1)) not in used):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def fill(self, sources: list[str], resize_crop, workers: int, progress) -> dict:
        with self._locked():
            self._remove_partial()
            return self._fill(sources, resize_crop, workers, progress)

    def _fill(self, sources: list[str], resize_crop, workers: int, progress) -> dict:
        summary = {"written": 0, "skipped": 0, "stale": 0, "failed": {}}
        entries = self.load_index()
        parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for part in sorted({entry[0] for entry in entries.values()}):
            try:
                parts[part] = self.open_part(part, mode="r+")
            except ValueError as exc:  # e.g. a truncated array: forget its rows, they are written again below
                log.warning("%s; its images are cached again", exc)
                entries = {k: v for k, v in entries.items() if v[0] != part}
        todo: list[tuple[str, tuple[int, int]]] = []  # (source, key) of rows to (re)write
        resume: dict[str, list] = {}
        for path in sources:
            try:
                key = _source_key(path)
            except OSError as exc:
                summary["failed"][path] = f"cannot read {path}: {exc}"
                continue
            entry = entries.get(os.path.abspath(path))
            if entry is not None and tuple(entry[2:]) == key:
                if parts[entry[0]][1][entry[1]]:
                    summary["skipped"] += 1
                else:
                    resume[path] = entry  # assigned by an interrupted run, never completed
                    todo.append((path, key))
                continue
            summary["stale"] += entry is not None
            todo.append((path, key))
        progress(summary["skipped"])
        new = [(path, key) for path, key in todo if path not in resume]
        if new:  # one new part for every image without a usable row; the index says where each goes
            part = max([*parts, -1]) + 1
            rows = np.lib.format.open_memmap(self.part_path(part), mode="w+", dtype=np.uint8,
                                             shape=(len(new), *self.row_shape))
            done = np.zeros(len(new), np.uint8)
            self._write_done(part, done)
            parts[part] = (rows, done)
            for row, (path, key) in enumerate(new):
                entries[os.path.abspath(path)] = [part, row, *key]
            self._write_index(entries)
        if not todo:
            return summary

        def one(item: tuple[str, tuple[int, int]]) -> tuple[int, int] | None:
            path, key = item
            part, row = entries[os.path.abspath(path)][:2]
            try:
                image = resize_crop(load_image(path, self.color))
                pixels = np.asarray(image)
                if pixels.shape != self.row_shape:
                    raise DataError(f"resize_crop gave {list(pixels.shape)}, expected {list(self.row_shape)}")
                if _source_key(path) != key:
                    raise DataError(f"{path} changed while it was being cached")
                parts[part][0][row] = pixels
                return part, row
            except (ValueError, OSError) as exc:
                summary["failed"][path] = str(exc)
                return None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start:start + CHUNK]
                written = [r for r in pool.map(one, chunk) if r is not None]
                touched = sorted({part for part, _ in written})
                for part in touched:  # rows on disk first, then their done marks: never a half row marked done
                    parts[part][0].flush()
                for part, row in written:
                    parts[part][1][row] = 1
                for part in touched:
                    self._write_done(part, parts[part][1])
                summary["written"] += len(written)
                progress(len(chunk))
        return summary


def model_preprocessing(cfg):
    """The model's :class:`~spft.models.encoders.Preprocessing` as training computes it (its image processor,
    ``data.image_size``), without loading the weights."""
    from spft.models.encoders import preprocessing_for

    return preprocessing_for(cfg.model.name, SimpleNamespace(config=_model_config(cfg.model)), cfg.data.image_size)


def model_input_size(cfg) -> int:
    """The model's input size as training computes it (``data.image_size``, else the model's preprocessing)."""
    return model_preprocessing(cfg).size


def _model_config(model_cfg):
    """The transformers config of the model (no weights loaded), or ``None`` when it cannot be read."""
    from transformers import AutoConfig

    from spft.models.foundation import resolve_model_name

    name = resolve_model_name(model_cfg.name)  # a built-in spft: name -> its cached folder
    try:
        if name is None:
            mapping = dict(model_cfg.config or {})
            return AutoConfig.for_model(mapping.pop("model_type"), **mapping)
        return AutoConfig.from_pretrained(name, **(model_cfg.config or {}))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cannot read the config of %s (%s): size from the preprocessing defaults", model_cfg.name, exc)
        return None


def image_cache_for(cfg, prep=None) -> ImageCache:
    """The :class:`ImageCache` of ``cfg.data`` (``data.image_cache``, ``data.color``, ``data.image_cache_format``)
    for the model's preprocessing ``prep`` (a ``Preprocessing``; anything else: computed from ``cfg``).

    Raises:
        ConfigError: The preprocessing cannot be cached (``Preprocessing.cache_side`` is ``None``).
    """
    from spft.models.encoders import Preprocessing

    if not isinstance(prep, Preprocessing):
        prep = model_preprocessing(cfg)
    if prep.cache_side is None:
        raise ConfigError(f"data.image_cache: the image cache cannot store this preprocessing ({prep.geometry()}: "
                          "the crop pads the resized image or the output is not square); unset data.image_cache")
    return ImageCache(cfg.data.image_cache, prep.cache_side, cfg.data.color, cfg.data.image_cache_format,
                      geometry=prep.geometry())


def prepare_cache(cfg, workers: int | None = None) -> dict:
    """Write the cache entries of every present image of ``cfg.data`` (resumable); returns a summary dict.

    Raises:
        ValueError: ``data.image_cache`` is not set, or ``data.image_cache_format`` is not png/npy.
    """
    from tqdm import tqdm

    from spft.data.registry import load_table
    from spft.data.transforms import ImageTransform

    if not cfg.data.image_cache:
        raise DataError("data.image_cache is not set: give the cache folder, e.g. data.image_cache=/scratch/cache")
    from spft.data.io import set_max_pixels

    set_max_pixels(cfg.data.max_image_pixels)  # DICOM, decompression bombs: read as training reads them
    table = load_table(cfg.data, cfg.seed)
    prep = model_preprocessing(cfg)
    cache = image_cache_for(cfg, prep)
    size = cache.size
    removed = cache.remove_partial()
    if removed:
        log.info("removed %d partial entries left by an interrupted run", removed)
    sources = sorted(set(table.paths))
    present = [p for p in sources if Path(p).is_file()]
    resize_crop = ImageTransform(prep).resize_crop  # resize + the square of side cache.size holding the crop
    with tqdm(total=len(present), desc="caching", unit="img") as bar:
        filled = cache.fill(present, resize_crop, workers, bar.update)
    if filled["stale"]:
        log.warning("image cache %s: %d images changed since they were cached and were cached again", cache.folder,
                    filled["stale"])
    return {"folder": str(cache.folder), "size": size, "format": cache.fmt, "images": len(sources),
            "written": filled["written"], "skipped": filled["skipped"], "stale": filled["stale"],
            "missing": len(sources) - len(present), "failed": filled["failed"]}

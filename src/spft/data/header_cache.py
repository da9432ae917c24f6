"""Remembers which images passed the check before training (``data.check_images``), so a second start skips them.

The image check of :func:`spft.data.check.scan_images` opens every file (a header and its last bytes; ~70 s for the
112,120 images of ChestX-ray14 on 2 cores). A file that passed it and has not changed since passes it again, so
this cache keeps, per good file, its size and modification time (``st_mtime_ns``) as they were *before* it was
read: a start then only ``stat``s the files and checks the new or changed ones (a touched, rewritten or truncated
file has another size or mtime). Bad files are never recorded, so they are reported at every start. A file
modified within the last seconds before the check is not recorded either (as git does with "racily clean"
entries): the file system's clock is coarse, so a same-size rewrite right after the check could keep its mtime.

One JSON file per (check mode, pixel limit, folder holding the images) under ``$SPFT_CACHE/image_checks/``, paths
relative to that folder. It is written atomically (:mod:`spft.atomic`) under a lock beside it
(:func:`spft.filelock.exclusive`): concurrent starts merge what each of them checked and never leave a partial
file. An unreadable or damaged cache file is ignored with a warning (everything is checked) and rewritten; a cache
that cannot be written (read-only) is a warning, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from spft.data.registry import cache_root

log = logging.getLogger(__name__)

HEADER_CACHE_VERSION = 1
RACY_NS = 2_000_000_000  # files modified this recently before their check are checked again next time


def _common_folder(paths: list[str]) -> str:
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    try:
        return os.path.commonpath(sorted(folders)) if folders else ""
    except ValueError:  # paths on different drives (Windows)
        return ""


class HeaderCache:
    """The good files of one image check (``mode``: header | decode, ``limit``: the pixel limit) under one folder."""

    def __init__(self, paths: list[str], mode: str, limit: int | None, folder: str | Path | None = None):
        self.mode, self.limit = mode, limit
        self.root = _common_folder(paths)
        meta = {"version": HEADER_CACHE_VERSION, "mode": mode, "limit": limit, "root": self.root}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
        self.file = (Path(folder) if folder else cache_root() / "image_checks") / f"{key}.json"
        self.meta = meta
        self._started: int | None = None  # when unchanged() stat-ed the files (time.time_ns())

    def _rel(self, path: str) -> str:
        absolute = os.path.abspath(path)
        prefix = self.root.rstrip(os.sep) + os.sep
        return absolute[len(prefix):] if self.root and absolute.startswith(prefix) else absolute

    def load(self, warn: bool = True) -> dict[str, list[int]]:
        """``{relative path: [size, mtime_ns]}`` of the files known good; empty when there is no usable cache."""
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if warn:
                log.warning("image check cache %s is unreadable (%s): checking every image, then rewriting it",
                            self.file, exc)
            return {}
        try:
            data = json.loads(text)
            good = data["good"]
            if {k: data.get(k) for k in self.meta} != self.meta or not isinstance(good, dict):
                raise ValueError("made for another check")
            return {str(k): [int(v[0]), int(v[1])] for k, v in good.items()}
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            if warn:
                log.warning("image check cache %s is damaged (%s): checking every image, then rewriting it",
                            self.file, exc)
            return {}

    def unchanged(self, paths: list[str]) -> tuple[list[str], dict[str, list[int]]]:
        """``(to_check, signatures)``: the paths not known good with their current size and mtime (``stat``ed
        now, before anything reads them), and those signatures by path (absent: the file could not be stat-ed)."""
        import time

        known = self.load()
        self._started = time.time_ns()
        todo, signatures = [], {}
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                todo.append(path)  # missing, or a row of an npy image cache: the check itself says
                continue
            signature = [st.st_size, st.st_mtime_ns]
            if known.get(self._rel(path)) == signature:
                continue
            todo.append(path)
            signatures[path] = signature
        return todo, signatures

    def remember(self, good: dict[str, list[int]], bad: list[str] = ()) -> None:
        """Add ``good`` (path -> signature before its check) and forget ``bad``, merged with what other processes
        wrote meanwhile; a failed write is a warning."""
        import time

        recent = (self._started or time.time_ns()) - RACY_NS
        good = {p: s for p, s in good.items() if s[1] < recent}
        if not good and not bad:
            return
        from spft.atomic import atomic_write_with
        from spft.errors import SpftError
        from spft.filelock import exclusive

        try:
            with exclusive(self.file.with_suffix(".lock"), "updating the image check cache"):
                entries = self.load(warn=False)
                for path in bad:
                    entries.pop(self._rel(path), None)
                entries.update({self._rel(p): s for p, s in good.items()})
                payload = json.dumps({**self.meta, "good": entries}, separators=(",", ":")).encode()
                atomic_write_with(self.file, lambda fh: fh.write(payload), injectable=False)
        except (SpftError, OSError) as exc:
            log.warning("image check cache: cannot write %s (%s); the next start checks the images again",
                        self.file, exc)

"""The on-disk side of the stage-1 feature cache: one folder per key, a size cap with least-recently-used eviction,
and what ``spft cache list|clean`` shows and removes.

Entries live in ``$SPFT_CACHE/features/<key>/`` (``train.npy``, ``val.npy``, ``meta.json``); the folder's
modification time is stamped on every read and write, and is what "least recently used" means. After an entry is
written, the oldest other entries are removed until the whole store fits in the cap: ``SPFT_CACHE_MAX_GB``
(default 50; ``0`` or ``none`` for no cap). Everything here is derived data, so removing it costs only recomputation.
Standard library only: ``spft cache`` must not import torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from spft.errors import ConfigError
from spft.filelock import exclusive

log = logging.getLogger(__name__)

MAX_GB_ENV = "SPFT_CACHE_MAX_GB"
DEFAULT_MAX_GB = 50.0


@dataclass(frozen=True)
class Entry:
    key: str
    folder: Path
    bytes: int
    last_used: float
    meta: dict


def store_root() -> Path:
    from spft.data.registry import cache_root

    return cache_root() / "features"


def max_bytes() -> int | None:
    """The cap from ``$SPFT_CACHE_MAX_GB`` (default 50 GB); ``None`` when switched off."""
    raw = os.environ.get(MAX_GB_ENV, "").strip().lower()
    if raw in ("", "default"):
        return int(DEFAULT_MAX_GB * 1e9)
    if raw in ("0", "none", "off", "inf"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"${MAX_GB_ENV}: expected a number of GB (or 0 / none for no cap), got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"${MAX_GB_ENV}: expected a non-negative number of GB, got {raw!r}")
    return int(value * 1e9)


def touch(folder: Path) -> None:
    """Stamp an entry as used now (best effort: a read-only cache still serves reads)."""
    try:
        os.utime(folder)
    except OSError:
        pass


def write_meta(folder: Path, meta: dict) -> None:
    from spft.atomic import atomic_write_json

    atomic_write_json(folder / "meta.json", {**meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def entries(root: Path | None = None) -> list[Entry]:
    """Every entry of the store, least recently used first."""
    root = Path(root) if root else store_root()
    found = []
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            meta = {}
        found.append(Entry(folder.name, folder, size, folder.stat().st_mtime, meta))
    return sorted(found, key=lambda e: e.last_used)


def evict(limit: int | None, keep: tuple[str, ...] = (), root: Path | None = None) -> list[Entry]:
    """Remove least-recently-used entries (never those in ``keep``, nor one another process is writing: its
    ``<key>.lock`` is held) until the store holds at most ``limit`` bytes."""
    if limit is None:
        return []
    current = entries(root)
    total = sum(e.bytes for e in current)
    removed = []
    for entry in current:
        if total <= limit:
            break
        if entry.key in keep:
            continue
        with exclusive(entry.folder.with_name(entry.key + ".lock"), wait=False) as free:
            if not free:  # another run is writing this entry right now
                continue
            shutil.rmtree(entry.folder, ignore_errors=True)
        total -= entry.bytes
        removed.append(entry)
        log.info("feature cache: removed %s (%.1f MB, least recently used) to stay under %.1f GB", entry.folder,
                 entry.bytes / 1e6, limit / 1e9)
    return removed


def format_entries(items: list[Entry]) -> str:
    lines = [f"{'key':<32}  {'size':>9}  {'last used':<19}  splits  what"]
    for e in reversed(items):  # most recent first
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used))
        splits = ",".join(sorted(p.stem for p in e.folder.glob("*.npy"))) or "-"
        what = e.meta.get("describe", "")
        lines.append(f"{e.key:<32}  {e.bytes / 1e6:>7.1f}MB  {used:<19}  {splits:<6}  {what}")
    total = sum(e.bytes for e in items)
    cap = max_bytes()
    lines.append(f"{len(items)} entr{'y' if len(items) == 1 else 'ies'}, {total / 1e9:.2f} GB "
                 f"(cap {'none' if cap is None else f'{cap / 1e9:g} GB'}: ${MAX_GB_ENV})")
    return "\n".join(lines)

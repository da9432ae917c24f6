"""One process at a time on a shared cache entry: ``with exclusive(folder / "<key>.lock"):``.

Concurrent runs (``spft repeat --jobs N``, several jobs of one user) share ``$SPFT_CACHE``: the phantom sets and the
stage-1 feature entries. Whoever builds an entry holds an exclusive ``fcntl.flock`` on a lock file beside it; the
others wait, then find the finished entry and read it (entries are written atomically, so a reader never sees a
partial file either way). The kernel releases the lock when its holder dies (kill -9), so a dead process never
blocks. The lock file is removed on release, while still held; a waiter that then holds a lock on the removed file
notices (its path names another file, or none) and locks again — the usual way to make delete-on-release safe with
``flock``, as :class:`spft.experiments.lock.RunLock` does. Standard library only (``spft cache`` uses it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from spft.atomic import open_regular

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "", wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if needed, removed on release) for the ``with`` block.

    Args:
        path: the lock file, e.g. ``<cache>/<key>.lock`` beside the entry it guards.
        what: what the holder is doing, for the one line logged when this process has to wait.
        wait: ``False``: do not wait; yields ``False`` when another process holds the lock.

    Yields ``True`` while this process holds the lock. Where the lock file cannot be created (a read-only cache),
    it yields ``True`` without a lock: nothing can be written there by anyone, so there is nothing to coordinate.
    """
    path = Path(path)
    fd = _acquire(path, what, wait)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        if fd >= 0:
            try:
                path.unlink(missing_ok=True)  # while still holding it: a waiter then locks a fresh file
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _acquire(path: Path, what: str, wait: bool) -> int | None:
    """The locked descriptor; ``None`` when ``wait`` is false and the lock is held; ``-1`` when it cannot exist."""
    told = False
    for _ in range(1000):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_regular(path, os.O_RDWR | os.O_CREAT)  # a link planted in the cache is never followed
        except OSError as exc:  # incl. the RunDirError of a link or special file
            log.debug("no lock at %s (%s): going on without one", path, exc)
            return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(fd)
                return None
            if not told:
                log.info("waiting for another process %s (%s)", what or "holding the lock", path)
                told = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file between our open and our lock: lock the new one
    raise RuntimeError(f"could not lock {path}: it keeps being replaced by another process")

"""One writer per run directory: an exclusive ``run.lock`` held for the whole of train, resume or evaluate.

The lock is ``fcntl.flock`` on ``RUN_DIR/run.lock``, so the kernel releases it when the holder dies (kill -9, power
loss on a local disk): a lock from a dead process never blocks. The file records the holder (PID, host, command,
start time) for the message the second process prints; it is removed on release. The lock file is opened without
following links, and the folder is refused when it holds a link or special file (:func:`spft.atomic.check_tree`):
a run or sweep directory from elsewhere must not make spft write outside it. After taking the lock the holder
checks that the path still names the file it locked (another process may have removed it in between) and retries
if not — the usual way to make delete-on-release safe with ``flock``.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from spft.atomic import check_tree, open_regular
from spft.distributed import secondary_rank
from spft.errors import RunDirError

LOCK = "run.lock"
log = logging.getLogger(__name__)


class RunLock:
    """``with RunLock(run_dir, "train"):`` — the second process raises :class:`RunDirError` naming the holder."""

    def __init__(self, run_dir: str | Path, purpose: str):
        self.path = Path(run_dir) / LOCK
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)  # never through a link planted there
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirError(f"{self.path.parent} is in use by {holder(self.path)}; wait for it to finish or "
                                  "stop that process (one writer per run directory)") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                try:
                    check_tree(self.path.parent)  # nothing in the folder may lead a write outside it
                except BaseException:
                    self.release()
                    raise
                self._write_owner()
                return self
            os.close(fd)  # the file was removed by its previous holder between our open and our lock: try again
        raise RunDirError(f"could not lock {self.path}: it keeps being replaced by another process")

    def _write_owner(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(owner) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiter then finds a fresh file
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(lock_file: str | Path) -> str:
    """``PID 123 on host (train since 2026-...)`` from a lock file, as far as it can be read."""
    try:
        owner = json.loads(Path(lock_file).read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (f"PID {owner.get('pid', '?')} on {owner.get('host', '?')} ({owner.get('purpose', '?')} since "
            f"{owner.get('started', '?')})")


def held_by(run_dir: str | Path) -> str | None:
    """Who holds ``run_dir``'s lock now (``PID 123 on host (train since ...)``), or ``None`` when nobody does.

    A probe: the lock is taken and given back at once, without removing the file. A sweep asks before starting a
    run, so a run whose previous process is still stopping (e.g. after ``kill -9`` of the sweep that started it) is
    waited for instead of failing with "in use"."""
    path = Path(run_dir) / LOCK
    try:
        fd = open_regular(path, os.O_RDWR)
    except OSError:  # no lock file (nobody holds it), or a link / special file that the run itself will refuse
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder(path)
    finally:
        os.close(fd)  # closing drops a lock we took
    return None


_HELD: dict[Path, RunLock] = {}


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def lock_run(run_dir: str | Path, purpose: str, read_only_ok: bool = False) -> None:
    """Hold ``run_dir``'s lock until :func:`release_run_locks` or the end of this process (re-entrant per process).

    ``run_dir`` must exist (a command on an existing run never creates its folder). A read-only run (an archive, a
    read-only mount) cannot be locked: with ``read_only_ok`` (``spft evaluate RUN --out ELSEWHERE``, which only
    reads it) the command goes on unlocked — nothing can write there, so there is nothing to guard; otherwise one
    line says the folder is read-only. Under DDP only global rank 0 locks: the other ranks write into the same run
    on its behalf.
    """
    from spft.errors import MissingFileError

    folder = Path(run_dir)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a run directory (no such folder)")
    key = folder.resolve()
    if key in _HELD or secondary_rank():
        return
    try:
        lock = RunLock(run_dir, purpose).acquire()
    except OSError as exc:
        if isinstance(exc, RunDirError) or exc.errno not in _READ_ONLY:
            raise
        if read_only_ok:
            log.info("%s is read-only: reading it without its run lock", folder)
            return
        raise RunDirError(f"{folder} is read-only ({exc.strerror}): {purpose} writes into the run — copy it to a "
                          "writable folder first (run directories can be moved), or for evaluate give --out "
                          "ELSEWHERE") from None
    if not _HELD:
        atexit.register(release_run_locks)
    _HELD[key] = lock


def _forget_in_forked_child() -> None:
    """A forked child (a DataLoader worker) drops its copy of every run lock's descriptor, without unlocking.

    ``flock`` belongs to the open file, which a forked child shares: if workers kept their copies, a ``kill -9`` of
    ``spft train`` would leave the run locked until its orphaned workers noticed and exited (seconds), and an
    immediate ``--resume`` would be refused. Closing the child's copy leaves the parent's lock as it is."""
    for lock in _HELD.values():
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_forked_child)


def release_run_locks() -> None:
    """Release every run lock this process holds (the CLI calls it when a command ends)."""
    while _HELD:
        _HELD.popitem()[1].release()

"""Atomic file writes, the one implementation every file spft writes goes through: the bytes go to a temp file
beside the target (``.<name>.<random>.tmp``), are fsynced, and the temp file is renamed onto the target
(``os.replace``), so a crash, a kill or a full disk never leaves a truncated file under the real name — the reader
sees the old file or the new one. A full or read-only disk becomes one :class:`~spft.errors.StorageError` naming
the file. :func:`clean_temp_files` removes the temp files a killed process left.

Also here: :func:`fault_point`, the fault-injection hook every atomic write passes (``SPFT_FAULT_POINT``), and the
rule for files that are opened in place rather than replaced (lock files, appended logs and queues):
:func:`open_regular` never follows a symbolic link and refuses anything but a regular file, and
:func:`check_tree` refuses a run, sweep or export folder holding a link or a special file — a run directory from
elsewhere (a colleague's share, an archive) is untrusted data and must never make spft write outside it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spft.csvsafe import write_rows

_UMASK = os.umask(0)
os.umask(_UMASK)

FAULT_POINT_ENV = "SPFT_FAULT_POINT"
FAULT_LOG_ENV = "SPFT_FAULT_LOG"
_writes = 0  # atomic writes this process has made, counted for the fault-injection hook


def fault_point(path: Path) -> None:
    """Test hook (fault injection): with ``SPFT_FAULT_POINT=N`` the process SIGKILLs itself during its N-th atomic
    write — after the data went to the temp file, before it is synced and renamed — as a power cut or the OOM
    killer would. Every file spft writes (checkpoints, stage-1 features, history, JSON records) passes here.
    Used by tests/test_faults.py and scripts/fault_inject.py; unset, it costs one dictionary lookup.

    ``SPFT_FAULT_LOG=FILE`` (only when set) appends each counted write's path to FILE, one line per write, in the
    order of the count: the harness runs its reference with it to learn how many writes a run makes, and which, so
    its write kills can be spread over the whole run."""
    global _writes
    target = os.environ.get(FAULT_POINT_ENV)
    log = os.environ.get(FAULT_LOG_ENV)
    if not target and not log:
        return
    _writes += 1
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{path}\n")
    if target and _writes == int(target):
        import signal

        sys.stderr.write(f"spft: fault injection: SIGKILL during write {_writes} ({path})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def write_temp(path: str | Path, write: Callable, injectable: bool = True) -> Path:
    """Call ``write(file)`` on a new temp file beside ``path`` and fsync it; returns the temp file (not yet renamed).

    The temp name is ``.<name>.<random>.tmp`` (:func:`clean_temp_files` removes those a killed process left). A full
    or read-only disk becomes a :class:`~spft.errors.StorageError` naming ``path``, and the temp file is removed.
    ``injectable=False`` keeps the write out of :func:`fault_point`'s count (generated demo data, which a run makes
    only when it is missing: the write numbers of a run must not depend on it).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise storage_error(path, exc) from exc
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if injectable:
                fault_point(path)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _is_storage_failure(exc):
            raise storage_error(path, exc) from exc
        raise
    return Path(tmp)


def move_into_place(tmp: str | Path, path: str | Path, sync: bool = False) -> None:
    """``os.replace`` the finished temp file ``tmp`` onto ``path`` (``sync``: fsync it first, for a file another
    library wrote, e.g. Ultralytics' checkpoints). On failure the temp file is removed and a full or read-only disk
    is a :class:`~spft.errors.StorageError`."""
    tmp, path = Path(tmp), Path(path)
    try:
        if sync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, exc) from exc


def atomic_write_with(path: str | Path, write: Callable, before_rename: Callable[[Path], None] | None = None,
                      injectable: bool = True) -> None:
    """Call ``write(file)`` on a temp file in ``path``'s folder, fsync, then ``os.replace`` it onto ``path``
    (``before_rename(temp_path)`` runs in between, e.g. to set the file's times; ``injectable``: see
    :func:`write_temp`)."""
    tmp = write_temp(path, write, injectable)
    if before_rename is not None:
        try:
            before_rename(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    move_into_place(tmp, path)


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def _is_storage_failure(exc: BaseException) -> bool:
    """An OSError of a full / read-only disk, or torch.save's RuntimeError for a failed write ("unexpected pos")."""
    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_ERRNOS
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("unexpected pos" in text or "file write failed" in text)


def storage_error(path: Path, exc: BaseException):
    """The :class:`~spft.errors.StorageError` for a failed write of ``path``: full disk, read-only, or other."""
    from spft.errors import StorageError

    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError(f"cannot write {path}: {exc.strerror or exc} (read-only or no permission)")
    if not isinstance(exc, OSError) or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageError(f"no space left writing {path}; the previous version of the file is kept — free space "
                            "and resume (spft train --resume RUN_DIR)")
    return StorageError(f"cannot write {path}: {exc}")


def clean_temp_files(folder: str | Path) -> list[Path]:
    """Remove the ``.*.tmp`` files a killed write left in ``folder`` and its subfolders; returns what was removed."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes, injectable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    atomic_write_with(path, lambda fh: fh.write(data), injectable=injectable)


def atomic_write_text(path: str | Path, text: str, injectable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), injectable)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    buf = io.StringIO()
    names = list(fieldnames or (rows[0] if rows else []))
    for row in rows:  # later rows may add columns (e.g. a refinement); keep the union, in order
        names += [k for k in row if k not in names]
    write_rows(buf, rows, names)  # text cells escaped against formula injection (spft.csvsafe)
    atomic_write_text(path, buf.getvalue())


def atomic_write_image(path: str | Path, image, format: str = "PNG", **options) -> None:
    """Save a PIL ``image`` atomically (``format`` and ``options`` as ``Image.save`` takes them)."""
    atomic_write_with(path, lambda fh: image.save(fh, format=format, **options))


def _unsafe(path: Path, what: str):
    from spft.errors import RunDirError

    return RunDirError(f"{path} is {what}: spft never follows links or writes to special files inside a run, sweep "
                       "or cache folder (one from elsewhere could point anywhere) — remove it and run again")


def open_regular(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags)`` for a file opened in place (a lock, an appended log or queue), never through a link.

    ``O_NOFOLLOW`` refuses a symbolic link at ``path`` (``ln -s ~/victim RUN/run.lock`` must not truncate the victim);
    ``O_NONBLOCK`` keeps a FIFO planted there from blocking the open, and anything that is not a regular file is
    refused. Both refusals are one :class:`~spft.errors.RunDirError` naming the file. Returns a blocking descriptor."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _unsafe(path, "a symbolic link") from None
        if exc.errno == errno.ENXIO:  # O_WRONLY on a FIFO without a reader
            raise _unsafe(path, "not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _unsafe(path, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def open_append(path: str | Path, encoding: str | None = "utf-8"):
    """``open(path, "a")`` through :func:`open_regular` (text with ``encoding``, binary with ``None``)."""
    fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    return os.fdopen(fd, "a" if encoding else "ab", encoding=encoding)


def check_tree(folder: str | Path) -> None:
    """Refuse ``folder`` when anything below it (``folder`` itself may be a link) is a symbolic link leading outside
    it, or a special file: every write spft makes there — atomic replaces, Lightning's and TensorBoard's logs,
    Ultralytics' files — would otherwise land wherever the link points. A link whose final target (every link in the
    chain followed) lies inside ``folder`` is harmless and kept: submitit leaves one beside each job it submits. One
    :class:`~spft.errors.RunDirError` naming the entry."""
    root = Path(folder)
    if not root.is_dir():
        return
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):  # never follows links to folders
        for name in (*dirnames, *filenames):
            entry = Path(dirpath) / name
            try:
                mode = os.lstat(entry).st_mode
            except FileNotFoundError:  # removed meanwhile (a temp file another process renamed)
                continue
            if stat.S_ISLNK(mode):
                if not entry.resolve().is_relative_to(real_root):
                    raise _unsafe(entry, "a symbolic link leading outside the folder")
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _unsafe(entry, "not a regular file")

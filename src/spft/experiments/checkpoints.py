"""Checkpoint files: written atomically with a recorded digest, read back verified and without unpickling code.

Every ``.ckpt`` spft writes goes through :func:`save_checkpoint` (temp file, fsync, ``os.replace``) and its SHA-256
is recorded in ``checkpoints/digests.json`` before the file takes its name; :func:`load_checkpoint` refuses a file
whose digest is not a recorded one (truncated, bit-flipped, or replaced by someone else) and loads with
``torch.load(weights_only=True)``, so a crafted checkpoint cannot run code (a pickle that needs anything but
tensors and plain containers is refused, naming the file). :func:`newest_intact` is what ``--resume`` and
``spft evaluate`` use to fall back to the other checkpoint, with a warning, when one is damaged.
Runs written before digests existed (no ``digests.json`` entry) are still read, with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from pathlib import Path

from spft.errors import CheckpointError, MissingFileError

log = logging.getLogger(__name__)

DIGESTS = "digests.json"
_KEEP = 2  # digests kept per name: the file on disk is either the new one or, after a crash mid-replace, the old one


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest_file(path: Path) -> Path:
    return path.parent / DIGESTS


def recorded_digests(path: str | Path) -> list[str] | None:
    """The digests recorded for ``path`` (newest first), or ``None`` when none was recorded (an older run)."""
    path = Path(path)
    try:
        table = json.loads(_digest_file(path).read_text())
    except (OSError, ValueError):
        return None
    entry = table.get(path.name) if isinstance(table, dict) else None
    return list(entry) if isinstance(entry, list) and entry else None


def _record(path: Path, digest: str) -> None:
    from spft.atomic import atomic_write_json

    table_file = _digest_file(path)
    try:
        table = json.loads(table_file.read_text())
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    previous = [d for d in table.get(path.name, []) if d != digest]
    table[path.name] = [digest, *previous][:_KEEP]
    atomic_write_json(table_file, table)


def record_digest(path: str | Path) -> None:
    """Record the digest of ``path`` as it is now (for a file its own engine rewrote in place, e.g. Ultralytics
    stripping the optimizer from ``best.pt`` / ``last.pt`` when training ends)."""
    path = Path(path)
    _record(path, file_digest(path))


def install(tmp: str | Path, target: str | Path) -> None:
    """Record ``tmp``'s digest under ``target``'s name, then move it there (the old digest stays recorded, so a crash
    between the two steps leaves a file that still verifies). For checkpoints another library serialised (the
    detection engine's ``.pt`` files)."""
    from spft.atomic import move_into_place

    tmp, target = Path(tmp), Path(target)
    _record(target, file_digest(tmp))
    move_into_place(tmp, target, sync=True)  # fsynced first: another library may have written it without


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, record its digest, ``os.replace``.

    A full disk or a read-only folder becomes a :class:`~spft.errors.StorageError` naming ``path``; the previous
    file of that name is left as it was.
    """
    import torch

    from spft.atomic import write_temp

    path = Path(path)
    tmp = write_temp(path, lambda fh: torch.save(checkpoint, fh))
    try:
        install(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_checkpoint(source: str | Path, target: str | Path) -> None:
    """A full copy of ``source`` at ``target`` (never a hard link: one damaged block must not hit both files)."""
    from spft.atomic import write_temp

    source, target = Path(source), Path(target)
    tmp = write_temp(target, lambda fh: _copy_into(source, fh))
    try:
        install(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_into(source: Path, fh) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, fh, 1 << 22)


def check_digest(path: str | Path) -> None:
    """Raise :class:`CheckpointError` when ``path``'s digest is not one recorded when spft wrote it."""
    path = Path(path)
    digests = recorded_digests(path)
    if digests is None:
        return
    if file_digest(path) not in digests:
        raise CheckpointError(f"{path} is damaged: its SHA-256 differs from the one recorded when spft wrote it "
                              f"({path.parent / DIGESTS})")


def load_checkpoint(path: str | Path, map_location="cpu", verify: bool = True) -> dict:
    """A checkpoint's contents, verified against its recorded digest and loaded with ``weights_only=True``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found (has the run finished its first epoch?)")
    if verify:
        check_digest(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused to load — it holds objects other than tensors and plain containers "
                              f"and spft never unpickles code from a checkpoint ({first})") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is damaged or not a checkpoint: {first}") from exc


def is_intact(path: str | Path, loadable: bool = True) -> bool:
    """Whether ``path`` exists and matches its recorded digest. Without a recorded digest, a ``loadable`` file is
    loaded to find out; otherwise (a file another library reads) it is taken as intact."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if recorded_digests(path) is None:
            if not loadable:
                return True
            load_checkpoint(path, verify=False)
        else:
            check_digest(path)
    except CheckpointError as exc:
        log.warning("%s", exc)
        return False
    return True


def newest_intact(folder: str | Path, names: tuple[str, ...], loadable: bool = True) -> Path | None:
    """The first of ``names`` in ``folder`` that is intact; a warning for each damaged one skipped.

    ``None`` when none exists; a :class:`CheckpointError` when files exist but every one is damaged.
    """
    folder = Path(folder)
    present = [folder / n for n in names if (folder / n).is_file()]
    for i, path in enumerate(present):
        if is_intact(path, loadable):
            if i:
                log.warning("using %s instead of the damaged %s", path, ", ".join(str(p) for p in present[:i]))
            return path
    if present:
        raise CheckpointError(f"every checkpoint in {folder} is damaged ({', '.join(p.name for p in present)}); "
                              "move the folder away to start the run again")
    return None


EPOCHS = "epochs.json"


def record_epoch(path: str | Path, epoch: int) -> None:
    """Record which epoch the checkpoint at ``path`` holds (``checkpoints/epochs.json``), for files that spft must
    not unpickle to find out (the detection engine's ``.pt`` pickles)."""
    from spft.atomic import atomic_write_json

    path = Path(path)
    table_file = path.parent / EPOCHS
    try:
        table = json.loads(table_file.read_text())
    except (OSError, ValueError):
        table = {}
    table[path.name] = int(epoch)
    atomic_write_json(table_file, table)


def recorded_epoch(path: str | Path) -> int | None:
    """The epoch :func:`record_epoch` recorded for ``path``, or ``None``."""
    path = Path(path)
    try:
        value = json.loads((path.parent / EPOCHS).read_text()).get(path.name)
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


def eval_weights(state_dict: dict) -> tuple[dict, str]:
    """The weights a run evaluates with from a RecipeModule state dict: ``ema.module.*`` when present, else
    ``model.*``; returns them without the prefix and which one it was."""
    for prefix, what in (("ema.module.", "ema"), ("model.", "raw")):
        picked = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if picked:
            return picked, what
    raise CheckpointError("the checkpoint holds no model weights (no 'model.*' or 'ema.module.*' keys)")


def checkpoint_file(run_dir: Path, checkpoint: str) -> Path:
    """A Lightning run's ``checkpoints/<checkpoint>.ckpt`` (best / last), verified; a damaged one falls back to the
    other (:func:`newest_intact`)."""
    from spft.errors import ConfigError

    if checkpoint not in ("best", "last"):
        raise ConfigError(f"--checkpoint: expected best or last, got {checkpoint!r}")
    name = f"{checkpoint}.ckpt"
    other = "last.ckpt" if checkpoint == "best" else "best.ckpt"
    found = newest_intact(run_dir / "checkpoints", (name, other))
    if found is None:
        raise MissingFileError(f"{run_dir / 'checkpoints' / name} not found (has the run finished its first epoch?)")
    return found

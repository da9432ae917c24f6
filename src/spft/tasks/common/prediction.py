"""What every task's ``predict`` returns, how ``spft predict`` writes it, and the loop that gets there
(task-agnostic).

:func:`batch_loop` is every task's prediction loop: inputs decoded in threads ahead of the model
(:func:`decode_ahead`), gathered into batches (a new batch when the task says the next input cannot join: another
image shape for Ultralytics, another set of prompted structures for SAM2), each full batch handed to the task's
model, a progress bar on stderr, and every unreadable input kept as a :class:`~spft.data.inputs.Failure` instead of
stopping the run.

:class:`Predictions` is a table (one row per image that was predicted, in input order, first column ``id``) plus the
inputs that could not be predicted (:class:`spft.data.inputs.Failure`: id and a one-line reason). :meth:`write`
puts the table at ``out`` and the failures in the sidecar ``<out stem>.failed.csv`` (columns ``path``, ``error``),
removing a stale sidecar of an earlier call when nothing failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spft.data.inputs import Failure


@dataclass
class Predictions:
    table: pd.DataFrame
    failures: list[Failure] = field(default_factory=list)
    source: str = ""  # the run directory or export folder that predicted
    name: str = ""  # its name, for the default output file
    heatmaps: Path | None = None  # predict(..., heatmaps=DIR): the listing DIR/heatmaps.csv
    heatmap_table: pd.DataFrame | None = None  # its rows: id, class, prob, npy, png

    def failed_path(self, out: str | Path) -> Path:
        out = Path(out)
        return out.with_name(out.name[: -len(out.suffix)] + ".failed.csv" if out.suffix else out.name + ".failed.csv")

    def write(self, out: str | Path) -> tuple[Path, Path | None]:
        """Write the table (and the failures' sidecar, when any); returns both paths (``None``: no failures)."""
        from spft.atomic import atomic_write_csv, atomic_write_text
        from spft.csvsafe import frame_to_csv

        out = Path(out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, frame_to_csv(self.table))  # ids like =2+3.png written as text (spft.csvsafe)
        sidecar = self.failed_path(out)
        if self.failures:
            atomic_write_csv(sidecar, [{"path": f.id, "error": f.error} for f in self.failures], ["path", "error"])
            return out, sidecar
        sidecar.unlink(missing_ok=True)
        return out, None


def default_workers() -> int:
    """Decoding threads of ``spft predict`` when not given: the cores, at most 8."""
    import os

    return max(1, min(8, (os.cpu_count() or 2)))


class _Unreadable(str):
    """An input's one-line reason, standing in for its decoded value (never a legitimate decoded value)."""


def decoded_or_reason(decode, item):
    """``decode(item)``, or the one-line reason it could not be read (:class:`_Unreadable`): an unreadable file or a
    bad array is reported, not raised."""
    from spft.errors import SpftError

    try:
        return decode(item)
    except (SpftError, OSError, ValueError) as exc:
        return _Unreadable(error_text(exc))


def batch_loop(items: list, ids: list[str], decode, forward, batch_size: int, workers: int | None = None,
               progress: bool = False, prepare=None, same_batch=None) -> list[Failure]:
    """Predict ``items`` (named ``ids``) in batches; returns the failures, in input order.

    ``decode(item)`` runs in ``workers`` threads ahead of the model (errors become failures); ``prepare(i,
    decoded)`` (optional) turns it into the batch entry, or a string: the reason the input is left out;
    ``same_batch(first, entry)`` (optional) says whether ``entry`` may join the batch begun by ``first`` (else the
    batch is handed over first); ``forward(entries)`` predicts a batch of at most ``batch_size`` entries, each
    ``(i, entry)``.
    """
    from tqdm.auto import tqdm

    from spft.errors import ConfigError

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    workers = default_workers() if workers is None else int(workers)
    failures: list[Failure] = []
    batch: list[tuple[int, object]] = []

    def flush():
        if batch:
            forward(list(batch))
            batch.clear()

    bar = tqdm(total=len(items), unit="img", desc="predict", disable=not progress, file=None, dynamic_ncols=True)
    try:
        def work(item):
            return decoded_or_reason(decode, item)

        for i, decoded in decode_ahead(items, work, workers, lookahead=max(2 * batch_size, 4 * workers)):
            entry = decoded if isinstance(decoded, _Unreadable) or prepare is None else prepare(i, decoded)
            if isinstance(entry, str):
                failures.append(Failure(ids[i], str(entry)))
            else:
                if batch and same_batch is not None and not same_batch(batch[0][1], entry):
                    flush()
                batch.append((i, entry))
                if len(batch) == batch_size:
                    flush()
            bar.update(1)
        flush()
    finally:
        bar.close()
    return failures


def decode_ahead(items: list, work, workers: int, lookahead: int):
    """``(index, work(item))`` in input order, ``work`` run in ``workers`` threads up to ``lookahead`` items ahead of
    the consumer (decoding releases the GIL); ``workers <= 1``: in this thread."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 1:
        for i, item in enumerate(items):
            yield i, work(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="spft-decode") as pool:
        pending: deque = deque()
        it = iter(enumerate(items))
        for i, item in it:
            pending.append((i, pool.submit(work, item)))
            if len(pending) >= lookahead:
                break
        while pending:
            i, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(work, nxt[1])))
            yield i, fut.result()


def error_text(exc: BaseException) -> str:
    """One line for an input that could not be read: spft's own message, else ``Type: message``."""
    from spft.errors import SpftError

    return str(exc) if isinstance(exc, SpftError) else f"{type(exc).__name__}: {exc}"


def safe_stem(image_id: str, taken: set[str]) -> str:
    """A file-name stem for ``image_id``: an image suffix dropped, characters other than letters, digits, ``.``,
    ``_``, ``-`` turned into ``_``, leading dots dropped; made unique against ``taken`` with ``-2``, ``-3`` ... (and
    added to it).

    >>> taken = set(); safe_stem("scans/a b.png", taken), safe_stem("scans_a_b.dcm", taken)
    ('scans_a_b', 'scans_a_b-2')
    """
    import re

    text = re.sub(r"\.(png|jpe?g|dcm|dicom|tiff?|bmp|webp)$", "", str(image_id), flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "image"
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name

"""Every CSV spft writes goes through one cell rule, OWASP's CSV-injection defence, and reads back unchanged.

A text cell that a spreadsheet would evaluate — one starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return (a class named ``=HYPERLINK(...)``, an image id ``=2+3_0.png``) — is written with a leading ``'``, so the
spreadsheet shows it as text (:func:`escape_cell`). Numbers stay numbers: a float, and text that is exactly a number
(``-0.25``, ``+1e-3``), are written as they are.

The rule is reversible, so spft reads its own files (``predictions_test.csv`` in ``spft report``, ``history.csv``
on resume and in tracking, a detection run's predictions given as segmentation prompts) back to the original values
(:func:`unescape_cell`): a cell of one or more quotes followed by one of those characters loses exactly one quote,
and a value that itself starts with quotes before such a character gets one more on writing (``'=x`` is written
``''=x``). A cell without a leading quote is never changed on reading.

Used by :func:`spft.atomic.atomic_write_csv`, :meth:`spft.reporting.tables.Table.to_csv`, :func:`frame_to_csv`
(pandas tables: ``spft predict``'s output, ``heatmaps.csv``) and the readers in :mod:`spft.reporting` and
:mod:`spft.tracking`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")


def escape_cell(value):
    """``value`` as a CSV cell a spreadsheet shows as written; anything not text is returned unchanged.

    >>> escape_cell("=1+2"), escape_cell("-0.25"), escape_cell(-0.25), escape_cell("+ EMA"), escape_cell("'=x")
    ("'=1+2", '-0.25', -0.25, "'+ EMA", "''=x")
    """
    if not isinstance(value, str) or not value:
        return value
    if value[0] == "'":  # quotes before a formula character: one more, so reading removes exactly one
        return "'" + value if value.lstrip("'").startswith(FORMULA_START) else value
    if not value.startswith(FORMULA_START) or _NUMBER.fullmatch(value):
        return value
    return "'" + value


def unescape_cell(value):
    """The value :func:`escape_cell` was given (a cell spft wrote); other cells unchanged.

    >>> unescape_cell("'=1+2"), unescape_cell("''=x"), unescape_cell("'quoted"), unescape_cell("-0.25")
    ('=1+2', "'=x", "'quoted", '-0.25')
    """
    if isinstance(value, str) and _ESCAPED.match(value):
        return value[1:]
    return value


def write_rows(fh, rows: Iterable[dict], fieldnames: list[str], lineterminator: str = "\n") -> None:
    """``csv.DictWriter`` with every header and cell escaped."""
    writer = csv.writer(fh, lineterminator=lineterminator)
    writer.writerow([escape_cell(n) for n in fieldnames])
    for row in rows:
        writer.writerow([escape_cell(row.get(n, "")) for n in fieldnames])


def write_lists(fh, rows: Iterable[list], lineterminator: str = "\n") -> None:
    """``csv.writer().writerows`` with every cell escaped (the first row is the header)."""
    writer = csv.writer(fh, lineterminator=lineterminator)
    for row in rows:
        writer.writerow([escape_cell(v) for v in row])


def frame_to_csv(frame, lineterminator: str = "\n") -> str:
    """A pandas table as CSV text (no index), its column names and text cells escaped; numbers as pandas writes
    them."""
    out = frame.copy(deep=False)
    out.columns = [escape_cell(str(c)) for c in out.columns]
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if column.dtype == object or str(column.dtype) in ("string", "str", "category"):
            out.isetitem(i, column.map(escape_cell, na_action="ignore").astype(object))
    return out.to_csv(index=False, lineterminator=lineterminator)


def read_rows(fh) -> list[dict]:
    """``csv.DictReader`` rows of a CSV spft wrote, header and cells unescaped."""
    reader = csv.reader(fh)
    header = [unescape_cell(h) for h in next(reader, [])]
    return [dict(zip(header, (unescape_cell(v) for v in row))) for row in reader if row]


def unescape_frame(frame):
    """A pandas table read (``dtype=str``) from a CSV spft wrote, with its column names and text cells unescaped."""
    frame = frame.rename(columns=unescape_cell)
    for i in range(frame.shape[1]):
        if frame.iloc[:, i].dtype == object:
            frame.isetitem(i, frame.iloc[:, i].map(unescape_cell, na_action="ignore"))
    return frame


def csv_text(rows: list[dict], fieldnames: list[str], lineterminator: str = "\n") -> str:
    buf = io.StringIO()
    write_rows(buf, rows, fieldnames, lineterminator)
    return buf.getvalue()

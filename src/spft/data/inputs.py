"""What ``spft predict`` reads: image files, folders, globs and CSV files turned into one ordered list of images.

Task-agnostic (every task's predict takes the list :func:`collect_inputs` makes). An argument is

* an image file (any name: PNG, JPEG, TIFF, DICOM with or without ``.dcm`` — :func:`spft.data.io.load_image` decides);
* a folder: every image below it, recursively, in sorted order (files with an image suffix, and files without a
  suffix that carry the DICOM preamble); other files are left out and their number is logged;
* a glob (``'scans/*.png'``, ``'data/**/*.dcm'``): the matching files in sorted order;
* a ``.csv`` file: one image per row, from ``image_column`` (else the run's ``data.image_column`` when the CSV has
  it, else the first of ``path``, ``image``, ``Image Index``); relative paths are relative to ``root`` (default:
  the CSV's folder), and the id is the value as written in the CSV.

Nothing is skipped silently: a file that does not exist, a glob that matches nothing, a folder without images and a
blank CSV cell each become a :class:`Failure` that the caller reports with the images that fail to decode.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path

from spft.errors import DataError, MissingKeyError

log = logging.getLogger(__name__)

CSV_IMAGE_COLUMNS = ("path", "image", "Image Index")
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputImage:
    """One image to predict: ``id`` as the user gave it (or as found under a folder), ``path`` to read."""

    id: str
    path: Path


@dataclass(frozen=True)
class Failure:
    """An input that could not be predicted, and why (one line)."""

    id: str
    error: str


def _is_image_file(path: Path) -> bool:
    from spft.data.io import IMAGE_SUFFIXES, is_dicom

    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return path.suffix == "" and is_dicom(path)


def _folder(folder: Path, given: str) -> tuple[list[InputImage], list[Failure]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if _is_image_file(p)]
    others = len(files) - len(images)
    if others:
        log.info("%s: %d file(s) that are not images left out (not an image suffix, no DICOM preamble)", given, others)
    if not images:
        return [], [Failure(given, f"no image files in folder {given}")]
    base = given.rstrip("/\\") or given
    return [InputImage(str(Path(base) / p.relative_to(folder)), p) for p in images], []


def _csv_column(frame, csv_path: Path, image_column: str | None, preferred: str | None) -> str:
    if image_column is not None:
        if image_column not in frame.columns:
            raise MissingKeyError(f"{csv_path}: no column {image_column!r} (--image-column); columns: "
                                  f"{', '.join(map(str, frame.columns))}")
        return image_column
    for name in ([preferred] if preferred else []) + list(CSV_IMAGE_COLUMNS):
        if name in frame.columns:
            return name
    tried = ", ".join(dict.fromkeys(([preferred] if preferred else []) + list(CSV_IMAGE_COLUMNS)))
    raise MissingKeyError(f"{csv_path}: no image column (looked for {tried}); name it with --image-column; columns: "
                          f"{', '.join(map(str, frame.columns))}")


def _csv(csv_path: Path, image_column: str | None, preferred: str | None, root: str | Path | None
         ) -> tuple[list[InputImage], list[Failure]]:
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read it as a CSV: {str(exc).splitlines()[0]}") from exc
    column = _csv_column(frame, csv_path, image_column, preferred)
    base = Path(root).expanduser() if root is not None else csv_path.parent
    images, failures = [], []
    for row, value in enumerate(frame[column].tolist(), start=2):  # row 1 is the header
        value = value.strip()
        if not value:
            failures.append(Failure(f"{csv_path}:{row}", f"blank {column!r} cell in row {row}"))
            continue
        path = Path(value).expanduser()
        images.append(InputImage(value, path if path.is_absolute() else base / path))
    log.info("%s: %d image(s) from column %r (relative to %s)", csv_path, len(images), column, base)
    return images, failures


def collect_inputs(inputs: list[str] | tuple[str, ...], image_column: str | None = None,
                   preferred_column: str | None = None, root: str | Path | None = None
                   ) -> tuple[list[InputImage], list[Failure]]:
    """The images named by ``inputs`` in the order given, and the arguments that name none.

    ``image_column`` / ``preferred_column`` / ``root``: for CSV arguments (see the module doc). Whether each image
    decodes is found out later, when it is read.
    """
    images: list[InputImage] = []
    failures: list[Failure] = []
    for given in inputs:
        given = str(given)
        path = Path(given).expanduser()
        if path.is_dir():
            found, failed = _folder(path, given)
        elif path.is_file() and path.suffix.lower() == ".csv":
            found, failed = _csv(path, image_column, preferred_column, root)
        elif path.is_file():
            found, failed = [InputImage(given, path)], []
        elif GLOB_CHARS & set(given):
            matches = sorted(glob.glob(str(path), recursive=True))
            found = [InputImage(m, Path(m)) for m in matches if Path(m).is_file()]
            failed = [] if found else [Failure(given, f"no file matches {given}")]
        else:
            found, failed = [], [Failure(given, f"not found: {given}")]
        images += found
        failures += failed
    return images, failures

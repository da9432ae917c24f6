"""What the real-dataset adapters share: finding files below a download root and reading its metadata tables.

One ``os.walk`` builds a file-name → path index, so an adapter is independent of the mirror's folder layout (NIH Box
vs Kaggle, HAM10000 Kaggle vs Dataverse). Metadata is read as strings with the delimiter sniffed (Dataverse ships
tab-separated files without an extension) and columns are found by name, case- and space-insensitively.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from spft.data.io import IMAGE_SUFFIXES
from spft.errors import DataError, MissingFileError, MissingKeyError

log = logging.getLogger(__name__)


class FileIndex:
    """Every file below ``root`` by file name; when a name occurs more than once the shallowest path wins.

    A symbolic link below the root (a folder or a file) that leads outside it is refused in one line naming it,
    unless ``follow_links`` (``data.follow_links: true``, for a download whose image folders are linked on purpose):
    a root from elsewhere must not make spft read files outside it."""

    def __init__(self, root: str | os.PathLike, follow_links: bool = False):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingFileError(f"data.root: folder not found: {self.root}")
        self.by_name: dict[str, str] = {}
        self.paths: list[str] = []  # every file, duplicates of a name included, in (sorted) walk order
        self.duplicates = 0
        real_root = os.path.realpath(self.root)
        seen = {real_root}

        def allowed(path: str) -> bool:
            if not follow_links and os.path.islink(path):
                real = os.path.realpath(path)
                if os.path.commonpath([real_root, real]) != real_root:
                    raise DataError(f"data.root {self.root}: {path} is a link leading outside it (to {real}); set "
                                    "data.follow_links=true if the dataset links its images on purpose")
            return True

        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):  # image folders may be symlinks
            # deterministic (sorted walk; of several copies of a name the shallowest wins); no symlink loops
            dirnames[:] = [d for d in sorted(dirnames)
                           if allowed(os.path.join(dirpath, d)) and _first_visit(os.path.join(dirpath, d), seen)]
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                allowed(path)
                self.paths.append(path)
                known = self.by_name.get(name)
                if known is not None:
                    self.duplicates += 1
                    if known.count(os.sep) <= path.count(os.sep):
                        continue
                self.by_name[name] = path
        if self.duplicates:
            log.info("%s: %d file name(s) occur more than once below the root; the shallowest copy is used",
                     self.root, self.duplicates)

    def find(self, *names: str) -> str | None:
        """The path of the first of ``names`` present below the root, else ``None``."""
        for name in names:
            if name in self.by_name:
                return self.by_name[name]
        return None

    def images_by_stem(self) -> dict[str, str]:
        """Image files keyed by name without suffix (``ISIC_0024306`` → ``.../ISIC_0024306.jpg``)."""
        out: dict[str, str] = {}
        for name, path in self.by_name.items():
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in IMAGE_SUFFIXES:
                out.setdefault(stem, path)
        return out


def _first_visit(path: str, seen: set[str]) -> bool:
    real = os.path.realpath(path)
    if real in seen:
        return False
    seen.add(real)
    return True


def read_table(path: str | os.PathLike, sep: str = ",", **kwargs) -> pd.DataFrame:
    """``pd.read_csv(path, dtype=str, keep_default_na=False)`` with every way a file can fail named in one line:
    an empty file, a file that is not UTF-8 (where, and how to fix it), a malformed row.

    Raises:
        DataError: naming the file and the problem.
    """
    path = Path(path)
    kind = "tab" if sep == "\t" else "comma"
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); expected a {kind}-separated table with a header row")
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig", **kwargs)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); save it as "
                        f"UTF-8 (e.g. 'CSV UTF-8' in Excel, or iconv -f latin1 -t utf-8)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no header row and no data (a blank file); expected a {kind}-separated table") \
            from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot be read as a {kind}-separated table: {str(exc).strip()}") from None
    return df


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV or tab-separated table as strings (blank = ``""``), ``Unnamed: *`` padding columns dropped."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    sep = "\t" if header.count("\t") > header.count(",") else ","
    df = read_table(path, sep=sep, skipinitialspace=True)
    df.columns = [str(c).strip() for c in df.columns]
    return df.loc[:, [c for c in df.columns if not c.startswith("Unnamed:")]]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_column(df: pd.DataFrame, source: str | os.PathLike, *names: str, required: bool = True) -> str | None:
    """The column of ``df`` matching one of ``names`` ignoring case, spaces and punctuation.

    ``Image Index`` matches ``ImageIndex`` and ``image index``. Raises ``KeyError`` naming the file, the wanted
    column and the columns present when ``required`` and nothing matches.
    """
    by_norm = {_norm(c): c for c in df.columns}
    for name in names:
        if _norm(name) in by_norm:
            return by_norm[_norm(name)]
    if required:
        raise MissingKeyError(f"{source}: column '{names[0]}' not found; the file has: "
                              f"{', '.join(map(str, df.columns))}")
    return None


def count_warning(what: str, found: int, published: int | tuple[int, ...]) -> str | None:
    """A warning text when ``found`` differs from the published count(s) (mirrors and versions differ)."""
    options = published if isinstance(published, tuple) else (published,)
    if found in options:
        return None
    expected = " or ".join(f"{n:,}" for n in options)
    return f"{what}: found {found:,}, published {expected} (a partial or different copy?)"


def add_warning(warnings: list[str], text: str | None) -> None:
    """Append ``text`` (if any) to ``warnings`` and log it once, at load time."""
    if text:
        warnings.append(text)
        log.warning("%s", text)


def split_seed(data_cfg, seed: int) -> int:
    """``data.split_seed`` when set, else the run's seed."""
    return seed if data_cfg.split_seed is None else int(data_cfg.split_seed)


def metadata_path(data_cfg, index: FileIndex, names: tuple[str, ...], dataset: str, what: str) -> str:
    """``data.csv`` when set (it must exist), else the first of ``names`` found below ``data.root``.

    Raises:
        FileNotFoundError: naming ``data.csv`` or the file names looked for and the root.
    """
    if data_cfg.csv:
        path = Path(data_cfg.csv).expanduser()
        if not path.is_file():
            raise MissingFileError(f"data.csv: file not found: {data_cfg.csv}")
        return str(path)
    found = index.find(*names)
    if found is None:
        raise MissingFileError(f"{dataset}: none of {', '.join(names)} found below data.root={index.root} "
                                f"(or set data.csv to {what})")
    return found

"""``spft data check``: what a dataset copy holds and what is wrong with it, before a GPU hour is spent.

Per split: images, patients (or lesions) and positive / uncertain / unknown labels per class; groups found in more
than one split (leakage); listed files that are missing; with ``headers`` every image's header checked (the cheap
check :func:`screen_images` runs before training: size, pixel limit, end marker), with ``scan`` every image
decoded, both in parallel (a small thread pool; Pillow releases the GIL while decoding) with a progress bar, and the
unreadable ones listed. Counts that differ from the published ones are warnings, and so is a class whose AUC is
undefined in val or test (no positives or no negatives there); leakage, missing or unreadable files, empty splits
and a validation split where no class has an AUC are problems (non-zero exit).

:func:`screen_images` is what ``spft train`` (and ``spft evaluate``) run on the table before the first batch:
``data.check_images`` header (default; reads a few KB per file, so ~100k images take about a minute on a local
disk with 8 threads) | decode (every image decoded, like ``--scan``) | off, and ``data.on_bad_image`` error (stop,
naming the first file) | skip (leave them out, listed in the run directory's ``skipped_images.csv``). Files that
passed are remembered with their size and mtime (:mod:`spft.data.header_cache`): a later start only ``stat``s them.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spft.data.contract import SPLITS, LabelTable
from spft.data.io import BadImageError, check_image, set_max_pixels
from spft.data.registry import load_table

log = logging.getLogger(__name__)

SHOWN = 20  # offenders listed in the text report (all of them are in --json)
# box-level problems of a detection source (spft.data.own_detection): kind -> what the problem line counts
BOX_PROBLEMS = {
    "unknown_class": "box(es) of a class not in the class list",
    "empty_box": "box(es) of zero or negative size (x_max <= x_min or y_max <= y_min)",
    "outside_image": "box(es) entirely outside the image",
    "bad_label": "label line(s) that are not 'class cx cy w h'",
}


@dataclass
class DataReport:
    """The result of a data check; ``to_json()`` is what ``spft data check --json`` prints."""

    dataset: str
    source: str
    classes: list[str]
    group_kind: str
    split_policy: str
    label_policy: str
    splits: dict[str, dict]
    leaked_groups: list[str]
    leaked_splits: dict[str, list[str]]
    missing_files: list[str]
    unreadable_files: dict[str, str] = field(default_factory=dict)  # path -> decoding error
    scanned: bool = False
    warnings: list[str] = field(default_factory=list)
    checked: str = "off"  # how images were checked: off | header | decode
    undefined_auc: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # split -> {no_positives, ...}
    boxes: dict[str, dict[str, int]] = field(default_factory=dict)  # detection: split -> class -> boxes
    images_without_boxes: dict[str, int] = field(default_factory=dict)  # detection: split -> images
    box_problems: dict[str, list[str]] = field(default_factory=dict)  # detection: BOX_PROBLEMS kind -> offenders
    test_is_val: bool = False  # no test split: test metrics are on val (an empty test split is then no problem)

    @property
    def val_has_no_auc(self) -> bool:
        """A non-empty validation split where no class has both positives and negatives (no AUC to monitor)."""
        return no_val_auc(self.splits, self.undefined_auc, self.classes)

    @property
    def empty_splits(self) -> list[str]:
        return [s for s, counts in self.splits.items()
                if counts["n_images"] == 0 and not (s == "test" and self.test_is_val)]

    @property
    def problems(self) -> list[str]:
        """One line per kind of problem; empty when the copy is fit for training."""
        out = []
        if self.leaked_groups:
            out.append(f"{len(self.leaked_groups)} {self.group_kind}(s) in more than one split (leakage)")
        if self.missing_files:
            out.append(f"{len(self.missing_files)} listed file(s) missing")
        if self.unreadable_files:
            out.append(f"{len(self.unreadable_files)} file(s) cannot be decoded")
        out += [f"the {s} split is empty" for s in self.empty_splits]
        out += [f"{len(lines)} {BOX_PROBLEMS.get(kind, kind)}" for kind, lines in self.box_problems.items() if lines]
        if self.val_has_no_auc:
            out.append("no class has both positives and negatives in val (validation AUC, the early-stopping "
                       "monitor, is undefined)")
        return out

    def text(self) -> str:
        """The human-readable report (:func:`format_report`)."""
        return format_report(self)

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "source": self.source, "classes": self.classes, "group_kind": self.group_kind,
                "split_policy": self.split_policy, "label_policy": self.label_policy, "splits": self.splits,
                "leaked_groups": self.leaked_groups, "missing_files": self.missing_files,
                "unreadable_files": sorted(self.unreadable_files), "unreadable_errors": self.unreadable_files,
                "scanned": self.scanned, "checked": self.checked, "undefined_auc": self.undefined_auc,
                "warnings": self.warnings, "problems": self.problems, "ok": not self.problems,
                **({"boxes": self.boxes, "images_without_boxes": self.images_without_boxes,
                    "box_problems": self.box_problems, "test_is_val": self.test_is_val} if self.boxes else {})}


def split_counts(table: LabelTable) -> dict[str, dict]:
    """Per split: ``n_images``, ``n_groups`` and per-class ``positives`` / ``uncertain`` / ``unknown`` counts.

    ``uncertain`` counts source labels that were uncertain before the policy mapped them (empty for datasets without
    uncertainty); ``unknown`` counts labels that are NaN (masked) after it.
    """
    out = {}
    for split in SPLITS:
        rows = table.indices(split)
        labels = table.labels[rows]
        out[split] = {
            "n_images": len(rows),
            "n_groups": len({table.groups[i] for i in rows}),
            "positives": {c: int((labels[:, j] == 1.0).sum()) for j, c in enumerate(table.classes)},
            "negatives": {c: int((labels[:, j] == 0.0).sum()) for j, c in enumerate(table.classes)},
            "uncertain": {} if table.uncertain is None else
            {c: int(table.uncertain[rows, j].sum()) for j, c in enumerate(table.classes)},
            "unknown": {c: int(np.isnan(labels[:, j]).sum()) for j, c in enumerate(table.classes)},
        }
    return out


def undefined_auc(counts: dict[str, dict], classes: list[str]) -> dict[str, dict[str, list[str]]]:
    """Per non-empty val/test split, the classes without positives and those without negatives (their AUC is
    undefined there); splits where every class is defined are left out."""
    out = {}
    for split in ("val", "test"):
        c = counts[split]
        if c["n_images"] == 0:
            continue
        no_pos = [k for k in classes if c["positives"][k] == 0]
        no_neg = [k for k in classes if c["negatives"][k] == 0 and k not in no_pos]
        if no_pos or no_neg:
            out[split] = {"no_positives": no_pos, "no_negatives": no_neg}
    return out


def no_val_auc(counts: dict[str, dict], undefined: dict, classes: list[str]) -> bool:
    """A non-empty val split (``counts``: :func:`split_counts`) where every class's AUC is undefined
    (``undefined``: :func:`undefined_auc`): no validation AUC to monitor — a data check problem, a refused training."""
    val = undefined.get("val", {})
    n_undefined = len(val.get("no_positives", [])) + len(val.get("no_negatives", []))
    return counts["val"]["n_images"] > 0 and bool(classes) and n_undefined >= len(classes)


def refuse_untrainable(table: LabelTable, source: str) -> None:
    """Before training: what ``spft data check`` reports as FAILED for a validation split without any class that
    has both positives and negatives is one :class:`~spft.errors.DataError` (validation AUC, the early-stopping and
    best-checkpoint monitor, would be undefined in every epoch: a run would end with all metrics null). A class
    undefined in val or test only is a warning now, at the start, not a note after training."""
    from spft.errors import DataError

    counts = split_counts(table)
    undefined = undefined_auc(counts, table.classes)
    if no_val_auc(counts, undefined, table.classes):
        raise DataError(f"{source}: no class has both positives and negatives in the val split "
                        f"({counts['val']['n_images']} images), so validation AUC — the early-stopping and "
                        "best-checkpoint monitor — is undefined; `spft data check` fails on this data too: give val "
                        "positives and negatives (data.split_column / data.split_fractions)")
    for split, entry in undefined.items():
        log.warning("warning: %s", _undefined_warning(split, entry))


def _undefined_warning(split: str, entry: dict[str, list[str]]) -> str:
    parts = []
    if entry["no_positives"]:
        parts.append(f"no positives: {', '.join(entry['no_positives'])}")
    if entry["no_negatives"]:
        parts.append(f"no negatives: {', '.join(entry['no_negatives'])}")
    n = len(entry["no_positives"]) + len(entry["no_negatives"])
    return f"{split}: AUC undefined for {n} class(es) ({'; '.join(parts)}); they are left out of its macro AUC"


def scan_images(paths: list[str], color: str = "grey", workers: int | None = None, decode: bool = True,
                max_pixels=None, progress: bool | None = True, remember: bool = True) -> dict[str, str]:
    """Check every file in ``paths`` with a small thread pool and a progress bar on stderr; returns
    ``{path: error}``. ``decode=True`` decodes each image fully, else only its header and end (see
    :func:`spft.data.io.check_image`). ``progress=None`` shows the bar only on a terminal. The pixel limit is
    ``max_pixels`` when given, else this process's ``data.max_image_pixels``.

    ``remember``: files that passed this same check before and have the same size and mtime since are not read
    again (:class:`spft.data.header_cache.HeaderCache`, under ``$SPFT_CACHE/image_checks/``); the good files
    checked now are added to it."""
    from tqdm import tqdm

    from spft.data.header_cache import HeaderCache
    from spft.data.io import DEFAULT_PIXELS, pixel_limit

    limit = DEFAULT_PIXELS if max_pixels is None else max_pixels
    workers = workers or min(8, os.cpu_count() or 1)
    bad: dict[str, str] = {}
    chunk = 1024  # bounded number of pending futures, whatever the dataset size
    cache = HeaderCache(paths, "decode" if decode else "header", pixel_limit(limit)) if remember and paths else None
    todo, signatures = cache.unchanged(paths) if cache is not None else (paths, {})
    if len(todo) < len(paths):
        log.info("%d of %d image(s) unchanged since they last passed the check (%s): not read again",
                 len(paths) - len(todo), len(paths), cache.file)

    def one(path: str) -> str | None:
        return check_image(path, limit, decode=decode)

    desc = "decoding" if decode else "checking images"
    disable = None if progress is None else not progress
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(todo), desc=desc, unit="img",
                                                               disable=disable) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            for path, error in zip(part, pool.map(one, part)):
                if error:
                    bad[path] = error
                bar.update(1)
    if cache is not None:
        cache.remember({p: s for p, s in signatures.items() if p not in bad}, [p for p in signatures if p in bad])
    return bad


def screen_images(cfg, table: LabelTable, run_dir: str | os.PathLike | None = None,
                  workers: int | None = None) -> LabelTable:
    """Check the table's images before training (``data.check_images``) and apply ``data.on_bad_image``.

    Sets this process's pixel limit (``data.max_image_pixels``) first. ``error``: the first unusable file stops
    the run with one line naming it (and how many there are). ``skip``: the table without those rows, each listed
    with its split and error in ``run_dir/skipped_images.csv`` (when ``run_dir`` is given).

    Raises:
        BadImageError: with ``error``, when any image is unusable.
        DataError: with ``skip``, when leaving them out empties a split.
    """
    import time

    from spft.data.csv_dataset import check_table, subset_table

    data = cfg.data
    set_max_pixels(data.max_image_pixels)
    mode = getattr(data, "check_images", "header")
    if mode == "off":
        return table
    paths = sorted(set(table.paths))
    start = time.time()
    bad = scan_images(paths, data.color, workers, decode=mode == "decode", progress=None)
    log.info("checked %d image(s) (%s) in %.1f s: %d unusable", len(paths), mode, time.time() - start, len(bad))
    if not bad:
        return table
    first = min(bad)
    if getattr(data, "on_bad_image", "error") != "skip":
        more = f" ({len(bad)} unusable image(s) in all)" if len(bad) > 1 else ""
        raise BadImageError(f"{bad[first]}{more}; set data.on_bad_image=skip to leave them out, or run `spft data "
                            f"check CONFIG --scan` to list them all")
    keep = [i for i, p in enumerate(table.paths) if p not in bad]
    log.warning("leaving out %d unusable image(s) (data.on_bad_image=skip), first: %s",
                len(table.paths) - len(keep), bad[first])
    if run_dir is not None:
        from spft.atomic import atomic_write_csv
        from spft.distributed import secondary_rank

        if not secondary_rank():
            rows = [{"path": p, "id": table.ids[i], "split": table.splits[i], "error": bad[p]}
                    for i, p in enumerate(table.paths) if p in bad]
            atomic_write_csv(Path(run_dir) / "skipped_images.csv", rows)
    kept = subset_table(table, keep)
    check_table(kept, table.source or "the dataset", missing=False)
    return kept


def check_data(cfg, scan: bool = False, workers: int | None = None, headers: bool = False) -> DataReport:
    """Build the dataset described by ``cfg.data`` without refusing anything, and report on it.

    Args:
        cfg: a loaded :class:`~spft.config.SpftConfig`.
        scan: decode every present image (slow on a full dataset: minutes per 100k images).
        headers: check every present image's header and end (what ``spft train`` does first; fast).
        workers: decoding threads (default: min(8, CPUs)).
    """
    set_max_pixels(cfg.data.max_image_pixels)
    table = load_table(cfg.data, cfg.seed)
    missing = [p for p in table.paths if not Path(p).is_file()]
    leaked = table.leaked_groups()
    where: dict[str, set[str]] = {g: set() for g in leaked}
    for group, split in zip(table.groups, table.splits):
        if group in where:
            where[group].add(split)
    report = DataReport(
        dataset=cfg.data.name, source=table.source or str(getattr(cfg.data, "csv", None) or cfg.data.root),
        classes=list(table.classes),
        group_kind=table.group_kind, split_policy=table.split_policy, label_policy=table.label_policy,
        splits=split_counts(table), leaked_groups=leaked,
        leaked_splits={g: [s for s in SPLITS if s in where[g]] for g in leaked},
        missing_files=missing, warnings=list(table.warnings))
    report.undefined_auc = undefined_auc(report.splits, report.classes)
    report.warnings += [_undefined_warning(split, entry) for split, entry in report.undefined_auc.items()]
    return _scanned(report, table.paths, cfg.data.color, scan, headers, workers)


def _scanned(report: DataReport, paths, color: str, scan: bool, headers: bool, workers: int | None) -> DataReport:
    """``report`` with its present images' headers checked (``headers``) or decoded (``scan``), and a warning when
    images carry an EXIF orientation (all of them with ``headers``/``scan``, else an evenly spaced sample)."""
    absent = set(report.missing_files)
    present = sorted({str(p) for p in paths if str(p) not in absent})
    if scan or headers:
        report.unreadable_files = scan_images(present, color, workers, decode=scan)
        report.scanned = scan
        report.checked = "decode" if scan else "header"
    looked = present if (scan or headers) else present[::max(1, len(present) // EXIF_SAMPLE)][:EXIF_SAMPLE]
    rotated = exif_rotated(looked)
    if rotated:
        first, value = next(iter(rotated.items()))
        sampled = "" if len(looked) == len(present) else f" (of {len(looked)} sampled; --headers checks all)"
        report.warnings.append(
            f"{len(rotated)} image(s) carry an EXIF orientation other than 1{sampled}, e.g. {first} ({value}): spft "
            "reads the stored pixels and ignores EXIF orientation, as transformers' image processors do — rotate "
            "those files if they are stored turned")
    return report


EXIF_SAMPLE = 500  # images whose EXIF orientation a plain `spft data check` reads (the header modes read all)
_ORIENTATION = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "mirrored + 90°", 6: "rotated 90°",
                7: "mirrored + 270°", 8: "rotated 270°"}


def exif_rotated(paths: list[str]) -> dict[str, str]:
    """``{path: what}`` for the images whose EXIF orientation tag (0x0112) is not 1 (DICOM files have none).

    spft ignores the tag when reading (``spft.data.io``), like transformers' processors: a radiograph's pixels are
    its stored pixels. The tag is reported so that a phone photo of a film, or a JPEG export that relies on it, is
    noticed before training."""
    from PIL import Image, UnidentifiedImageError

    out = {}
    for path in paths:
        if path.lower().endswith((".dcm", ".dicom")):
            continue
        try:
            with Image.open(path) as im:
                value = im.getexif().get(0x0112, 1)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            continue  # unreadable files are the header/decode checks' business
        if value not in (None, 1):
            out[path] = f"orientation {value}: {_ORIENTATION.get(value, 'unknown')}"
    return out


def rows_report(cfg, source: str, classes: list[str], splits: list[str], groups: list[str], paths: list[str],
                present, *, group_kind: str, split_policy: str, label_policy: str, other_files: list[str] = (),
                scan: bool = False, workers: int | None = None, headers: bool = False) -> DataReport:
    """The data check of a task whose rows are not a :class:`LabelTable` (segmentation masks, detection boxes).

    ``present[i][j]``: row ``i`` has class (structure, box class) ``j``, counted as a positive; ``other_files``:
    files besides the images that the rows need (mask PNGs, label files), listed as missing when absent.
    """
    present = np.asarray(present, dtype=bool).reshape(len(paths), len(classes))
    counts = {}
    for split in SPLITS:
        rows = [i for i, s in enumerate(splits) if s == split]
        has = present[rows]
        counts[split] = {"n_images": len(rows), "n_groups": len({groups[i] for i in rows}),
                         "positives": {c: int(has[:, j].sum()) for j, c in enumerate(classes)},
                         "negatives": {c: int((~has[:, j]).sum()) for j, c in enumerate(classes)},
                         "uncertain": {}, "unknown": {c: 0 for c in classes}}
    where: dict[str, set[str]] = {}
    for group, split in zip(groups, splits):
        where.setdefault(group, set()).add(split)
    leaked = sorted(g for g, s in where.items() if len(s) > 1)
    missing = [str(p) for p in list(paths) + list(other_files) if not Path(p).is_file()]
    report = DataReport(dataset=cfg.data.name, source=source, classes=list(classes), group_kind=group_kind,
                        split_policy=split_policy, label_policy=label_policy, splits=counts, leaked_groups=leaked,
                        leaked_splits={g: [s for s in SPLITS if s in where[g]] for g in leaked},
                        missing_files=missing)
    return _scanned(report, paths, getattr(cfg.data, "color", "grey"), scan, headers, workers)


def box_report(cfg, boxset, scan: bool = False, workers: int | None = None, headers: bool = False) -> DataReport:
    """The data check of a detection source read by :mod:`spft.data.own_detection` (a ``BoxSet``): the
    :func:`rows_report` counts (images with boxes of each class are its positives) plus boxes per class and split,
    images without boxes and the box-level problems, one line per kind."""
    classes, images = list(boxset.classes), boxset.images
    present = [[any(b[0] == j for b in im.boxes) for j in range(len(classes))] for im in images]
    report = rows_report(cfg, boxset.source, classes, [im.split for im in images], [im.group for im in images],
                         [im.path for im in images], present, group_kind=boxset.group_kind,
                         split_policy=boxset.split_policy, label_policy=boxset.label_policy, scan=scan,
                         workers=workers, headers=headers)
    for split in SPLITS:
        counts = dict.fromkeys(classes, 0)
        for im in images:
            if im.split == split:
                for box in im.boxes:
                    counts[classes[box[0]]] += 1
        report.boxes[split] = counts
        report.images_without_boxes[split] = sum(1 for im in images if im.split == split and not im.boxes)
    report.box_problems = {kind: list(lines) for kind, lines in boxset.problems.items() if lines}
    report.test_is_val = boxset.test_is_val
    report.warnings += list(boxset.warnings)
    return report


def _class_block(title: str, key: str, report: DataReport, width: int, table: dict | None = None) -> list[str]:
    lines = [title]
    for c in report.classes:
        cells = "".join(f"{(table[s] if table is not None else report.splits[s][key]).get(c, 0):>10,}"
                        for s in SPLITS)
        lines.append(f"  {c:<{width - 2}}{cells}")
    return lines


def format_report(report: DataReport) -> str:
    """The human-readable report: a per-split count table, then leakage, missing / unreadable files, warnings."""
    width = max(24, *(len(c) + 4 for c in report.classes))
    kind = report.group_kind + "s"
    title = report.source if report.source.startswith(report.dataset) else f"{report.dataset} — {report.source}"
    lines = [f"dataset: {title}", f"split policy: {report.split_policy}",
             f"label policy: {report.label_policy}", "",
             f"{'':<{width}}" + "".join(f"{s:>10}" for s in SPLITS),
             f"{'images':<{width}}" + "".join(f"{report.splits[s]['n_images']:>10,}" for s in SPLITS),
             f"{kind:<{width}}" + "".join(f"{report.splits[s]['n_groups']:>10,}" for s in SPLITS)]
    lines += _class_block("positives" if not report.boxes else "images with boxes", "positives", report, width)
    if report.boxes:
        lines += _class_block("boxes", "boxes", report, width, report.boxes)
        lines.append(f"{'images without boxes':<{width}}"
                     + "".join(f"{report.images_without_boxes.get(s, 0):>10,}" for s in SPLITS))
    if any(report.splits[s]["uncertain"] for s in SPLITS):
        lines += _class_block("uncertain (source -1, before the policy)", "uncertain", report, width)
    if any(sum(report.splits[s]["unknown"].values()) for s in SPLITS):
        lines += _class_block("unknown (masked in loss and AUC)", "unknown", report, width)
    lines.append("")
    lines.append(f"leakage: {len(report.leaked_groups)} {kind} in more than one split"
                 + (" (must be 0)" if report.leaked_groups else " — OK"))
    lines += [f"  {g} ({', '.join(report.leaked_splits[g])})" for g in report.leaked_groups[:SHOWN]]
    lines.append(f"missing files: {len(report.missing_files)}" + ("" if report.missing_files else " — OK"))
    lines += [f"  {p}" for p in report.missing_files[:SHOWN]]
    if report.checked == "off":
        lines.append("unreadable files: not checked (--headers: the quick check spft train runs; --scan: decode "
                     "every image)")
    else:
        n_bad = len(report.unreadable_files)
        how = "every image decoded" if report.checked == "decode" else "headers checked; --scan decodes"
        lines.append(f"unreadable files: {n_bad} ({how})" + ("" if n_bad else " — OK"))
        lines += [f"  {p}: {e}" for p, e in list(report.unreadable_files.items())[:SHOWN]]
    for kind, offenders in report.box_problems.items():
        lines.append(f"{BOX_PROBLEMS.get(kind, kind)}: {len(offenders)}")
        lines += [f"  {line}" for line in offenders[:SHOWN]]
    longest = max(len(report.leaked_groups), len(report.missing_files), len(report.unreadable_files),
                  *(len(v) for v in report.box_problems.values()))
    if longest > SHOWN:
        lines.append(f"  (the first {SHOWN} of each are shown; --json lists all)")
    if report.warnings:
        lines.append(f"warnings ({len(report.warnings)}; not errors):")
        lines += [f"  ! {w}" for w in report.warnings]
    problems = report.problems
    lines.append("")
    lines.append("result: OK — fit for training" if not problems else f"result: FAILED — {'; '.join(problems)}")
    return "\n".join(lines)

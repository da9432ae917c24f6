"""``spft data check``: what a dataset copy holds and what is wrong with it, before a GPU hour is spent.

Per split: images, patients (or lesions) and positive / uncertain / unknown labels per class; groups found in more
than one split (leakage); listed files that are missing; with ``scan``, every image decoded in parallel (a small
thread pool; Pillow releases the GIL while decoding) and the unreadable ones listed. Counts that differ from the
published ones are warnings; leakage, missing or unreadable files and empty splits are problems (non-zero exit).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spft.data.contract import SPLITS, LabelTable
from spft.data.io import load_image
from spft.data.registry import load_table

log = logging.getLogger(__name__)

SHOWN = 20  # offenders listed in the text report (all of them are in --json)


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

    @property
    def empty_splits(self) -> list[str]:
        return [s for s, counts in self.splits.items() if counts["n_images"] == 0]

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
        return out

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "source": self.source, "classes": self.classes, "group_kind": self.group_kind,
                "split_policy": self.split_policy, "label_policy": self.label_policy, "splits": self.splits,
                "leaked_groups": self.leaked_groups, "missing_files": self.missing_files,
                "unreadable_files": sorted(self.unreadable_files), "unreadable_errors": self.unreadable_files,
                "scanned": self.scanned, "warnings": self.warnings, "problems": self.problems, "ok": not self.problems}


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
            "uncertain": {} if table.uncertain is None else
            {c: int(table.uncertain[rows, j].sum()) for j, c in enumerate(table.classes)},
            "unknown": {c: int(np.isnan(labels[:, j]).sum()) for j, c in enumerate(table.classes)},
        }
    return out


def _decode(path: str, color: str) -> str | None:
    try:
        load_image(path, color)
    except (ValueError, OSError) as exc:
        return str(exc)
    return None


def scan_images(paths: list[str], color: str, workers: int | None = None) -> dict[str, str]:
    """Decode every file in ``paths`` with a small thread pool and a progress bar; returns ``{path: error}``."""
    from tqdm import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    bad: dict[str, str] = {}
    chunk = 1024  # bounded number of pending futures, whatever the dataset size
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(paths), desc="decoding", unit="img") as bar:
        for start in range(0, len(paths), chunk):
            part = paths[start:start + chunk]
            for path, error in zip(part, pool.map(_decode, part, [color] * len(part))):
                if error:
                    bad[path] = error
                bar.update(1)
    return bad


def check_data(cfg, scan: bool = False, workers: int | None = None) -> DataReport:
    """Build the dataset described by ``cfg.data`` without refusing anything, and report on it.

    Args:
        cfg: a loaded :class:`~spft.config.SpftConfig`.
        scan: decode every present image (slow on a full dataset: minutes per 100k images).
        workers: decoding threads (default: min(8, CPUs)).
    """
    table = load_table(cfg.data, cfg.seed)
    missing = [p for p in table.paths if not Path(p).is_file()]
    leaked = table.leaked_groups()
    where: dict[str, set[str]] = {g: set() for g in leaked}
    for group, split in zip(table.groups, table.splits):
        if group in where:
            where[group].add(split)
    report = DataReport(
        dataset=cfg.data.name, source=table.source or str(cfg.data.csv or cfg.data.root), classes=list(table.classes),
        group_kind=table.group_kind, split_policy=table.split_policy, label_policy=table.label_policy,
        splits=split_counts(table), leaked_groups=leaked,
        leaked_splits={g: [s for s in SPLITS if s in where[g]] for g in leaked},
        missing_files=missing, warnings=list(table.warnings))
    if scan:
        absent = set(missing)
        present = sorted({p for p in table.paths if p not in absent})
        report.unreadable_files = scan_images(present, cfg.data.color, workers)
        report.scanned = True
    return report


def _class_block(title: str, key: str, report: DataReport, width: int) -> list[str]:
    lines = [title]
    for c in report.classes:
        cells = "".join(f"{report.splits[s][key].get(c, 0):>10,}" for s in SPLITS)
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
    lines += _class_block("positives", "positives", report, width)
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
    if not report.scanned:
        lines.append("unreadable files: not checked (add --scan to decode every image)")
    else:
        n_bad = len(report.unreadable_files)
        lines.append(f"unreadable files: {n_bad}" + ("" if n_bad else " — OK"))
        lines += [f"  {p}: {e}" for p, e in list(report.unreadable_files.items())[:SHOWN]]
    longest = max(len(report.leaked_groups), len(report.missing_files), len(report.unreadable_files))
    if longest > SHOWN:
        lines.append(f"  (the first {SHOWN} of each are shown; --json lists all)")
    if report.warnings:
        lines.append(f"warnings ({len(report.warnings)}; not errors):")
        lines += [f"  ! {w}" for w in report.warnings]
    problems = report.problems
    lines.append("")
    lines.append("result: OK — fit for training" if not problems else f"result: FAILED — {'; '.join(problems)}")
    return "\n".join(lines)

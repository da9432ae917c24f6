"""What every ``spft export`` writer shares: the refusal of a non-empty ``--out``, JSON files, and the folder written
under a temporary name beside ``--out`` and renamed when complete (an interrupted export leaves no half folder)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spft.errors import ConfigError


def fresh_folder(out: Path) -> None:
    """Refuse ``out`` unless it is absent or an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder (choose a new folder; an export is never "
                          "written over other files)")


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def check_format(format: str, formats: tuple[str, ...], task: str, why: dict | None = None) -> None:  # noqa: A002
    """A one-line refusal of an unknown ``--format`` (``why``: format -> the reason this task has none)."""
    if why and format in why:
        raise ConfigError(f"--format {format}: not available for {task} runs ({why[format]})")
    if format not in formats:
        raise ConfigError(f"--format: expected one of {', '.join(formats)}, got {format!r}")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to fill; on success it becomes ``out`` (files readable as the umask
    allows: safetensors and mkdtemp create owner-only files, an export is for sharing), on failure it is removed."""
    fresh_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.rglob("*"):
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _metric_lines(metrics: dict, prefix: str = "") -> list[str]:
    lines = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines += _metric_lines(value, f"{prefix}{key}.")
        elif key not in ("split", "n"):
            lines.append(f"| {prefix}{key} | {value if not isinstance(value, float) else f'{value:.4f}'} |")
    return lines


def task_card(run_dir: Path, title: str, formats: dict, about: list[str], usage: list[str],
              keys: tuple[str, ...] = ("seed", "recipe", "optim", "trainer")) -> str:
    """``MODEL_CARD.md`` of a detection / segmentation export: the header, ``about`` (model and data lines), the
    recipe (``config.yaml``), the test metrics of ``metrics.json``, intended use and limits, and ``usage``
    (classification's card, :mod:`spft.tasks.classification.model_card`, adds thresholds and calibration)."""
    from spft.experiments.rundir import read_run_yaml
    from spft.tasks.classification.model_card import RESEARCH_ONLY, SAME_SOURCE, card_header, recipe_section

    cfg = read_run_yaml(run_dir / "config.yaml")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = None
    lines = card_header(title, run_dir, formats) + about + recipe_section(cfg, keys) + ["## Test metrics", ""]
    if isinstance(metrics, dict):
        lines += [f"On the run's `{metrics.get('split')}` split (n = {metrics.get('n')}), from `metrics.json`:", "",
                  "| metric | value |", "|---|---|", *_metric_lines(metrics), ""]
    else:
        lines += ["No metrics.json in the run directory (the run did not finish its test evaluation).", ""]
    lines += ["## Intended use and limits", "", RESEARCH_ONLY, SAME_SOURCE, ""]
    return "\n".join(lines + ["## Using this model", "", *usage, ""])

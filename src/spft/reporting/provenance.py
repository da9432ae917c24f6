"""What the runs of a report were run with: the task, the config and the exact ``KEY=VALUE`` overrides.

Read from the run directories only: a sweep's ``sweep.json`` records its config, the overrides given on the
command line (``definition.overrides``, applied to every run) and each study row's own overrides
(``definition.study.overlays[].overrides``); every run directory's ``env.json`` records the command line that
started it (``command``), whose ``KEY=VALUE`` arguments are the run's exact overrides (a sweep's child run gets
the sweep's, then its row's, then ``seed=`` and ``run.dir=``). A run without ``env.json`` falls back to what the
sweep planned for it.

The task comes from each run's ``config.yaml`` (``task:``; a config without the key is the schema's default,
classification), never from which metrics a run has; a sweep whose runs have different tasks is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spft.errors import DataError
from spft.reporting.tables import Table

DEFAULT_TASK = "classification"  # spft.config.schema: task defaults to classification
_COMMANDS = ("train", "demo")


def read_config(run_dir: Path) -> dict:
    """The run's resolved ``config.yaml`` ({} when absent); a damaged file is a one-line error."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return config if isinstance(config, dict) else {}


def task_of(config: dict) -> str:
    return str(config.get("task") or DEFAULT_TASK)


def sweep_task(root: Path, entries: list[dict]) -> str:
    """The one task of every run (with a config.yaml) of ``entries``; a DataError naming runs of each task if mixed."""
    found: dict[str, list[str]] = {}
    for entry in entries:
        run_dir = Path(entry["run_dir"])
        if (run_dir / "config.yaml").is_file():
            found.setdefault(task_of(read_config(run_dir)), []).append(relative_path(run_dir, root))
    if len(found) > 1:
        which = "; ".join(f"{task}: {', '.join(dirs[:3])}{' ...' if len(dirs) > 3 else ''}"
                          for task, dirs in sorted(found.items()))
        raise DataError(f"{root} mixes tasks ({which}); a report covers one task: report each task's runs "
                        "separately")
    return next(iter(found), DEFAULT_TASK)


def command_of(run_dir: Path) -> list[str] | None:
    """The command line recorded in the run's ``env.json`` (None when absent or unreadable)."""
    path = Path(run_dir) / "env.json"
    try:
        command = json.loads(path.read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(c) for c in command] if isinstance(command, list) else None


def overrides_of_command(command: list[str] | None) -> list[str] | None:
    """The ``KEY=VALUE`` arguments of a recorded ``spft train``/``spft demo`` command; None when it is not one."""
    if not command:
        return None
    start = next((i for i, c in enumerate(command) if c in _COMMANDS), None)
    if start is None or "--resume" in command[start:]:
        return None
    return [c for c in command[start + 1:] if "=" in c and not c.startswith("-")]


@dataclass
class Provenance:
    """The config, overrides and commands behind a report's runs."""

    task: str
    config: str | None = None
    common: list[str] = field(default_factory=list)  # given to every run (a sweep's command-line overrides)
    overlays: dict[str, list[str]] = field(default_factory=dict)  # a study row's own overrides
    command: list[str] | None = None  # the sweep's command line
    runs: dict[str, list[str] | None] = field(default_factory=dict)  # run dir -> the exact overrides it ran with

    def of_run(self, run_dir: Path) -> list[str] | None:
        return self.runs.get(str(run_dir))

    def as_json(self, root: Path) -> dict:
        return {"task": self.task, "config": self.config, "overrides": self.common,
                "overlay_overrides": self.overlays, "sweep_command": self.command,
                "run_overrides": {relative_path(Path(k), root): v for k, v in self.runs.items()}}


def provenance(root: Path, task: str, entries: list[dict], study: dict, config: str | None) -> Provenance:
    """Overrides of the sweep (``sweep.json``) and of each run (its ``env.json``), see the module docstring."""
    prov = Provenance(task, config)
    sweep_json = root / "sweep.json"
    planned_common: list[str] = []
    if sweep_json.is_file():
        data = json.loads(sweep_json.read_text())
        prov.common = planned_common = [str(o) for o in data.get("definition", {}).get("overrides", [])]
        prov.command = data.get("command")
        prov.overlays = {o["name"]: [str(x) for x in o.get("overrides", [])] for o in study.get("overlays", [])}
    for entry in entries:
        run_dir = Path(entry["run_dir"])
        own = overrides_of_command(command_of(run_dir))
        if own is None and sweep_json.is_file() and entry.get("seed") is not None:
            own = [*planned_common, *prov.overlays.get(entry["overlay"], []), f"seed={entry['seed']}",
                   f"run.dir={run_dir}"]
        prov.runs[str(run_dir)] = own
    if not sweep_json.is_file():  # a run or a folder of runs: a row's overrides are those all its runs share
        by_overlay: dict[str, list[list[str]]] = {}
        for entry in entries:
            own = prov.runs.get(str(entry["run_dir"]))
            if own is not None:
                by_overlay.setdefault(entry["overlay"], []).append(
                    [o for o in own if not o.startswith(("seed=", "run.dir="))])
        for overlay, lists in by_overlay.items():
            prov.overlays[overlay] = [o for o in lists[0] if all(o in other for other in lists[1:])]
    return prov


def summary_lines(prov: Provenance) -> list[tuple[str, str]]:
    """Header lines: config, the overrides every run got, and the sweep command."""
    lines = [("task", prov.task)]
    if prov.config:
        lines.append(("config", prov.config))
    lines.append(("overrides (every run)", " ".join(prov.common) if prov.common else "none"))
    if prov.command:
        lines.append(("sweep command", " ".join(prov.command)))
    return lines


def relative_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` for tables and report.json (as given when it lies outside ``root``)."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def overrides_table(prov: Provenance, overlays: list[tuple[str, str]]) -> Table:
    """One row per study row (overlay): its label and the overrides it adds; the first row: every run's."""
    table = Table("overrides", "Config and overrides",
                  f"Config {prov.config or '(each run: its own config.yaml)'}. 'every run': the KEY=VALUE overrides "
                  "given to the whole sweep; each row then adds its own (a later override of the same key wins); "
                  "each run also gets seed= and run.dir=. The exact overrides of each run are in the list of runs "
                  "used (from its env.json).",
                  ["row", "label", "overrides"])
    table.rows.append(["every run", "", " ".join(prov.common) or "none"])
    for name, label in overlays:
        table.rows.append([name, label, " ".join(prov.overlays.get(name, [])) or "none"])
    return table


def overrides_text(overrides: list[str] | None) -> str:
    """A run's exact overrides as one line (``unknown`` when neither env.json nor the sweep plan records them)."""
    if overrides is None:
        return "unknown (no env.json command)"
    return " ".join(overrides) or "none"

"""Multi-seed and ablation sweeps: one ``spft train`` subprocess per (overlay, seed), finished runs skipped.

Layout: ``<sweep>/sweep.json`` (what the sweep is and where each run stands), ``<sweep>/<overlay>/seed<k>/`` (a
normal run directory) and ``<sweep>/logs/<overlay>-seed<k>.log`` (the child's output). A run directory with
``DONE`` is skipped, one without is continued with ``spft train --resume``, so re-running an interrupted sweep
picks up where it stopped. A failed run is recorded and the sweep goes on with the others. ``--jobs N`` runs up to
N of them at once, each pinned to its own devices (:mod:`spft.experiments.parallel`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spft.atomic import atomic_write_json
from spft.config import ConfigError
from spft.errors import RunDirError
from spft.experiments.rundir import is_done
from spft.experiments.studies import REPEAT, Study, validate_study
from spft.tracking import attach_sweep, finish_sweep

log = logging.getLogger(__name__)

SWEEP_JSON = "sweep.json"


@dataclass
class PlannedRun:
    """One (overlay, seed) of a sweep; ``action`` is skip | resume | train | blocked, ``status`` where it stands."""

    overlay: str
    seed: int
    run_dir: Path
    action: str
    overrides: tuple[str, ...] = ()
    status: str = "pending"
    returncode: int | None = None
    seconds: float | None = None
    note: str = ""
    devices: str = ""  # the CUDA_VISIBLE_DEVICES it ran with ("" when nothing was pinned)

    @property
    def key(self) -> str:
        return f"{self.overlay}/seed{self.seed}"


@dataclass
class Sweep:
    """A planned sweep: the config, the study (one ``base`` overlay for ``repeat``), the seeds and every run."""

    kind: str  # repeat | ablate
    config: Path
    study: Study
    seeds: list[int]
    overrides: tuple[str, ...]
    out: Path
    runs: list[PlannedRun] = field(default_factory=list)
    status: str = "planned"
    task: str = "classification"  # the config's task: its primary metric heads the closing table

    @property
    def failed(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.status == "failed"]

    def definition(self) -> dict:
        """What must match for an existing sweep directory to be continued (seeds may grow)."""
        return {"kind": self.kind, "config": str(self.config), "overrides": list(self.overrides),
                "study": self.study.as_dict()}


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (or a mix, ``"0-2,7"``) → sorted unique seeds.

    >>> parse_seeds("0-2,7")
    [0, 1, 2, 7]
    """
    seeds: set[int] = set()
    try:
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            lo, _, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
            seeds.update(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers such as 0,1,2 or 0-4") from None
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: no seed given")
    return sorted(seeds)


def run_action(run_dir: Path) -> tuple[str, str]:
    """What a run directory needs: ``skip`` (DONE), ``resume`` (config.yaml, no DONE), ``train`` or ``blocked``.

    Whether a resume continues or starts again is read from the run's task's last checkpoint (``last.ckpt``,
    ``last.pt`` ...: :attr:`spft.tasks.base.Task.checkpoint_names`)."""
    from spft.experiments.rundir import task_of_run
    from spft.tasks.registry import get_task

    if is_done(run_dir):
        return "skip", "finished (DONE)"
    if (run_dir / "config.yaml").is_file():
        last = run_dir / "checkpoints" / get_task(task_of_run(run_dir)).checkpoint_names[1]
        return "resume", f"from {last.name}" if last.is_file() else "no epoch finished: starts again"
    if run_dir.exists() and any(run_dir.iterdir()):
        return "blocked", f"{run_dir} is not empty and holds no run (no config.yaml): move it away"
    return "train", "new"


def plan_sweep(config: str | Path, seeds: list[int], overrides: tuple[str, ...] = (), study: Study | None = None,
               out: str | Path | None = None) -> Sweep:
    """Validate every overlay, lay out the run directories and decide what each run needs.

    Args:
        config: the experiment YAML.
        seeds: one run per seed and overlay.
        overrides: ``KEY=VALUE`` applied to every run, before the overlay's own (the overlay wins).
        study: an ablation study; ``None`` is a plain multi-seed repeat.
        out: the sweep directory; default ``runs/<config name>/repeat`` or ``runs/<config name>/ablate-<study>``,
            so running the same command again continues the same sweep.

    Raises:
        ConfigError: naming the overlay and key that do not validate, before anything runs.
        FileExistsError: when ``out`` holds a sweep with another config, overrides or study.
    """
    kind = "repeat" if study is None else "ablate"
    study = study or REPEAT
    config = Path(config).resolve()
    resolved = validate_study(config, study, tuple(overrides), seed=seeds[0])
    if out is None:
        name = next(iter(resolved.values())).name or config.stem
        out = Path("runs") / name / ("repeat" if kind == "repeat" else f"ablate-{study.name}")
    sweep = Sweep(kind, config, study, list(seeds), tuple(overrides), Path(out),
                  task=next(iter(resolved.values())).task)
    previous = _read_previous(sweep)
    for overlay in study.overlays:
        for seed in sweep.seeds:
            run_dir = sweep.out / overlay.name / f"seed{seed}"
            action, note = run_action(run_dir)
            run_overrides = (*sweep.overrides, *overlay.overrides, f"seed={seed}", f"run.dir={run_dir}")
            sweep.runs.append(PlannedRun(overlay.name, seed, run_dir, action, run_overrides, note=note))
    known = {r.key for r in sweep.runs}
    for key, entry in previous.items():  # runs of seeds not asked for this time stay in the record
        if key not in known:
            sweep.runs.append(PlannedRun(entry["overlay"], int(entry["seed"]), sweep.out / entry["run_dir"], "keep",
                                         status=entry.get("status", "pending"), returncode=entry.get("returncode"),
                                         seconds=entry.get("seconds"), note="not in --seeds this time"))
    sweep.seeds = sorted({r.seed for r in sweep.runs})
    attach_sweep(sweep, next(iter(resolved.values())))  # MLflow (tracking.mlflow.uri): parent run, runs' overrides
    return sweep


def _read_previous(sweep: Sweep) -> dict[str, dict]:
    path = sweep.out / SWEEP_JSON
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    mine = sweep.definition()
    differs = [k for k in mine if old.get("definition", {}).get(k) != mine[k]]
    if differs:
        raise RunDirError(f"{sweep.out} holds another sweep (its {', '.join(differs)} differ from this "
                              f"command's, see {path}); give another --out or remove that directory")
    return {f"{r['overlay']}/seed{r['seed']}": r for r in old.get("runs", [])}


def write_sweep_json(sweep: Sweep) -> Path:
    """Record the sweep (definition, seeds, every run with its status) in ``<sweep>/sweep.json``, atomically."""
    runs = [{"overlay": r.overlay, "seed": r.seed, "run_dir": _relative(r.run_dir, sweep.out), "status": r.status,
             "action": r.action, "returncode": r.returncode, "seconds": r.seconds, "note": r.note,
             "devices": r.devices, "log": _relative(_log_path(sweep, r), sweep.out)} for r in sweep.runs]
    path = sweep.out / SWEEP_JSON
    atomic_write_json(path, {"definition": sweep.definition(), "seeds": sweep.seeds, "status": sweep.status,
                             "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv, "runs": runs})
    return path


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _log_path(sweep: Sweep, run: PlannedRun) -> Path:
    return sweep.out / "logs" / f"{run.overlay}-seed{run.seed}.log"


def _command(sweep: Sweep, run: PlannedRun) -> list[str]:
    base = [sys.executable, "-m", "spft.cli", "train"]
    if run.action == "resume":
        return [*base, "--resume", str(run.run_dir)]
    return [*base, str(sweep.config), *run.overrides]


def _primary(sweep: Sweep, run_dir: Path) -> str:
    """The run's test value of its task's primary metric (macro AUC, mean Dice, mAP@50-95 ...), or ``n/a``."""
    from spft.tasks.registry import get_task

    return get_task(sweep.task).primary_value(run_dir)


def primary_label(sweep: Sweep) -> str:
    """How the sweep's task names its primary metric (the closing table's last column)."""
    from spft.tasks.registry import get_task

    return get_task(sweep.task).primary_label


def run_sweep(sweep: Sweep, slots: list[tuple[str, ...]] | None = None,
              extra: dict[str, tuple[str, ...]] | None = None, display: str = "auto") -> Sweep:
    """Run every planned run (skipping finished ones); returns the sweep with each run's status.

    Args:
        slots: one tuple of device ids per run that may run at once (:func:`spft.experiments.parallel.sweep_slots`);
            default one slot pinning nothing: the runs one after the other, as ``spft train`` would run them.
        extra: overrides added to a new run of an overlay (``trainer.devices=K``:
            :func:`spft.experiments.parallel.device_overrides`).
        display: ``auto`` (a live table on a terminal when several runs go at once, else one line per change),
            ``lines`` or ``table``.

    A failed run is logged with the tail of its output and the sweep continues; ``sweep.failed`` lists them.
    SIGINT / SIGTERM stop the running children (recorded ``interrupted``) and raise KeyboardInterrupt.
    A second sweep process on the same directory (local or ``--launcher slurm`` submitting) raises
    :class:`~spft.errors.RunDirError` naming the holder, before any run starts.
    """
    from spft.experiments.lock import RunLock

    # one sweep process per sweep directory (sweep.json has one writer); its runs lock their own directories
    with RunLock(sweep.out, f"spft {sweep.kind}"):
        return _run_locked(sweep, slots, extra, display)


def _run_locked(sweep: Sweep, slots, extra, display) -> Sweep:
    from spft.experiments.parallel import Scheduler

    todo = [r for r in sweep.runs if r.action in ("train", "resume")]
    for r in sweep.runs:
        if r.action == "skip":
            r.status = "done"
        elif r.action == "blocked":
            r.status = "failed"
    if len({r.run_dir.resolve() for r in todo}) != len(todo):  # never two children in one run directory
        raise RunDirError(f"{sweep.out}: two runs of the sweep share a run directory")
    sweep.status = "running"
    write_sweep_json(sweep)
    try:
        Scheduler(_Hooks(sweep), todo, slots or [()], extra, display).run()
    except KeyboardInterrupt:
        sweep.status = "interrupted"
        write_sweep_json(sweep)
        finish_sweep(sweep)
        raise
    sweep.status = "failed" if sweep.failed else "finished"
    write_sweep_json(sweep)
    finish_sweep(sweep)  # the MLflow parent run's status, when the sweep has one
    return sweep


class _Hooks:
    """What the scheduler (:mod:`spft.experiments.parallel`) asks of a sweep; looked up here at call time, so a test
    can replace ``_command`` by a stand-in child."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.primary_label = primary_label(sweep)

    def command(self, run: PlannedRun) -> list[str]:
        return _command(self.sweep, run)

    def log_path(self, run: PlannedRun) -> Path:
        return _log_path(self.sweep, run)

    def record(self) -> None:
        write_sweep_json(self.sweep)

    def finished(self, run: PlannedRun) -> bool:
        return is_done(run.run_dir)

    def busy(self, run: PlannedRun) -> str | None:
        """The holder of the run's lock when another process still writes there (a child of an earlier sweep
        process that was killed, still saving its checkpoint), else ``None``."""
        from spft.experiments.lock import held_by

        return held_by(run.run_dir) if run.run_dir.is_dir() else None

    def refresh(self, run: PlannedRun) -> None:
        """Decide ``run.action`` again from what its folder holds now (after waiting for a busy run: it may have
        finished, or have a new last checkpoint)."""
        run.action, run.note = run_action(run.run_dir)

    def primary(self, run: PlannedRun) -> str:
        return _primary(self.sweep, run.run_dir)


def summary_rows(sweep: Sweep) -> list[tuple[str, int, str, str, str]]:
    """(overlay, seed, status, primary metric, run dir) for each run, in plan order, for the CLI's closing table."""
    return [(r.overlay, r.seed, r.status, _primary(sweep, r.run_dir) if r.status == "done" else "-", str(r.run_dir))
            for r in sweep.runs]

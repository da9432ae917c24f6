"""The run directory: the single record of a run that evaluation, resume and reporting read.

Layout (docs/decisions.md, rule 9): ``config.yaml`` (resolved), ``env.json``, ``history.csv``, ``class_weights.json``,
``metrics.json``, ``predictions_test.csv``, ``checkpoints/{last,best}.ckpt``, ``logs/`` and ``DONE``.
Every file is written atomically (:mod:`spft.atomic`: temp file in the same folder, fsync, ``os.replace``) so a
crash never leaves a truncated file behind.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from spft.atomic import atomic_write_csv, atomic_write_json, atomic_write_text, clean_temp_files, storage_error
from spft.distributed import launched_world, secondary_rank
from spft.errors import ConfigError, MissingFileError, RunDirError

DONE = "DONE"


def default_run_dir(name: str) -> Path:
    return Path("runs") / name / time.strftime("%Y%m%d-%H%M%S")


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str, speed: dict | None = None) -> dict:
    """Versions, git SHA and device, for ``env.json``; plus ``speed`` when given.

    ``speed`` is :func:`spft.models.speed.apply_speed_options`'s record of what is in effect (attention
    implementation, gradient checkpointing, channels-last, compile, precision); stored as is under ``"speed"``.
    """
    import lightning
    import torch
    import transformers

    from spft._version import __version__

    env = {
        "spft": __version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if speed is not None:
        env["speed"] = dict(speed)
    return env


def write_split_record(run_dir: str | Path, split: str, rows: list[dict], metrics: dict,
                       best_epoch: int | None = None, suffix: str = "") -> None:
    """``predictions_<split><suffix>.csv`` from ``rows`` and the metrics file — ``metrics.json`` for the training
    record's test split, ``metrics_<split><suffix>.json`` otherwise — with ``best_epoch`` when known. Every task's
    evaluation writes through here, so the names stay the same across tasks."""
    run_dir = Path(run_dir)
    atomic_write_csv(run_dir / f"predictions_{split}{suffix}.csv", rows)
    metrics = dict(metrics)
    if best_epoch is not None:
        metrics["best_epoch"] = int(best_epoch)
    name = "metrics.json" if split == "test" and not suffix else f"metrics_{split}{suffix}.json"
    atomic_write_json(run_dir / name, metrics)


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def mark_done(run_dir: str | Path) -> None:
    atomic_write_text(Path(run_dir) / DONE, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


RUN_DIR_ENV = "SPFT_RUN_DIR"  # set by rank 0; Lightning's DDP launcher copies it to the processes it starts


def _job_id() -> str | None:
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return os.environ.get("SLURM_JOB_ID") or (run_id if run_id and run_id != "none" else None)


def create_run_dir(cfg) -> Path:
    """The run directory for a new run: ``run.dir`` or ``runs/<name>/<timestamp>``; an existing run is refused.

    Sets ``cfg.run.dir`` so the resolved ``config.yaml`` records where the run lives. Under DDP every rank must
    use the same directory: processes Lightning starts inherit ``$SPFT_RUN_DIR`` from rank 0; under torchrun or
    SLURM, where all ranks start at once, it is ``run.dir`` or ``runs/<name>/<job id>``.
    """
    if secondary_rank():
        shared = os.environ.get(RUN_DIR_ENV) or cfg.run.dir
        if not shared and _job_id():
            shared = str(Path("runs") / (cfg.name or "run") / _job_id())
        if not shared:
            raise ConfigError("this is a secondary DDP rank but no run directory is shared with rank 0: set "
                              "run.dir=... so every rank writes to the same run")
        cfg.run.dir = shared
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    if not cfg.run.dir and launched_world() > 1:
        if not _job_id():
            raise ConfigError(f"{launched_world()} processes were launched but run.dir is not set: set "
                              "run.dir=... so every rank writes to the same run")
        cfg.run.dir = str(Path("runs") / (cfg.name or "run") / _job_id())
    run_dir = Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg.name or "run")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(run_dir, exc) from exc
    from spft.experiments.lock import LOCK, lock_run

    lock_run(run_dir, "train")  # first: a process still writing there is named as the holder
    _refuse_used(run_dir, ignore=(LOCK,))
    if created:
        _CREATED.add(run_dir.resolve())
    cfg.run.dir = str(run_dir)
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    return run_dir


_CREATED: set[Path] = set()  # run directories this process created (a failed start removes them again)


def _refuse_used(run_dir: Path, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a folder that holds anything but what a start killed before writing ``config.yaml`` leaves behind
    (its lock file, temp files, an empty ``checkpoints/`` or ``logs/``): that is no run, and may be used again."""
    if not run_dir.is_dir():
        return
    entries = [p for p in run_dir.iterdir()
               if p.name not in ignore and not (p.name.startswith(".") and p.name.endswith(".tmp"))]
    leftovers = all(p.is_dir() and p.name in ("checkpoints", "logs") and not any(p.rglob("*.*"))
                    for p in entries)
    if entries and not leftovers:
        raise RunDirError(f"run.dir {run_dir} already holds a run; resume it with `spft train --resume "
                          f"{run_dir}` or choose another run.dir")


def discard_failed_start(run_dir: str | Path, checkpoint_names: tuple[str, ...] = ()) -> bool:
    """Remove a run directory this process created when the run failed before its first checkpoint.

    A failed start (a bad image found in the first epoch, a model that does not fit in memory ...) must not leave
    a half-made directory that blocks ``spft train`` with the same ``run.dir``. Directories that hold a checkpoint,
    or that this process did not create, are kept (a checkpoint: any ``.ckpt`` / ``.pt`` file, or one of the task's
    ``checkpoint_names``). Returns whether it was removed.
    """
    import shutil

    run_dir = Path(run_dir)
    key = run_dir.resolve()
    checkpoints = run_dir / "checkpoints"
    kept = any(checkpoints.glob("*.ckpt")) or any(checkpoints.glob("*.pt"))
    if key not in _CREATED or kept or any((checkpoints / name).is_file() for name in checkpoint_names):
        return False
    from spft.experiments.lock import release_run_locks

    release_run_locks()
    shutil.rmtree(run_dir, ignore_errors=True)
    _CREATED.discard(key)
    return True


def load_run_config(run_dir: str | Path, overrides: tuple[str, ...] | list[str] = ()):
    """The validated config recorded in ``run_dir/config.yaml``, with optional ``KEY=VALUE`` overrides."""
    from spft.config import load_config

    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise MissingFileError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(None, overrides=overrides, base=read_run_yaml(config_file))
    cfg.run.dir = str(run_dir)
    return cfg


def read_run_yaml(config_file: str | Path) -> dict:
    """A run's ``config.yaml`` as a mapping; a damaged or non-mapping file is one line naming it."""
    import yaml

    try:
        data = yaml.safe_load(Path(config_file).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{config_file} is damaged{at}: not valid YAML — restore it from a copy or "
                          "re-create it from the experiment config") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file} is damaged: expected a mapping of config sections, got "
                          f"{type(data).__name__}")
    return data


def config_to_resume(run_dir: str | Path):
    """The config of a run to continue (its lock taken), or ``None`` when it already finished (``DONE`` exists).

    Temp files that killed writes left behind are removed first.
    """
    from spft.experiments.lock import lock_run

    if not (Path(run_dir) / "config.yaml").is_file():
        raise MissingFileError(f"{run_dir} is not a run directory (no config.yaml)")
    lock_run(run_dir, "resume")
    if not secondary_rank():
        for tmp in clean_temp_files(run_dir):
            logging.getLogger(__name__).info("removed %s (left by a killed write)", tmp)
    cfg = load_run_config(run_dir)
    if is_done(run_dir):
        logging.getLogger(__name__).info("%s is already finished (DONE exists); nothing to resume", run_dir)
        return None
    return cfg


def checked_split(split: str) -> str:
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split: expected train, val or test, got {split!r}")
    return split


def task_of_model(source: str | Path) -> str:
    """The task of a run directory (``config.yaml``) or of an ``spft export`` folder (``config.json``'s ``spft``
    block)."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise MissingFileError(f"{source}: no such run directory or export folder")
    if (source / "config.yaml").is_file():
        return task_of_run(source)
    config_json = source / "config.json"
    if config_json.is_file():
        import json

        try:
            block = json.loads(config_json.read_text(encoding="utf-8")).get("spft")
        except (ValueError, UnicodeDecodeError, AttributeError):
            block = None
        if isinstance(block, dict) and block.get("task"):
            return str(block["task"])
    raise MissingFileError(f"{source} is neither a run directory (no config.yaml) nor an spft export folder "
                           f"(no config.json with an spft block)")


def task_of_run(run_dir: str | Path) -> str:
    """The task recorded in a run directory's ``config.yaml``."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise MissingFileError(f"{run_dir} is not a run directory (no config.yaml)")
    return read_run_yaml(config_file).get("task", "classification")

"""``spft repeat|ablate ... --launcher slurm``: a sweep's runs as one SLURM job array, submitted through submitit.

This module owns the ``--launcher`` / ``--slurm-*`` options of ``spft repeat`` and ``spft ablate``
(:func:`add_slurm_arguments`), turning them into submitit executor parameters (:func:`executor_parameters`), the
submission of the runs that need work as one job array, the record of their job ids (``<sweep>/slurm.json``) and,
when the same command runs again, each run's state (``DONE`` from the run directory, else the job's state from
``sacct``) with the failed or missing runs resubmitted (:func:`submit_or_show`). What each array task runs — ``spft
train`` as a child process, requeued on preemption — is :class:`spft.experiments.slurm_run.SweepRun`.

The planning (which runs exist, which are finished, which continue) is :func:`spft.experiments.sweep.plan_sweep`'s,
and the record ``sweep.json`` is the same file the local launcher writes (each submitted run has status
``submitted``). submitit is imported only when submitting or reading job states: it is the ``slurm`` extra
(``pip install 'spft[slurm]'``). ``--slurm-executor local`` runs the very same job array with submitit's
LocalExecutor on this machine (every run at once, in the background): a dry run on a workstation, and the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

from spft.atomic import atomic_write_json, open_regular
from spft.compat import SUBMITIT_LOCAL_CONTROLLER, submission_script
from spft.errors import ConfigError, DependencyError, SpftError
from spft.experiments.sweep import PlannedRun, Sweep, _log_path, write_sweep_json

SLURM_JSON = "slurm.json"
DEFAULT_TIME = "04:00:00"
CPUS_PER_GPU = 8  # default --slurm-cpus-per-run: 8 per GPU (decoding PNGs is the usual bottleneck), 8 without GPU
SIGNAL_DELAY_S = 90  # SLURM signals the job this long before its time limit (submitit's --signal=USR2@90)
MAX_TIMEOUTS = 10  # requeues after a time-out (preemptions do not count) before submitit gives the run up

# sacct states of a job that is not over: such a run is never resubmitted
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING", "READY", "UNKNOWN"}  # PREEMPTED without --requeue is final

_OPTIONS = ("slurm_partition", "slurm_time", "slurm_gpus_per_run", "slurm_cpus_per_run", "slurm_mem",
            "slurm_array_parallelism", "slurm_opt", "slurm_folder", "slurm_executor")


class SlurmError(SpftError):
    """sbatch refused the job array, or SLURM's commands are not on this machine."""


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """``--launcher local|slurm`` and the ``--slurm-*`` options, on the ``repeat`` and ``ablate`` parsers."""
    parser.add_argument("--launcher", choices=["local", "slurm"], default="local",
                        help="local (default): run here; slurm: submit the runs that need work as one SLURM job "
                             "array (submitit) and return; run the command again to see each run's state and "
                             "resubmit failed runs")
    g = parser.add_argument_group("SLURM (--launcher slurm)")
    g.add_argument("--slurm-partition", metavar="NAME", help="partition (default: the cluster's)")
    g.add_argument("--slurm-time", metavar="TIME", help="time limit of each run: minutes or HH:MM:SS (default "
                                                        f"{DEFAULT_TIME}); a run still going is requeued and resumes")
    g.add_argument("--slurm-gpus-per-run", type=int, metavar="N", help="GPUs per run (default 1; more need "
                                                                       "trainer.devices=N)")
    g.add_argument("--slurm-cpus-per-run", type=int, metavar="N", help=f"CPU cores per run (default {CPUS_PER_GPU} "
                                                                       "per GPU)")
    g.add_argument("--slurm-mem", metavar="MEM", help="memory per run: 64G, 500M, or a number of GB (default: the "
                                                      "partition's)")
    g.add_argument("--slurm-array-parallelism", type=int, metavar="N", help="at most N runs at a time (default: all)")
    g.add_argument("--slurm-opt", action="append", metavar="KEY=VALUE", help="any other sbatch option, e.g. "
                                                                             "account=proj or constraint=a100 "
                                                                             "(repeatable; KEY alone for a flag)")
    g.add_argument("--slurm-folder", metavar="DIR", help="submitit's folder: sbatch scripts, job logs and pickles "
                                                         "(default SWEEP/slurm)")
    g.add_argument("--slurm-executor", choices=["slurm", "local"], help="slurm (default); local: the same job "
                                                                        "array with submitit's LocalExecutor on "
                                                                        "this machine, every run at once in the "
                                                                        "background (a dry run; the tests)")


def wanted(args: argparse.Namespace) -> bool:
    """True for ``--launcher slurm``; a ``--slurm-*`` option without it is refused (it would train here instead)."""
    if getattr(args, "launcher", "local") == "slurm":
        local = [f"--{name}" for name, default in (("jobs", 1), ("devices", None), ("gpus_per_run", None))
                 if getattr(args, name, default) != default]
        if local:
            raise ConfigError(f"{local[0].replace('_', '-')} applies to --launcher local; with --launcher slurm give "
                              "--slurm-array-parallelism N (runs at a time) and --slurm-gpus-per-run K")
        return True
    given = [name for name in _OPTIONS if getattr(args, name, None) not in (None, [])]
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} applies to --launcher slurm; add --launcher slurm or "
                          "drop the --slurm-* options")
    return False


# --- options -> submitit parameters ---------------------------------------------------------------------------------

def parse_time(text: str) -> int:
    """``--slurm-time``: minutes (``240``), ``HH:MM:SS`` (``04:00:00``) or ``D-HH:MM:SS`` → whole minutes.

    >>> parse_time("04:00:00"), parse_time("90"), parse_time("1-00:00:30")
    (240, 90, 1441)
    """
    text = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):([0-5]?\d):([0-5]?\d)", text)
    if m:
        days, hours, minutes, seconds = (int(v or 0) for v in m.groups())
        total = math.ceil((((days * 24 + hours) * 60 + minutes) * 60 + seconds) / 60)
    elif text.isdigit():
        total = int(text)
    else:
        raise ConfigError(f"--slurm-time {text!r}: expected minutes (240) or HH:MM:SS (04:00:00)")
    if total < 1:
        raise ConfigError(f"--slurm-time {text!r}: the time limit must be at least a minute")
    return total


def parse_mem(text: str) -> str:
    """``--slurm-mem``: ``64G``, ``500M``, ``1.5T`` as SLURM writes them; a bare number is GB.

    >>> parse_mem("64"), parse_mem("500mb"), parse_mem("1.5G")
    ('64G', '500M', '1536M')
    """
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", str(text).strip(), flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--slurm-mem {text!r}: expected a size such as 64G or 500M (a bare number is GB)")
    value, unit = float(m.group(1)), (m.group(2) or "G").upper()
    if value != int(value):  # SLURM takes whole numbers: 1.5G -> 1536M
        units = "KMGT"
        if unit == "K":
            raise ConfigError(f"--slurm-mem {text!r}: give whole kilobytes")
        value, unit = value * 1024, units[units.index(unit) - 1]
    return f"{math.ceil(value)}{unit}"


def parse_opts(items: list[str] | None) -> dict[str, object]:
    """``--slurm-opt KEY=VALUE`` (repeatable) → submitit's ``additional_parameters``; ``KEY`` alone is a flag.

    >>> parse_opts(["account=proj", "--constraint=a100", "exclusive"])
    {'account': 'proj', 'constraint': 'a100', 'exclusive': True}
    """
    opts: dict[str, object] = {}
    for item in items or []:
        key, eq, value = str(item).partition("=")
        key = key.strip().removeprefix("--")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key) or (eq and not value.strip()):
            raise ConfigError(f"--slurm-opt {item!r}: expected KEY=VALUE (an sbatch option without its --, e.g. "
                              "account=proj or mail-type=END) or KEY alone for a flag")
        if key.replace("-", "_") in ("array", "output", "error", "signal", "open_mode", "wckey"):
            raise ConfigError(f"--slurm-opt {item!r}: --{key} is set by the launcher")
        opts[key] = value.strip() if eq else True
    return opts


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < (0 if name == "gpus-per-run" else 1):
        raise ConfigError(f"--slurm-{name} {value}: expected {'0 or more' if name == 'gpus-per-run' else '1 or more'}")


def executor_parameters(args: argparse.Namespace, job_name: str = "spft") -> tuple[str, dict]:
    """(executor kind, submitit parameters) from the ``--slurm-*`` options; ConfigError naming a malformed one.

    The kind is ``slurm`` (parameters of :class:`submitit.SlurmExecutor`: one task per run with its GPUs, cores,
    memory, time, partition, the array's parallelism and any ``--slurm-opt``) or ``local``
    (:class:`submitit.LocalExecutor`: time limit and GPUs only)."""
    kind = args.slurm_executor or "slurm"
    minutes = parse_time(args.slurm_time or DEFAULT_TIME)
    for name in ("gpus-per-run", "cpus-per-run", "array-parallelism"):
        _positive(name, getattr(args, "slurm_" + name.replace("-", "_")))
    gpus = 1 if args.slurm_gpus_per_run is None else args.slurm_gpus_per_run
    if kind == "local":
        return kind, {"timeout_min": minutes, "gpus_per_node": gpus, "tasks_per_node": 1,
                      "signal_delay_s": SIGNAL_DELAY_S}
    params: dict = {"job_name": job_name, "time": minutes, "nodes": 1, "ntasks_per_node": 1,
                    "cpus_per_task": args.slurm_cpus_per_run or CPUS_PER_GPU * max(1, gpus),
                    "signal_delay_s": SIGNAL_DELAY_S,
                    "additional_parameters": {"requeue": True, **parse_opts(args.slurm_opt)}}
    if gpus:
        params["gpus_per_task"] = gpus
    if args.slurm_partition:
        params["partition"] = args.slurm_partition
    if args.slurm_mem:
        params["mem"] = parse_mem(args.slurm_mem)
    if args.slurm_array_parallelism:
        params["array_parallelism"] = args.slurm_array_parallelism
    return kind, params


# --- submitit -------------------------------------------------------------------------------------------------------

def require_submitit():
    """The submitit module, or a one-line DependencyError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise DependencyError("--launcher slurm needs submitit: pip install 'spft[slurm]'") from None
    return submitit


def make_executor(kind: str, folder: str | Path, params: dict):
    """A submitit executor for ``kind`` (slurm | local) with ``params``; SLURM's commands must be on PATH."""
    submitit = require_submitit()
    if kind == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIMEOUTS)
    else:
        missing = [cmd for cmd in ("sbatch", "srun") if shutil.which(cmd) is None]
        if missing:
            raise SlurmError(f"{' and '.join(missing)} not found on PATH: --launcher slurm submits from a SLURM "
                             "login node (--slurm-executor local runs the same job array on this machine)")
        executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIMEOUTS)
    try:
        executor.update_parameters(**params)
    except ValueError as exc:
        raise ConfigError(f"--slurm-opt: {str(exc).splitlines()[0]}") from None
    return executor


def sbatch_script(executor, n_runs: int) -> str:
    """The sbatch script submitit writes for an array of ``n_runs`` (what :func:`submit_or_show` submits)."""
    if n_runs > 1:
        executor.parameters["map_count"] = n_runs
    try:
        return submission_script(executor, "preview")
    finally:
        executor.parameters.pop("map_count", None)


@contextlib.contextmanager
def _background(log: Path):
    """stdin/stdout/stderr of processes started inside go to ``log``: LocalExecutor's job controllers outlive this
    command and must not hold its terminal or pipes open."""
    sys.stdout.flush()
    sys.stderr.flush()
    log.parent.mkdir(parents=True, exist_ok=True)
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    null = os.open(os.devnull, os.O_RDONLY)
    out = open_regular(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # never through a link planted there
    try:
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        yield
    finally:
        for fd, copy in zip((0, 1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)
        os.close(out)


def submit_runs(executor, kind: str, sweep: Sweep, runs: list[PlannedRun]) -> list[str]:
    """Submit ``runs`` as one job array (one job per run with the local executor); returns their job ids."""
    from spft.experiments.slurm_run import SweepRun

    cwd = os.getcwd()
    calls = [SweepRun(r.key, str(sweep.config), r.overrides, str(r.run_dir), str(_log_path(sweep, r).resolve()),
                      cwd, stop_timeout_s=SIGNAL_DELAY_S - 15) for r in runs]
    quiet = _background(Path(executor.folder) / "local-executor.log") if kind == "local" else contextlib.nullcontext()
    try:
        with quiet, executor.batch():
            jobs = [executor.submit(call) for call in calls]
    except SpftError:
        raise
    except Exception as exc:  # sbatch refused (a partition that does not exist, a time over the limit ...)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else repr(exc))
        raise SlurmError(f"submitting {len(runs)} run(s) failed: {reason}") from None
    return [str(job.job_id) for job in jobs]


# --- job states -----------------------------------------------------------------------------------------------------

def _result_state(folder: str, job_id: str) -> str | None:
    """COMPLETED / FAILED from the job's result pickle (submitit writes it when the callable returns or raises)."""
    from submitit.core.utils import JobPaths, pickle_load

    path = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if not path.is_file():
        return None
    try:
        outcome = pickle_load(path)[0]
    except Exception:  # a half-written pickle: the job is finishing
        return None
    return "COMPLETED" if outcome == "success" else "FAILED"


def _local_state(folder: str, job_id: str) -> str:
    done = _result_state(folder, job_id)
    if done:
        return done
    try:  # the job id of a local job is its controller's PID
        alive = SUBMITIT_LOCAL_CONTROLLER.encode() in Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        alive = False
    return "RUNNING" if alive else "INTERRUPTED"


def job_states(entries: dict[str, dict]) -> dict[str, str]:
    """``run key -> state`` of each recorded job (``entries``: slurm.json's run entries): sacct's state for a SLURM
    job (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT ...; when sacct has no record, the job's result
    file decides if there is one, else squeue: GONE when the job is not queued, UNKNOWN when it is or squeue cannot
    say), COMPLETED / FAILED / RUNNING / INTERRUPTED for a local job."""
    states = {key: _local_state(e["folder"], e["job_id"]) for key, e in entries.items() if e["executor"] == "local"}
    slurm = {key: e for key, e in entries.items() if e["executor"] != "local"}
    if slurm:
        require_submitit()
        from submitit.slurm.slurm import SlurmJob

        if shutil.which("sacct") is None:
            raw = {key: "UNKNOWN" for key in slurm}
        else:
            SlurmJob.watcher.clear()
            jobs = {key: SlurmJob(e["folder"], e["job_id"]) for key, e in slurm.items()}
            SlurmJob.watcher.update()  # one sacct call for all of them
            raw = {key: SlurmJob.watcher.get_state(job.job_id, mode="cache") for key, job in jobs.items()}
        queued = None
        for key, state in raw.items():
            word = (state or "UNKNOWN").split()[0].upper().rstrip("+")
            if word == "UNKNOWN":
                word = _result_state(slurm[key]["folder"], slurm[key]["job_id"]) or word
            if word == "UNKNOWN":  # no accounting record (yet, or accounting is off): is it still in the queue?
                queued = _queued() if queued is None else queued
                word = "GONE" if queued is not None and slurm[key]["job_id"] not in queued else word
            states[key] = word
    return states


def _queued() -> set[str] | None:
    """Job ids in SLURM's queue for this user (array tasks one by one), or None when squeue cannot say."""
    import getpass
    import subprocess

    if shutil.which("squeue") is None:
        return None
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-u", getpass.getuser()], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()} if proc.returncode == 0 else None


# --- the command ----------------------------------------------------------------------------------------------------

_PATH_KEYS = ("folder", "log")  # the paths of a run entry in slurm.json


def read_record(sweep: Sweep) -> dict:
    """``slurm.json`` with its paths absolute again: they are stored relative to the sweep folder when inside it, so
    a moved or copied sweep still finds its submitit folder and logs (see :func:`write_record`)."""
    path = sweep.out / SLURM_JSON
    if not path.is_file():
        return {"arrays": [], "runs": {}}
    record = json.loads(path.read_text())
    record.setdefault("arrays", [])
    record.setdefault("runs", {})
    for entry in record["runs"].values():
        for key in _PATH_KEYS:
            if isinstance(entry.get(key), str) and not Path(entry[key]).is_absolute():
                entry[key] = str(sweep.out / entry[key])
    return record


def write_record(sweep: Sweep, record: dict) -> None:
    """Write ``slurm.json`` with each path inside the sweep folder stored relative to it (others as given)."""
    root = sweep.out.resolve()
    out = json.loads(json.dumps(record))
    for entry in out["runs"].values():
        for key in _PATH_KEYS:
            value = entry.get(key)
            if isinstance(value, str) and Path(value).is_absolute() and Path(value).resolve().is_relative_to(root):
                entry[key] = str(Path(value).resolve().relative_to(root))
    atomic_write_json(sweep.out / SLURM_JSON, out)


def check_devices(sweep: Sweep, gpus: int) -> None:
    """Each new run's ``trainer.devices`` must use the GPUs the job asks for (a resumed run keeps its config): 1 or
    ``auto`` for one GPU (or none), N or ``auto`` for ``--slurm-gpus-per-run N``; else a ConfigError naming the
    overlay, before anything is submitted."""
    from spft.config import load_config

    want, seen = max(1, gpus), set()
    for run in sweep.runs:
        if run.action != "train" or run.overlay in seen:
            continue
        seen.add(run.overlay)
        devices = load_config(sweep.config, list(run.overrides)).trainer.devices
        n = len(devices) if isinstance(devices, (list, tuple)) else devices
        if n != "auto" and str(n) != str(want):
            raise ConfigError(f"overlay '{run.overlay}': trainer.devices={devices!r}, but --slurm-gpus-per-run "
                              f"{gpus} gives each run {gpus} GPU(s); add trainer.devices={want} (or auto)")


def submit_or_show(sweep: Sweep, args: argparse.Namespace) -> int:
    """Submit the sweep's unfinished runs as one job array, or — run again — show every run's state and resubmit
    the failed or missing ones. Records job ids in ``slurm.json`` and statuses in ``sweep.json``; returns at once
    (exit status 1 only when a run cannot be submitted at all: a blocked run directory)."""
    kind, params = executor_parameters(args, job_name=f"spft-{sweep.out.name}")
    require_submitit()
    folder = Path(args.slurm_folder) if args.slurm_folder else sweep.out / "slurm"
    from spft.experiments.lock import RunLock

    with RunLock(sweep.out, "spft submit"):  # two commands at once must not both submit the same runs
        return _submit_or_show(sweep, kind, params, folder)


def _submit_or_show(sweep: Sweep, kind: str, params: dict, folder: Path) -> int:
    record = read_record(sweep)
    todo = [r for r in sweep.runs if r.action in ("train", "resume")]
    known = {r.key: record["runs"][r.key] for r in todo if r.key in record["runs"]}
    states = job_states(known) if known else {}
    to_submit: list[PlannedRun] = []
    shown: dict[str, tuple[str, str, str]] = {}  # key -> (state, job, note)
    for r in sweep.runs:
        entry = record["runs"].get(r.key, {})
        if r.action == "skip":
            r.status = "done"
            shown[r.key] = ("DONE", entry.get("job_id", "-"), r.note)
        elif r.action == "blocked":
            r.status = "failed"
            shown[r.key] = ("BLOCKED", "-", r.note)
        elif r.action == "keep":
            shown[r.key] = (r.status.upper(), entry.get("job_id", "-"), r.note)
        elif r.key in states and states[r.key] in ACTIVE:
            state = states[r.key]
            r.status = "running" if state == "RUNNING" else "submitted"
            note = "not resubmitted: queued, but sacct has no record of the job yet" if state == "UNKNOWN" else ""
            shown[r.key] = (state, entry["job_id"], note)
        else:
            to_submit.append(r)
            state = states.get(r.key)
            shown[r.key] = (state or "NEW", entry.get("job_id", "-"),
                            f"see {_log_path(sweep, r)}" if state else r.note)
    if to_submit:  # refused before anything is submitted
        check_devices(sweep, params.get("gpus_per_task", params.get("gpus_per_node", 0)))
    job_ids: list[str] = []
    if to_submit:
        executor = make_executor(kind, folder, params)
        job_ids = submit_runs(executor, kind, sweep, to_submit)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record["arrays"].append({"job_id": _array_id(job_ids, kind), "executor": kind, "submitted": now,
                                 "runs": [r.key for r in to_submit], "job_ids": job_ids})
        for r, job_id in zip(to_submit, job_ids):
            entry = record["runs"].setdefault(r.key, {"attempts": []})
            entry.update(job_id=job_id, executor=kind, folder=str(Path(folder).resolve()), submitted=now,
                         log=str(_log_path(sweep, r)))
            entry["attempts"].append(job_id)
            r.status = "submitted"
            state, old, note = shown[r.key]
            shown[r.key] = ("SUBMITTED", job_id, note if state == "NEW" else f"resubmitted after {state} of {old}; "
                                                                              f"{note}")
        write_record(sweep, record)
    statuses = {r.status for r in sweep.runs}
    sweep.status = ("failed" if "failed" in statuses else
                    "finished" if statuses <= {"done"} else "submitted")
    write_sweep_json(sweep)
    _print(sweep, kind, folder, shown, to_submit, job_ids, params)
    return 1 if any(r.action == "blocked" for r in sweep.runs) else 0


def _array_id(job_ids: list[str], kind: str) -> str:
    if kind == "local":
        return ",".join(job_ids)
    return job_ids[0].split("_")[0]


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _print(sweep: Sweep, kind: str, folder: Path, shown: dict, submitted: list[PlannedRun], job_ids: list[str],
           params: dict) -> None:
    where = "SLURM" if kind == "slurm" else "this machine (submitit LocalExecutor)"
    print(f"sweep {sweep.out} ({sweep.study.name}, seeds {','.join(map(str, sweep.seeds))}): {len(sweep.runs)} "
          f"run{'s' if len(sweep.runs) != 1 else ''} on {where}; job files in {folder}")
    width = max([len("overlay")] + [len(r.overlay) for r in sweep.runs])
    jw = max([len("job")] + [len(str(v[1])) for v in shown.values()])
    print(f"  {'overlay':<{width}}  seed  {'state':<11} {'job':<{jw}}  note")
    for r in sweep.runs:
        state, job, note = shown[r.key]
        print(f"  {r.overlay:<{width}}  {r.seed:<4}  {state:<11} {job:<{jw}}  {note}")
    if submitted:
        names = ", ".join(r.key for r in submitted)
        if kind == "slurm":
            limit = params.get("array_parallelism")
            at_once = f", at most {limit} at a time" if limit and limit < len(submitted) else ""
            what = "job array" if len(submitted) > 1 else "job"
            print(f"submitted {what} {_array_id(job_ids, kind)}: {_runs(len(submitted))}{at_once} ({names})")
        else:
            print(f"started {_runs(len(submitted))} in the background as local jobs {', '.join(job_ids)} ({names})")
        print("run the same command again to see each run's state and resubmit failed runs")
    elif all(shown[r.key][0] == "DONE" for r in sweep.runs):
        print("every run is finished; nothing to submit")
    else:
        print("nothing to submit: every unfinished run has a job pending or running")
    print(sweep.out)

"""MLflow tracking of runs and sweeps (the ``track`` extra), through :class:`mlflow.tracking.MlflowClient` only.

:class:`MlflowTracker` sends one folder's records (a run directory, or a sweep directory for the sweep's parent run)
as calls of a few kinds — ``run`` (create the MLflow run), ``params``, ``tags``, ``metrics``, ``artifacts``,
``status`` — each a JSON payload, so that a call the server does not take can be written to
``tracking_unsent.jsonl`` as it is and sent again later (:meth:`MlflowTracker.replay`, ``spft track push``).

Failures never reach training: every call is wrapped; the first failure of each kind is one warning line on stderr
naming the URI and the error; a server that cannot be reached (connection refused, timeout) switches the tracker to
offline for the rest of the process, so a dead server costs one quick probe (no retries, 5 s timeout) at the start,
not minutes per epoch. MLflow's HTTP retries default to 2 and its timeout to 30 s here (``setdefault``: the
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` you set win).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
from pathlib import Path

from spft.errors import DependencyError, TrackingError
from spft.tracking.records import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE,
    STATE_FILE,
    UNSENT_FILE,
    TrackingState,
    UnsentLog,
    artifact_files,
    chunks,
    epoch_metrics,
    epoch_of,
    final_metrics,
    flat_params,
    now_ms,
    number,
    read_history,
)

INSTALL_HINT = "pip install 'spft[track]'"

try:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID, MLFLOW_SOURCE_NAME, MLFLOW_USER
except ImportError as exc:  # the extra is missing: one line, before any training
    raise DependencyError(f"tracking.mlflow.uri is set but MLflow cannot be imported ({exc}): {INSTALL_HINT}") from None

log = logging.getLogger(__name__)

RETRIES, TIMEOUT = "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"
HTTP_DEFAULTS = {RETRIES: "2", TIMEOUT: "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
PROBE = {RETRIES: "0", TIMEOUT: "5"}
TERMINAL = ("FINISHED", "FAILED", "KILLED")
KINDS = ("run", "params", "tags", "metrics", "artifacts", "status")  # the calls spft queues


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet():
    """urllib3 logs each retry as a warning; the tracker says what failed itself, once."""
    pool = logging.getLogger("urllib3.connectionpool")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool.setLevel(level)


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server could not be reached (as opposed to refusing one call)."""
    import requests

    seen, depth = exc, 0
    while seen is not None and depth < 10:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                             TimeoutError)):
            return True
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    text = str(exc)
    return any(s in text for s in ("Max retries exceeded", "timed out", "timeout exception", "Connection refused",
                                   "Failed to establish a new connection", "Name or service not known"))


def _one_line(exc: BaseException) -> str:
    """The error in a few words: the OS error of a failed connection (``[Errno 111] Connection refused``), else the
    first line of the message, cut at 300 characters."""
    import re

    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\][^'\"()]*", text)
    if errno:
        return errno.group(0).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:300] + " ..."


_WHAT = {"connect": "connecting", "run": "creating the run", "unsent records": "sending earlier unsent records",
         "state": f"writing {STATE_FILE}", "unsent": f"writing {UNSENT_FILE}"}


class _NoRun(Exception):
    """A call that needs the MLflow run while its creation is still unsent."""


class MlflowTracker:
    """One folder's MLflow run: ``tracking.json`` says which, ``tracking_unsent.jsonl`` holds what did not go out.

    ``strict`` (``spft track push``): a failed call raises :class:`~spft.errors.TrackingError` instead of being
    queued."""

    def __init__(self, uri: str, folder: str | Path, strict: bool = False) -> None:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.uri = uri
        self.folder = Path(folder)
        self.strict = strict
        self.state = TrackingState.read(self.folder)
        if self.state.uri != uri and self.state.run_id:  # a run on another server: its ids mean nothing here
            self.state = TrackingState()
        self.state.uri = uri
        self.unsent = UnsentLog(self.folder)
        self.offline = False
        self.warned: set[str] = set()
        self.client = MlflowClient(tracking_uri=uri)

    # ---- calls ---------------------------------------------------------------------------------------------------
    def save(self) -> None:
        try:
            self.state.write(self.folder)
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self._warn("state", exc)

    def call(self, kind: str, payload: dict) -> bool:
        """Send one call; on failure (or offline, or while the run's creation is unsent) queue it. Never raises
        unless strict."""
        if self.strict:
            try:
                with _quiet():
                    self._send(kind, payload)
            except _NoRun:
                raise TrackingError(f"{self.folder}: no MLflow run to send {kind} to (tracking.json has no run id "
                                    "and no unsent 'run' record)") from None
            except Exception as exc:  # noqa: BLE001
                raise TrackingError(f"MLflow at {self.uri}: {kind} not sent: {_one_line(exc)}") from exc
            return True
        if self.offline or (kind != "run" and not self.state.run_id):
            self._queue(kind, payload)
            return False
        try:
            with _quiet():
                self._send(kind, payload)
            return True
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self._warn(kind, exc)
            if _unreachable(exc):
                self.offline = True
            self._queue(kind, payload)
            return False

    def _queue(self, kind: str, payload: dict) -> None:
        try:
            self.unsent.append(kind, payload)
        except Exception as exc:  # noqa: BLE001
            self._warn("unsent", exc)

    def _warn(self, kind: str, exc: BaseException) -> None:
        if kind in self.warned:
            return
        self.warned.add(kind)
        log.warning("warning: MLflow tracking at %s: %s failed (%s); training goes on, what is not sent goes to %s "
                    "(send it later: spft track push %s)", self.uri, _WHAT.get(kind, f"sending {kind}"),
                    _one_line(exc), self.unsent.path, self.folder)

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:
            found = self.client.get_experiment_by_name(name)  # another run of the sweep created it meanwhile
            if found is None:
                raise
            return found.experiment_id

    def _send(self, kind: str, payload: dict) -> None:
        state, client = self.state, self.client
        if kind == "run":
            if state.run_id:
                return
            experiment_id = self._experiment_id(payload["experiment"])
            run = client.create_run(experiment_id, start_time=payload.get("start_time"), tags=payload.get("tags"),
                                    run_name=payload.get("run_name"))
            state.experiment, state.experiment_id = payload["experiment"], experiment_id
            state.run_id, state.run_name = run.info.run_id, payload.get("run_name")
            state.parent_run_id = (payload.get("tags") or {}).get(MLFLOW_PARENT_RUN_ID)
            self.save()
            log.info("MLflow run %s (%s) in experiment %r at %s", run.info.run_id, state.run_name,
                     state.experiment, self.uri)
            return
        run_id = state.run_id
        if not run_id:
            raise _NoRun()
        if kind == "params":
            items = sorted(payload["params"].items())
            for part in chunks(items, MAX_PARAMS_PER_BATCH):
                if part:
                    client.log_batch(run_id, params=[Param(k, v) for k, v in part], synchronous=True)
        elif kind == "tags":
            tags = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in sorted(payload["tags"].items())]
            for part in chunks(tags, MAX_PARAMS_PER_BATCH):
                if part:
                    client.log_batch(run_id, tags=part, synchronous=True)
        elif kind == "metrics":
            metrics = [Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"]))
                       for m in payload["metrics"]]
            for part in chunks(metrics, MAX_METRICS_PER_BATCH):
                if part:
                    client.log_batch(run_id, metrics=part, synchronous=True)
        elif kind == "artifacts":
            for rel, artifact_path in payload["files"]:
                path = inside(self.folder, rel)
                if path.is_file():
                    client.log_artifact(run_id, str(path), artifact_path)
        elif kind == "status":
            status = payload["status"]
            if status in TERMINAL:
                client.set_terminated(run_id, status, payload.get("end_time"))
            else:
                client.update_run(run_id, status=status)
        else:
            raise ValueError(f"unknown tracking record kind {kind!r}")

    # ---- sending again -------------------------------------------------------------------------------------------
    def probe(self) -> bool:
        """One quick request (no retries, 5 s timeout): a server that cannot be reached makes the tracker offline
        with one warning."""
        try:
            with _environ(PROBE), _quiet():
                self.client.search_experiments(max_results=1)
            return True
        except Exception as exc:  # noqa: BLE001
            self._warn("connect", exc)
            self.offline = True
            return False

    def replay(self) -> tuple[int, int]:
        """Send the records of ``tracking_unsent.jsonl`` in order, stopping at the first that fails (it and the
        rest stay in the file); returns (sent, left). Raises TrackingError when strict.

        The queue is untrusted (a run directory from elsewhere): before anything is sent, every artifact it names
        must be a file inside this folder once links are resolved — else nothing is sent and one line names the
        record (:func:`check_records`)."""
        records = self.unsent.records()
        check_records(self.folder, records, self.unsent.path)
        for i, record in enumerate(records):
            try:
                with _quiet():
                    self._send(record["kind"], record.get("payload") or {})
            except Exception as exc:  # noqa: BLE001
                self.unsent.replace(records[i:])
                if self.strict:
                    why = ("no MLflow run to send it to" if isinstance(exc, _NoRun) else _one_line(exc))
                    raise TrackingError(f"MLflow at {self.uri}: {len(records) - i} of {len(records)} unsent "
                                        f"record(s) still not sent ({record['kind']}: {why}); they stay in "
                                        f"{self.unsent.path}") from None
                self._warn("unsent records", exc)
                if _unreachable(exc):
                    self.offline = True
                return i, len(records) - i
        if records:
            self.unsent.replace([])
        return len(records), 0

    def has_unsent_run(self) -> bool:
        return any(r.get("kind") == "run" for r in self.unsent.records())


def inside(folder: Path, rel) -> Path:
    """``folder / rel`` when that names something inside ``folder`` after links are resolved; else a
    :class:`~spft.errors.TrackingError` naming it. Artifacts are only ever sent from the run (or sweep) folder: a
    queue from elsewhere naming ``/home/you/.ssh/id_rsa`` or ``../../secret`` must not upload it."""
    from spft.errors import TrackingError

    root = Path(folder).resolve()
    text = str(rel) if isinstance(rel, (str, Path)) else ""
    path = (root / text).resolve() if text and not Path(text).is_absolute() else None
    if path is None or path == root or not path.is_relative_to(root):
        raise TrackingError(f"{folder}: refusing to send {rel!r}: an artifact must be a file inside the run or "
                            "sweep folder (given as a path relative to it)")
    return path


def check_records(folder: Path, records: list[dict], source: Path) -> None:
    """Refuse, in one line naming the record, a queue whose records are not what spft writes: an unknown kind, or
    an artifact outside ``folder`` (see :func:`inside`). Nothing is sent from a queue that fails the check."""
    from spft.errors import TrackingError

    for line_no, record in enumerate(records, 1):
        kind, payload = record.get("kind"), record.get("payload") or {}
        where = f"{source}: record {line_no} ({kind})"
        if kind not in KINDS or not isinstance(payload, dict):
            raise TrackingError(f"{where} is not a record spft writes; nothing was sent — remove it")
        if kind == "artifacts":
            files = payload.get("files")
            if not isinstance(files, list) or not all(isinstance(f, list) and len(f) == 2 for f in files):
                raise TrackingError(f"{where}: 'files' must be [[path, folder], ...]; nothing was sent")
            for rel, _ in files:
                try:
                    inside(folder, rel)
                except TrackingError as exc:
                    raise TrackingError(f"{where}: {exc}; nothing was sent — remove that record") from None


# ---- a training run ----------------------------------------------------------------------------------------------

def _git_sha(run_dir: Path) -> str | None:
    import json

    try:
        sha = json.loads((run_dir / "env.json").read_text()).get("git_sha")
    except (OSError, ValueError, AttributeError):
        sha = None
    if sha:
        return str(sha)
    from spft.experiments.rundir import git_sha

    return git_sha()


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def base_tags(cfg, folder: Path) -> dict[str, str]:
    """Tags every spft run and sweep gets: git commit, task, dataset, spft version, folder, user (and the user's)."""
    from spft._version import __version__

    tags = {MLFLOW_GIT_COMMIT: _git_sha(folder), "spft.task": cfg.task, "spft.dataset": cfg.data.name,
            "spft.version": __version__, "spft.config_name": cfg.name, MLFLOW_USER: _user()}
    tags = {k: str(v) for k, v in tags.items() if v is not None}
    tags.update({str(k): str(v) for k, v in (cfg.tracking.mlflow.tags or {}).items()})
    return tags


def experiment_of(cfg) -> str:
    return cfg.tracking.mlflow.experiment or cfg.name or "spft"


class RunTracker:
    """The MLflow side of one training run (the primary process): :meth:`start` before the first epoch,
    :meth:`epoch_end` after each (it sends the ``history.csv`` rows not yet handled), :meth:`finish` at the end.
    None of them raises: a failure is one warning and a record in ``tracking_unsent.jsonl``."""

    def __init__(self, cfg, run_dir: str | Path, strict: bool = False, uri: str | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.mlflow = MlflowTracker(uri or cfg.tracking.mlflow.uri, self.run_dir, strict=strict)

    @property
    def state(self) -> TrackingState:
        return self.mlflow.state

    def _guard(self, what: str, fn) -> None:
        try:
            fn()
        except TrackingError:
            raise
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self.mlflow._warn(what, exc)

    def start(self, resumed: bool = False) -> None:
        """Continue the run of ``tracking.json`` (status RUNNING again) or create it with tags and params; first
        send what an earlier attempt left unsent, when the server answers."""
        self._guard("start", lambda: self._start(resumed))

    def _start(self, resumed: bool) -> None:
        m = self.mlflow
        online = m.strict or m.probe()
        if online and m.unsent.records():
            m.replay()
        if not m.state.run_id and not m.has_unsent_run():
            from spft.config import to_dict

            ml = self.cfg.tracking.mlflow
            tags = {**base_tags(self.cfg, self.run_dir), "spft.run_dir": str(self.run_dir.resolve()),
                    MLFLOW_SOURCE_NAME: "spft train"}
            if ml.parent_run_id:
                tags[MLFLOW_PARENT_RUN_ID] = ml.parent_run_id
            m.call("run", {"experiment": experiment_of(self.cfg), "run_name": ml.run_name or self.run_dir.name,
                           "tags": tags, "start_time": now_ms()})
            m.state.experiment = experiment_of(self.cfg)
            m.save()
            if not m.state.params:
                m.call("params", {"params": flat_params(to_dict(self.cfg))})
                m.state.params = True
        elif resumed or m.state.status != "RUNNING":  # a resumed run: the same MLflow run, RUNNING again
            m.call("status", {"status": "RUNNING"})
        m.state.status = "RUNNING"
        m.save()

    def epoch_end(self) -> None:
        """Send every ``history.csv`` row whose epoch was not handled yet (step = epoch), and the stage-2 start."""
        self._guard("metrics", self._epoch_end)

    def _epoch_end(self) -> None:
        m = self.mlflow
        handled = set(m.state.epochs)
        new = [row for row in read_history(self.run_dir) if epoch_of(row) is not None and epoch_of(row) not in handled]
        if not new:
            return
        stamp = now_ms()
        metrics = [metric for row in new for metric in epoch_metrics(row, stamp)]
        m.call("metrics", {"metrics": metrics})
        if m.state.stage2_start_epoch is None:
            stage2 = [epoch_of(r) for r in new if number(r.get("stage")) == 2]
            if stage2:
                m.state.stage2_start_epoch = min(stage2)
                m.call("tags", {"tags": {"spft.stage2_start_epoch": str(min(stage2))}})
        m.state.epochs = sorted(handled | {epoch_of(r) for r in new})
        m.save()

    def finish(self, status: str) -> None:
        """The rows not yet sent; for a finished run the ``metrics.json`` numbers; the record files and figures as
        artifacts; the run's status (FINISHED, FAILED, KILLED)."""
        self._guard("end", lambda: self._finish(status))

    def _finish(self, status: str) -> None:
        m = self.mlflow
        self._epoch_end()
        if status == "FINISHED" and not m.state.final:
            m.call("metrics", {"metrics": final_metrics(self.run_dir, now_ms())})
            m.state.final = True
        m.call("artifacts", {"files": artifact_files(self.run_dir)})
        m.call("status", {"status": status, "end_time": now_ms()})
        m.state.status = status
        m.save()


def status_of(exc: BaseException, guard=None) -> str:
    """The MLflow status of a run that ended with ``exc``: KILLED for a signal or Ctrl+C, FAILED otherwise."""
    from spft.errors import RunInterrupted

    if isinstance(exc, (KeyboardInterrupt, SystemExit, RunInterrupted)) or getattr(guard, "signum", None):
        return "KILLED"
    return "FAILED"


# ---- sweeps --------------------------------------------------------------------------------------------------------

def sweep_parent(sweep, cfg) -> str | None:
    """The parent run of a sweep (``<sweep>/tracking.json``): continued when the sweep directory has one on the same
    server, else created (name: the sweep directory's; tags: kind, study, task, dataset, git, user's). None when it
    could not be created (one warning; the runs are then tracked without a parent)."""
    folder = Path(sweep.out)
    folder.mkdir(parents=True, exist_ok=True)
    m = MlflowTracker(cfg.tracking.mlflow.uri, folder)
    if not m.probe():
        return m.state.run_id
    if m.unsent.records():
        m.replay()
    if m.state.run_id:
        m.call("status", {"status": "RUNNING"})
    else:
        tags = {**base_tags(cfg, folder), "spft.kind": sweep.kind, "spft.study": sweep.study.name,
                "spft.sweep_dir": str(folder.resolve()), MLFLOW_SOURCE_NAME: f"spft {sweep.kind}"}
        m.call("run", {"experiment": experiment_of(cfg), "run_name": folder.name, "tags": tags,
                       "start_time": now_ms()})
        if m.state.run_id:
            m.call("params", {"params": {"sweep.kind": sweep.kind, "sweep.study": sweep.study.name,
                                         "sweep.config": str(sweep.config),
                                         "sweep.overrides": " ".join(sweep.overrides) or "-",
                                         "sweep.seeds": ",".join(map(str, sweep.seeds))}})
    m.state.status = "RUNNING"
    m.save()
    return m.state.run_id


def finish_sweep(folder: Path, status: str) -> None:
    state = TrackingState.read(folder)
    if not state.uri or not state.run_id:
        return
    m = MlflowTracker(state.uri, folder)
    m.call("status", {"status": status, "end_time": now_ms()})
    m.state.status = status
    m.save()


def attach_report(folder: Path, out: Path) -> None:
    """report.html, report.md, report.json and the tables as artifacts of the sweep's parent run (``report/``)."""
    state = TrackingState.read(folder)
    if not state.uri or not state.run_id:
        return
    m = MlflowTracker(state.uri, folder)
    root, out = Path(folder).resolve(), Path(out).resolve()
    if not out.is_relative_to(root):  # artifacts are sent from inside the sweep folder only (see `inside`)
        log.warning("warning: the report in %s is outside the sweep folder %s: not attached to its MLflow run "
                    "(write it inside, e.g. the default --out)", out, folder)
        files = []
    else:
        names = [out / name for name in ("report.html", "report.md", "report.json")]
        files = [[str(p.relative_to(root)), "report"] for p in names]
        tables = out / "tables"
        if tables.is_dir():
            files += [[str(p.relative_to(root)), "report/tables"] for p in sorted(tables.iterdir()) if p.is_file()]
    if files and m.call("artifacts", {"files": files}):
        log.info("report attached to MLflow run %s at %s", state.run_id, state.uri)
    if state.status != "FINISHED" and _every_run_done(folder):  # e.g. a SLURM sweep: its launcher returned early
        m.call("status", {"status": "FINISHED", "end_time": now_ms()})
        m.state.status = "FINISHED"
    m.save()


def _every_run_done(folder: Path) -> bool:
    import json

    from spft.experiments.rundir import is_done

    try:
        runs = json.loads((folder / "sweep.json").read_text()).get("runs") or []
    except (OSError, ValueError, AttributeError):
        return False
    return bool(runs) and all(is_done(folder / str(r.get("run_dir", ""))) for r in runs)


# ---- spft track push -----------------------------------------------------------------------------------------------

def push(folder: str | Path, uri: str | None = None) -> dict:
    """Send what a run (or sweep) directory left unsent; a run directory is also brought up to date (epochs not yet
    handled, the end of a finished run), and a run that was never tracked is sent whole to ``uri``."""
    from spft.errors import ConfigError, MissingFileError
    from spft.tracking.records import check_uri

    folder = Path(folder)
    is_run = (folder / "config.yaml").is_file()
    if not is_run and not (folder / "tracking.json").is_file() and not UnsentLog(folder).path.is_file():
        raise MissingFileError(f"{folder}: neither a run directory (config.yaml) nor a tracked sweep (tracking.json)")
    state = TrackingState.read(folder)
    cfg = None
    if is_run:
        from spft.experiments.lock import lock_run
        from spft.experiments.rundir import load_run_config

        lock_run(folder, "track push")  # not while the run itself is writing tracking.json
        cfg = load_run_config(folder)
    uri = uri or state.uri or (cfg.tracking.mlflow.uri if cfg is not None else None)
    if not uri:
        raise ConfigError(f"{folder}: no tracking URI (the run had tracking.mlflow.uri unset): give --uri URI")
    check_uri(uri, "tracking URI")  # a file store MLflow refuses: one line, nothing sent
    if state.run_id and state.uri and uri != state.uri:
        raise ConfigError(f"{folder} is tracked as run {state.run_id} at {state.uri}, not at {uri}; push to that "
                          "server (or remove tracking.json to send the run anew)")
    before = len(UnsentLog(folder).records())
    if cfg is None:
        m = MlflowTracker(uri, folder, strict=True)
        sent, _ = m.replay()
        return {"uri": uri, "run_id": m.state.run_id, "unsent_sent": sent, "epochs": 0}
    from spft.experiments.rundir import is_done

    tracker = RunTracker(cfg, folder, strict=True, uri=uri)
    m = tracker.mlflow
    if not m.state.run_id and not m.has_unsent_run():
        tracker.start()
    sent, _ = m.replay()
    handled = set(m.state.epochs)
    tracker.epoch_end()
    epochs = len(set(m.state.epochs) - handled)
    if is_done(folder) and (not m.state.final or m.state.status != "FINISHED"):
        tracker.finish("FINISHED")
    m.save()
    return {"uri": uri, "run_id": m.state.run_id, "unsent_sent": min(sent, before), "epochs": epochs}

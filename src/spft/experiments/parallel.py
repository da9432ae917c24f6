"""Running a sweep's runs: up to ``--jobs N`` ``spft train`` children at once, each pinned to its own devices.

A *slot* is a tuple of device ids handed to one child through ``CUDA_VISIBLE_DEVICES`` (``()`` on a CPU machine:
the environment is left alone). :func:`sweep_slots` turns ``--jobs``, ``--devices`` and ``--gpus-per-run`` into
slots, refusing (one :class:`ConfigError` line, before anything runs) more devices than there are;
:func:`device_overrides` checks that each run's ``trainer.devices`` fits its slot (a run with K > 1 devices gets
``trainer.devices=K`` and trains with DDP). :class:`Scheduler` starts the children, polls them, writes
``sweep.json`` (only this parent process writes it) at every change, shows progress (:class:`LineDisplay`: one line
per state change; :class:`TableDisplay`: a table redrawn in place on a terminal) and forwards SIGINT / SIGTERM to
the running children, waits for them and records them ``interrupted``.

The children run in their own sessions, so a Ctrl+C in the terminal reaches the sweep only, which sends exactly one
SIGINT to each child's process group (as the terminal would have) — a second Ctrl+C is forwarded again and stops
the children at once. SIGTERM is forwarded to each child's main process (Lightning forwards it to its DDP ranks).
"""

from __future__ import annotations

import functools
import heapq
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spft.atomic import open_append
from spft.errors import ConfigError

log = logging.getLogger("spft.experiments.sweep")  # the sweep's own lines, as before the scheduler existed

POLL_S = 0.1  # how often running children are polled
REDRAW_S = 1.0  # how often the terminal table refreshes its clocks when nothing changed
INTERRUPTED_CODES = (130, 143, -signal.SIGINT, -signal.SIGTERM)


BUSY_WAIT_S = 120.0  # how long a sweep waits for a run another process still holds (see Scheduler._next_ready)


def die_with_parent(parent: int) -> None:
    """In a child between fork and exec: ask Linux to send it SIGTERM when the sweep process dies (``prctl
    PR_SET_PDEATHSIG``), so a ``kill -9`` of ``spft repeat/ablate`` stops its children cleanly (they save
    ``last.ckpt`` and exit 143) instead of leaving them training unsupervised. The children run in their own
    session (a terminal's Ctrl+C reaches the sweep only, which forwards it), so the process group cannot do this.
    Elsewhere than Linux it does nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by SIGINT or SIGTERM (after its children stopped and were recorded); the CLI exits
    128 + ``signum`` (130 / 143), as ``spft train`` does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def add_parallel_options(parser) -> None:
    """``--jobs``, ``--devices``, ``--gpus-per-run`` of ``spft repeat`` and ``spft ablate``."""
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="runs at once on this machine (default 1: one after the other)")
    parser.add_argument("--devices", metavar="LIST", default=None,
                        help="CUDA devices to hand out, e.g. 0,1,2,3 or 0-3 (default: every visible one; none on "
                             "a CPU machine)")
    parser.add_argument("--gpus-per-run", type=int, default=None, metavar="K",
                        help="devices per run (default 1); K > 1 trains each run with DDP (trainer.devices=K)")


# -- devices ---------------------------------------------------------------------------------------------------------

def parse_devices(text: str) -> list[str]:
    """``"0,1,2,3"`` or ``"0-3"`` → ``["0", "1", "2", "3"]``; other ids (``GPU-<uuid>``, ``MIG-...``) as given.

    >>> parse_devices("0-2,5")
    ['0', '1', '2', '5']
    """
    out: list[str] = []
    for part in (p.strip() for p in str(text).split(",")):
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit():
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part:
            out.append(part)
    if len(set(out)) != len(out):
        raise ConfigError(f"--devices {text!r}: a device is listed twice")
    return out


def visible_devices() -> list[str]:
    """The CUDA devices this process may use, as ids for the children's ``CUDA_VISIBLE_DEVICES``: the parent's own
    ``CUDA_VISIBLE_DEVICES`` list when set (so the children get subsets of it), else ``0..n-1``; none on a CPU."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for part in (p.strip() for p in env.split(",")):
            if not part or part.lstrip("-").isdigit() and int(part) < 0:
                break  # CUDA stops at the first invalid id (-1: none)
            ids.append(part)
        return ids
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def assign_devices(jobs: int, gpus_per_run: int | None, devices: Sequence[str]) -> list[tuple[str, ...]]:
    """One tuple of device ids per slot: slot ``i`` gets ``devices[i*K:(i+1)*K]`` (K = ``gpus_per_run``, default 1).

    With no devices (a CPU machine) every slot is ``()``: ``--jobs N`` runs N CPU processes.

    >>> assign_devices(2, 2, ["0", "1", "2", "3"])
    [('0', '1'), ('2', '3')]

    Raises:
        ConfigError: ``jobs`` or ``gpus_per_run`` below 1, more devices asked for than given, or ``gpus_per_run``
            on a machine without devices.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: at least 1 run at a time")
    if gpus_per_run is not None and gpus_per_run < 1:
        raise ConfigError(f"--gpus-per-run {gpus_per_run}: at least 1")
    if not devices:
        if gpus_per_run is not None:
            raise ConfigError(f"--gpus-per-run {gpus_per_run}: no CUDA device is visible (CPU runs take no "
                              "devices; leave --gpus-per-run out, or give --devices)")
        return [()] * jobs
    k = gpus_per_run or 1
    if jobs * k > len(devices):
        raise ConfigError(f"--jobs {jobs} x --gpus-per-run {k} needs {jobs * k} devices but {len(devices)} are "
                          f"available ({','.join(devices)}): lower --jobs or --gpus-per-run, or give --devices")
    return [tuple(devices[i * k:(i + 1) * k]) for i in range(jobs)]


def sweep_slots(jobs: int = 1, devices: str | None = None, gpus_per_run: int | None = None) -> list[tuple[str, ...]]:
    """The slots of ``spft repeat|ablate --jobs N [--devices LIST] [--gpus-per-run K]``.

    ``--jobs 1`` with neither ``--devices`` nor ``--gpus-per-run`` is the sequential sweep as it always was: one slot
    that pins nothing (each run sees every device and uses its config's ``trainer.devices``). Otherwise the devices
    are ``--devices`` or every visible CUDA device, ``K`` (default 1) to a slot."""
    if jobs == 1 and devices is None and gpus_per_run is None:
        return [()]
    ids = parse_devices(devices) if devices is not None else visible_devices()
    return assign_devices(jobs, gpus_per_run, ids)


def device_overrides(sweep, slots: list[tuple[str, ...]], explicit: bool) -> dict[str, tuple[str, ...]]:
    """``{overlay: extra overrides}`` for runs trained on a slot of K pinned devices, checked before anything runs.

    A config whose ``trainer.devices`` is K or ``auto`` needs nothing. Otherwise, with ``--gpus-per-run`` given
    (``explicit``), a new run gets ``trainer.devices=K`` (validated here: detection, for one, trains on one device);
    without it the mismatch is an error, as is a run to resume that was started with another device count (a resumed
    run keeps its config)."""
    k = len(slots[0])
    if not k:
        return {}
    from spft.config import load_config
    from spft.experiments.rundir import read_run_yaml

    extra: dict[str, tuple[str, ...]] = {}
    for run in sweep.runs:
        if run.action == "train" and run.overlay not in extra:
            cfg = load_config(sweep.config, list(run.overrides))
            if _fits(cfg.trainer.devices, k):
                extra[run.overlay] = ()
            elif not explicit:
                raise ConfigError(f"overlay '{run.overlay}': trainer.devices={cfg.trainer.devices!r}, but each run "
                                  f"gets 1 device; give --gpus-per-run N for runs of N devices")
            else:
                try:
                    load_config(sweep.config, [*run.overrides, f"trainer.devices={k}"])
                except ConfigError as exc:
                    raise ConfigError(f"--gpus-per-run {k}: overlay '{run.overlay}': {exc}") from None
                extra[run.overlay] = (f"trainer.devices={k}",)
        elif run.action == "resume":
            try:
                used = (read_run_yaml(run.run_dir / "config.yaml").get("trainer") or {}).get("devices", 1)
            except (OSError, ValueError, AttributeError):
                continue  # the child reports a damaged config.yaml itself, as a failed run
            if not _fits(used, k):
                raise ConfigError(f"{run.key} was started with trainer.devices={used!r} and resumes with its own "
                                  f"config: give --gpus-per-run {used} (each run gets {k} device(s) now)")
    return extra


def _fits(devices, k: int) -> bool:
    return devices in ("auto", -1, "-1") or devices == k or (isinstance(devices, str) and devices.strip() == str(k))


def child_threads(jobs: int) -> int | None:
    """``OMP_NUM_THREADS`` for each of ``jobs`` concurrent children: the cores this process may use divided among
    them (at least 1), so N PyTorch processes do not each start a thread per core; ``None`` for one job or when the
    user set ``OMP_NUM_THREADS`` (theirs is kept)."""
    if jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


# -- time left -------------------------------------------------------------------------------------------------------

def eta_seconds(durations: Sequence[float], running: Sequence[float], waiting: int, slots: int) -> float | None:
    """Seconds until the sweep ends: each run takes the mean of ``durations`` (finished runs); running ones need that
    mean minus their ``running`` elapsed time (at least 0); ``waiting`` ones go to the first free of ``slots``.
    ``None`` before any run has finished.

    >>> eta_seconds([10.0], running=[4.0], waiting=3, slots=2)
    20.0
    """
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    free = [max(mean - e, 0.0) for e in running] + [0.0] * max(slots - len(running), 0)
    heapq.heapify(free)
    for _ in range(waiting):
        heapq.heappush(free, heapq.heappop(free) + mean)
    return max(free) if (running or waiting) else 0.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``2 h 05 min``.

    >>> format_duration(42.4), format_duration(725), format_duration(7500)
    ('42 s', '12 min', '2 h 05 min')
    """
    s = round(seconds)
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def eta_text(durations: Sequence[float], running: Sequence[float], waiting: int, slots: int) -> str:
    """``"about 3 min left"``, or ``""`` when there is nothing to estimate from (or nothing left)."""
    eta = eta_seconds(durations, running, waiting, slots)
    return f"about {format_duration(eta)} left" if eta else ""


# -- display ---------------------------------------------------------------------------------------------------------

class LineDisplay:
    """One ``spft:`` line per state change (started, done, failed, interrupted): logs, pipes, and ``--jobs 1``."""

    def __init__(self, scheduler: Scheduler):
        self.s = scheduler

    def started(self, job: Job) -> None:
        where = f" on device{'s' if len(job.devices) > 1 else ''} {','.join(job.devices)}" if job.devices else ""
        verb = "resuming" if job.run.action == "resume" else "training"
        eta = self.s.eta(starting=job)
        log.info("[%d/%d] %s: %s%s%s", job.number, self.s.total, job.run.key, verb, where, f", {eta}" if eta else "")

    def finished(self, job: Job) -> None:
        run, s = job.run, self.s
        if run.status == "done":
            rest = s.remaining_text()
            log.info("[%d/%d] %s: done in %.0f s, test %s %s%s", job.number, s.total, run.key, run.seconds,
                     s.primary_label, s.primary(run), f"; {rest}" if rest else "")
        elif run.status == "interrupted":
            log.info("[%d/%d] %s: interrupted after %.0f s", job.number, s.total, run.key, run.seconds)
        else:
            log.error("[%d/%d] %s failed: %s; last lines of %s:\n  %s", job.number, s.total, run.key, job.why(),
                      job.log_path, "\n  ".join(job.tail()))

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class TableDisplay(LineDisplay):
    """A table of the runs (overlay, seed, state, devices, elapsed, primary metric) and the time left, redrawn in
    place on a terminal; failures are printed above it."""

    def __init__(self, scheduler: Scheduler, stream=None):
        super().__init__(scheduler)
        self.stream = stream or sys.stderr
        self.lines = 0
        self.drawn = 0.0

    def started(self, job: Job) -> None:
        self.draw()

    def finished(self, job: Job) -> None:
        if job.run.status == "failed":
            self.clear()
            run = job.run
            self.stream.write(f"spft: {run.key} failed: {job.why()}; last lines of {job.log_path}:\n  "
                              + "\n  ".join(job.tail()) + "\n")
        self.draw()

    def tick(self) -> None:
        if time.monotonic() - self.drawn >= REDRAW_S:
            self.draw()

    def close(self) -> None:
        self.draw()

    def clear(self) -> None:
        if self.lines:
            self.stream.write(f"\x1b[{self.lines}F\x1b[J")
            self.lines = 0

    def draw(self) -> None:
        text = self.s.table(max_rows=max(shutil.get_terminal_size((100, 40)).lines - 6, 5))
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()
        self.lines = text.count("\n") + 1
        self.drawn = time.monotonic()


# -- the scheduler ---------------------------------------------------------------------------------------------------

@dataclass
class Job:
    """A run that was started: its child, its devices, when it started, and its start number (``[i/n]``)."""

    run: object  # PlannedRun
    number: int
    devices: tuple[str, ...]
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    error: str | None = None  # the child's one-line ``spft train: error: ...``, when it printed one

    def why(self) -> str:
        code = self.run.returncode
        return f"{self.error} (exit code {code})" if self.error else f"exit code {code}"

    def tail(self, n: int = 8) -> list[str]:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()[-n:]
        except OSError:
            return []
        return [line if len(line) <= 300 else line[:300] + " ..." for line in lines]


_ERROR_LINE = re.compile(r"^spft \w+: error: (.+)$")


class Scheduler:
    """Runs ``todo`` (planned runs of a sweep) on ``slots``, at most one run per slot at a time.

    ``hooks`` is what the sweep module provides: ``command(run)`` (the child's argv), ``log_path(run)``,
    ``record()`` (write sweep.json), ``finished(run)`` (DONE written), ``primary(run)`` (its test metric, printed)
    and ``primary_label``."""

    def __init__(self, hooks, todo: list, slots: list[tuple[str, ...]], extra: dict[str, tuple[str, ...]] | None = None,
                 display: str = "auto"):
        self.hooks = hooks
        self.waiting = list(todo)
        self.plan = list(todo)
        self.total = len(todo)
        self.slots = list(slots) or [()]
        self.free = list(range(len(self.slots)))
        self.extra = extra or {}
        self.running: dict[int, Job] = {}  # slot -> job
        self.finished: list[Job] = []
        self.started = 0
        self.stopping: int | None = None
        self.threads = child_threads(len(self.slots))
        tty = display == "table" or (display == "auto" and len(self.slots) > 1 and _is_terminal(sys.stderr))
        self.display = TableDisplay(self) if tty else LineDisplay(self)
        self.primary_label = hooks.primary_label
        self._primary: dict[str, str] = {}
        self._told_busy: dict[str, float] = {}  # run key -> when it was first found held by another process

    # what the displays ask ------------------------------------------------------------------------------------------

    def primary(self, run) -> str:
        if run.key not in self._primary:
            self._primary[run.key] = self.hooks.primary(run)
        return self._primary[run.key]

    def durations(self) -> list[float]:
        return [j.run.seconds for j in self.finished if j.run.status == "done" and j.run.seconds is not None]

    def eta(self, starting: Job | None = None) -> str:
        now = time.monotonic()
        running = [now - j.started for j in self.running.values() if j is not starting]
        waiting = len(self.waiting) + (starting is not None)
        return eta_text(self.durations(), running, waiting, len(self.slots))

    def remaining_text(self) -> str:
        left = len(self.waiting) + len(self.running)
        if not left:
            return ""
        eta = self.eta()
        return f"{left} to go" + (f", {eta}" if eta else "")

    def table(self, max_rows: int = 40) -> str:
        now = time.monotonic()
        jobs = {id(j.run): j for j in [*self.finished, *self.running.values()]}
        order = {"training": 0, "resuming": 0, "failed": 1, "interrupted": 1, "done": 2, "waiting": 3}
        rows = []
        for run in self.plan:  # in plan order, so rows stay where they are; too many: running and failed first
            job = jobs.get(id(run))
            if job is None:
                state, devices, elapsed = "waiting", "", ""
            else:
                state = run.status if run.status != "running" else ("resuming" if run.action == "resume"
                                                                     else "training")
                devices = ",".join(job.devices) or "cpu"
                seconds = run.seconds if run.seconds is not None else now - job.started
                elapsed = format_duration(seconds)
            value = self.primary(run) if run.status == "done" else ""
            rows.append((order.get(state, 1), run.overlay, str(run.seed), state, devices, elapsed, value))
        shown = sorted(rows, key=lambda r: r[0])[:max_rows] if len(rows) > max_rows else rows
        head = ("overlay", "seed", "state", "devices", "elapsed", self.primary_label)
        widths = [max(len(str(r[i + 1])) for r in [(0, *head), *shown]) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *(r[1:] for r in
                                                                                                    shown)]]
        if len(rows) > len(shown):
            lines.append(f"... and {len(rows) - len(shown)} more")
        done = sum(1 for j in self.finished if j.run.status == "done")
        failed = sum(1 for j in self.finished if j.run.status == "failed")
        eta = self.eta()
        lines.append(f"{done}/{self.total} done, {len(self.running)} running, {len(self.waiting)} waiting, "
                     f"{failed} failed" + (f" — {eta}" if eta else ""))
        return "\n".join(lines)

    # running ----------------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Start, poll and record every run; raises KeyboardInterrupt (after recording) when SIGINT/SIGTERM came."""
        previous = self._install_handlers()
        try:
            while (self.waiting and self.stopping is None) or self.running:
                while self.free and self.waiting and self.stopping is None:
                    run = self._next_ready()
                    if run is None:
                        break
                    self._start(self.free.pop(0), run)
                self._poll()
                self.display.tick()
                if self.running or self.waiting:
                    time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.display.close()
        if self.stopping is not None:
            raise SweepInterrupted(self.stopping)

    def _next_ready(self):
        """The first waiting run that no other process holds (see ``hooks.busy``), taken off the list; ``None``
        when every waiting run is held. A run that was held is planned again once free: it may be done by then.

        The wait is for a process that is stopping — the child of a sweep that was killed, saving its checkpoint
        after the parent-death SIGTERM — so it is bounded (:data:`BUSY_WAIT_S`): a run still held after that is
        started anyway and fails with the holder named (someone else is training there)."""
        busy = getattr(self.hooks, "busy", None)
        for run in list(self.waiting):
            first_seen = self._told_busy.get(run.key)
            holder = busy(run) if busy is not None and (
                first_seen is None or time.monotonic() - first_seen < BUSY_WAIT_S) else None
            if holder:
                if first_seen is None:
                    self._told_busy[run.key] = time.monotonic()
                    log.info("%s: waiting up to %.0f s for %s, still writing in %s", run.key, BUSY_WAIT_S, holder,
                             run.run_dir)
                continue
            self.waiting.remove(run)
            if run.key in self._told_busy:
                self.hooks.refresh(run)
                if self.hooks.finished(run):
                    run.status, run.note = "done", "finished by the process waited for"
                    self.hooks.record()
                    continue
            return run
        return None

    def _start(self, slot: int, run) -> None:
        self.started += 1
        job = Job(run, self.started, self.slots[slot], self.hooks.log_path(run))
        command = [*self.hooks.command(run), *(self.extra.get(run.overlay, ()) if run.action == "train" else ())]
        env = dict(os.environ)
        if job.devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(job.devices)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        run.devices = ",".join(job.devices)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.display.started(job)
        run.status = "running"
        self.hooks.record()
        with open_append(job.log_path) as fh:  # never through a link planted in the sweep folder
            pinned = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} " if job.devices else ""
            threads = f"OMP_NUM_THREADS={self.threads} " if self.threads else ""
            fh.write(f"\n$ {pinned}{threads}{' '.join(command)}\n")
            fh.flush()
            job.started = time.monotonic()
            job.proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True,
                                        preexec_fn=functools.partial(die_with_parent, os.getpid()))
        self.running[slot] = job
        if self.stopping is not None:  # a signal came while it was being started: it stops too
            forward(job.proc, self.stopping)

    def _poll(self) -> None:
        for slot, job in list(self.running.items()):
            code = job.proc.poll()
            if code is None:
                continue
            del self.running[slot]
            self.free.append(slot)
            self.free.sort()
            self._finish(job, code)

    def _finish(self, job: Job, code: int) -> None:
        run = job.run
        run.returncode = code
        run.seconds = round(time.monotonic() - job.started, 1)
        if self.hooks.finished(run):  # DONE is the truth, whatever the exit code of a child stopped at its very end
            run.status = "done"
        elif self.stopping is not None and code in INTERRUPTED_CODES:
            run.status, run.note = "interrupted", "stopped with the sweep: run the sweep again to resume it"
        else:
            run.status = "failed"
            job.error = next((m.group(1) for line in reversed(job.tail(20)) if (m := _ERROR_LINE.match(line))), None)
            run.note = f"{job.error} (exit code {code}; see {job.log_path})" if job.error else \
                f"exit code {code}; see {job.log_path}"
        self.finished.append(job)
        self.display.finished(job)
        self.hooks.record()

    # signals ----------------------------------------------------------------------------------------------------------

    def _install_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum, frame) -> None:
        first = self.stopping is None
        if first:
            self.stopping = signum
            log.info("%s received: stopping the %d running run(s) and starting no other (run the same command again "
                     "to continue)", signal.Signals(signum).name, len(self.running))
        for job in self.running.values():
            forward(job.proc, signum)


def forward(proc: subprocess.Popen, signum: int) -> None:
    """Pass a signal on to a child started in its own session: SIGINT to its whole process group (as a terminal's
    Ctrl+C would; DataLoader workers ignore it), anything else to the child's main process."""
    try:
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
    except (ProcessLookupError, PermissionError):
        pass


def _is_terminal(stream) -> bool:
    """A terminal that can redraw the live table (not ``TERM=dumb``)."""
    from spft.console import is_terminal

    return is_terminal(stream) and os.environ.get("TERM", "") != "dumb"

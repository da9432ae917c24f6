"""What one task of a ``spft repeat|ablate --launcher slurm`` job array runs: :class:`SweepRun`.

submitit pickles a :class:`SweepRun` per run and calls it inside the array task. It decides *when the task starts*
(not at submission) whether to start the run (``spft train CONFIG ... run.dir=RUN``) or continue it (``spft train
--resume RUN``, when ``RUN/config.yaml`` exists), and runs that as a child process whose output is appended to the
run's log (``<sweep>/logs/<overlay>-seed<k>.log``), so a crash of the run cannot take submitit's bookkeeping down.

Preemption and time-outs: SLURM (``--signal=USR2@90``, set by submitit) or submitit's local executor signal the task
with SIGUSR2; submitit then calls :meth:`SweepRun.checkpoint`, which forwards SIGTERM to the child ``spft train``
(it finishes the current step, keeps ``last.ckpt`` and exits 143), waits for it and returns the same callable, so
submitit requeues the job and the next attempt resumes from ``last.ckpt``. The child ignores SIGUSR2 itself (SLURM
signals every process of the job step; the default action would kill it mid-step). A SIGTERM that reaches the child
directly (SLURM preempting the job) stops it the same way; the task then waits briefly for submitit's own requeue
signal and otherwise fails, naming the log — ``spft repeat ... --launcher slurm`` run again resubmits it.

This module imports submitit at import time; :mod:`spft.experiments.slurm` (options, submission, states) imports it
only when submitting, so the CLI does not pay for submitit on every command.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from submitit.helpers import Checkpointable, DelayedSubmission

from spft.atomic import open_append

# The variables that make a process one task of a SLURM step: the child must not see them, so that Lightning runs
# it as a plain process on the GPUs of this allocation (and launches its own DDP processes for trainer.devices > 1)
# instead of waiting for SLURM to have started one process per device.
_TASK_VARS = ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_PROCID",
              "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_TASKS_PER_NODE")


class RunFailed(RuntimeError):
    """``spft train`` of one run failed in an array task; the message names the run and its log."""


def _ignore_usr2() -> None:  # in the child before exec: SIG_IGN survives exec, a Python handler would not
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def train_command(config: str, overrides: tuple[str, ...], run_dir: str, resume: bool) -> list[str]:
    """The ``spft train`` command of one run: new (``CONFIG overrides``) or ``--resume RUN_DIR`` (as the local
    sweep's)."""
    base = [sys.executable, "-m", "spft.cli", "train"]
    return [*base, "--resume", run_dir] if resume else [*base, config, *overrides]


class SweepRun(Checkpointable):
    """One run of a sweep as a submitit job: ``spft train`` (new or ``--resume``) as a child, requeued on preemption.

    Returns ``"done"`` when the run finished (``DONE`` written); raises :class:`RunFailed` (the job fails) when
    ``spft train`` exits otherwise.
    """

    def __init__(self, key: str, config: str, overrides: tuple[str, ...], run_dir: str, log: str, cwd: str,
                 stop_timeout_s: float = 75.0, requeue_wait_s: float = 30.0):
        self.key = key
        self.config = config
        self.overrides = tuple(overrides)
        self.run_dir = run_dir  # as the sweep wrote it (maybe relative to cwd: config.yaml records it so)
        self.log = log
        self.cwd = cwd
        self.stop_timeout_s = stop_timeout_s  # after SIGTERM, how long the child may take to stop (< signal delay)
        self.requeue_wait_s = requeue_wait_s
        self._runtime_reset()

    def _runtime_reset(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._returncode: int | None = None
        self._stopping = False

    def __getstate__(self) -> dict:  # the child process and its waiter stay behind; the requeued job starts afresh
        state = dict(self.__dict__)
        for name in ("_proc", "_returncode", "_stopping"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._runtime_reset()

    @property
    def _dir(self) -> Path:
        return Path(self.cwd) / self.run_dir

    def __call__(self) -> str:
        self._runtime_reset()
        run_dir = self._dir
        if (run_dir / "DONE").is_file():
            self._note(f"{self.key}: already finished (DONE); nothing to do")
            return "done"
        resume = (run_dir / "config.yaml").is_file()  # decided now: an earlier attempt may have started it
        command = train_command(self.config, self.overrides, self.run_dir, resume)
        env = {k: v for k, v in os.environ.items() if k not in _TASK_VARS and not k.startswith("SUBMITIT_")}
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open_append(self.log) as fh:  # never through a link planted in the sweep folder
            fh.write(f"\n$ {shlex.join(command)}\n# {_job_label()}\n")
            fh.flush()
            self._proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.cwd, env=env, preexec_fn=_ignore_usr2)
        # A thread reaps the child, so the main thread (where submitit's signal handler runs and calls
        # checkpoint()) never blocks in a wait that the handler would then have to share.
        proc = self._proc
        threading.Thread(target=lambda: setattr(self, "_returncode", proc.wait()), daemon=True).start()
        try:
            while self._returncode is None:
                time.sleep(0.2)
        finally:
            if proc.poll() is None:  # leaving without the child having stopped (an exception): never leave it behind
                proc.kill()
                proc.wait()
        code = self._returncode
        if code == 0 and (run_dir / "DONE").is_file():
            return "done"
        if code in (128 + signal.SIGTERM, 128 + signal.SIGINT) and not self._stopping:
            # stopped by a signal that did not come through checkpoint() (SLURM preempting the whole step): give
            # submitit's own requeue signal a moment to arrive, which ends this process from its handler
            deadline = time.time() + self.requeue_wait_s
            while time.time() < deadline:
                time.sleep(0.2)
        raise RunFailed(f"{self.key}: spft train exited with code {code}; see {self.log}")

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Called by submitit on preemption or time-out: stop the child cleanly, then requeue this same callable."""
        self._stopping = True
        proc = self._proc
        if proc is not None and self._returncode is None:
            self._note(f"{self.key}: preempted or timed out ({_job_label()}): stopping spft train, the job is "
                       "requeued and resumes from last.ckpt")
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.time() + self.stop_timeout_s
            while self._returncode is None and time.time() < deadline:
                time.sleep(0.1)
            if self._returncode is None:
                proc.kill()
        return DelayedSubmission(self, *args, **kwargs)

    def _note(self, text: str) -> None:
        try:
            with open_append(self.log) as fh:
                fh.write(f"# spft launcher: {text}\n")
        except OSError:
            pass
        print(text, flush=True)


def _job_label() -> str:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        return f"SLURM job {job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '?')} (attempt {_restarts() + 1})"
    if os.environ.get("SLURM_JOB_ID"):
        return f"SLURM job {os.environ['SLURM_JOB_ID']} (attempt {_restarts() + 1})"
    return f"local job {os.environ.get('SUBMITIT_LOCAL_JOB_ID', os.getpid())}"


def _restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)

"""`spft` CLI runs for the tests in processes forked from one that has already imported torch and Lightning.

Each ``python -m spft.cli`` process of the suite spends about 7 s of a core importing torch, Lightning (which imports
torchmetrics, hence transformers and scipy) before it trains a 2-block model for a few seconds; the suite runs well
over a hundred of them. :func:`start` runs ``spft.cli.main`` in a child of multiprocessing's *forkserver*, which
imported those modules once: a fresh process per command (its own PID, exit code, signals, file descriptors, cwd,
environment, stdout and stderr), the same ``main`` a user's ``spft`` runs, minus the imports.

What a forked child cannot re-read is set here as a fresh process would find it: ``sys.argv``, ``__main__`` (so
that Lightning's DDP launcher re-runs ``python -m spft.cli``), ``PYTHONPATH`` entries on ``sys.path``,
``OMP_NUM_THREADS`` (torch reads it at import), and ``atexit`` handlers run at exit. Runs whose point is a process
started from nothing (the installed wheel, DDP, the sweep's own children) still use real subprocesses:
``run_cli(..., fresh=True)`` and every ``subprocess`` call in the tests.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import traceback

PRELOAD = ["cli_zygote", "spft.cli", "spft.tasks.classification.build", "spft.tasks.lightning.run", "lightning",
           "transformers", "torch"]

_CONTEXT = None
# the process object of the forkserver, a main process: this module is imported there (preload) or, unpickling the
# target, in the forked child before multiprocessing makes it a child Process
_MAIN = multiprocessing.current_process()


def context():
    """The forkserver context (started on first use, with :data:`PRELOAD` imported in the server)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def start(args: list[str], env: dict, cwd: str, out_path: str, err_path: str):
    """Start ``spft ARGS`` in a forked child writing to ``out_path`` / ``err_path``; returns the Process."""
    proc = context().Process(target=_child, args=(list(args), dict(env), str(cwd), out_path, err_path), daemon=False)
    proc.start()
    return proc


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(args, env, cwd, out_path, err_path) -> None:  # pragma: no cover - runs in the forked process
    from multiprocessing import process

    # a main process, as `spft` is: DataLoader workers and Lightning's launchers see no multiprocessing parent
    process._current_process = _MAIN
    process._parent_process = None
    process._children = set()
    multiprocessing.set_start_method(None, force=True)  # the platform's default again, not the forkserver we came from
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for entry in reversed([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stdin = open(os.devnull)
    if env.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    import spft.cli

    sys.argv = [spft.cli.__file__, *args]
    sys.modules["__main__"] = spft.cli  # Lightning's DDP launcher runs `python -m <__main__.__spec__.name>`
    code = 0
    try:
        code = spft.cli.main(args) or 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()  # what an uncaught exception prints in a fresh interpreter
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)

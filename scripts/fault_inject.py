"""Fault injection for ``spft train`` / ``--resume``: kill a tiny training at planned moments, resume, compare.

    python scripts/fault_inject.py --kills 20 [--seed 0] [--epochs 4] [--work DIR]

A tiny run (2-block Dinov2, 240 phantoms, DataLoader workers = 2) is trained once straight through as the reference,
with ``SPFT_FAULT_LOG`` (see :func:`spft.atomic.fault_point`): the list of its atomic writes is the plan of where
write kills can strike. Then runs of the same config are attacked until ``--kills`` kills landed. Each segment (the
start, or a ``spft train --resume``) is killed by one of

* ``write``   — SIGKILL inside the N-th atomic file write (``SPFT_FAULT_POINT=N``): N is drawn uniformly over every
  write the segment still has to make (:class:`Plan`: config and records, stage-1 features, each epoch's history,
  class weights, checkpoints and digest records, the test and evaluation records, DONE);
* ``sigkill`` — SIGKILL at a random training batch of a random epoch still to train (:class:`KillAt`);
* ``sigterm`` — SIGTERM at such a batch: spft must exit 143 with the ``interrupted at epoch N; resume with ...``
  line; with no epoch left to train, a signal attack is re-planned as a write kill among the remaining writes;

so every planned kill lands (a segment that finishes instead is a failure of the harness, reported as one). After a
kill, the run directory may be

* ``relocated`` — moved to a new name, and resumed there;
* ``copied``    — copied to a new name (the original removed), and the copy resumed;
* ``read-only`` — made read-only (a read-only bind mount as root, ``chmod -R a-w`` otherwise): ``spft train
  --resume`` must exit 2 with one line saying the folder is read-only and change no file (names, sizes, times,
  modes, contents); then it is made writable and resumed.

Each finished run must equal the reference in every record (:func:`differences`); no ``*.tmp`` may remain in the
run directory, and a ``run.lock`` left behind must not block a further ``spft train --resume``. Each attacked run
gets its own stage-1 feature cache, so feature-cache writes are among the kill points. Per run and in total the
harness prints planned / landed / survived (survived: landed in a run that ended equal to the reference).

:class:`KillAt` is the test hook the suite uses too (``SPFT_TEST_CALLBACK=fault_inject:KillAt``,
``SPFT_KILL_AT=EPOCH:BATCH:SIGNAL``, this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/phantom_cxr.yaml"
TINY = [
    "model.config={model_type: dinov2, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
    "mlp_ratio: 2, patch_size: 8, image_size: 32}",
    "model.head_hidden=32",
    "data.image_size=32",
    "data.phantom.n_images=240",
    "data.phantom.image_size=64",
    "data.num_workers=2",
    "trainer.batch_size=32",
    "trainer.progress_bar=false",
    "recipe.stage1_epochs=1",
    "recipe.unfreeze.blocks_per_epoch=1",
]
BATCHES_PER_EPOCH = 6  # 165 training images / 32


class KillAt(L.Callback):
    """Test hook: ``SPFT_KILL_AT=EPOCH:BATCH:SIGNAL`` sends SIGNAL (KILL, TERM, INT) to this process at the end of
    that training batch; ``SPFT_SLOW_STEP=SECONDS`` sleeps after every batch (to give an outside signal time)."""

    def __init__(self):
        spec = os.environ.get("SPFT_KILL_AT", "")
        self.at = None
        if spec:
            epoch, batch, name = spec.split(":")
            self.at = (int(epoch), int(batch), getattr(signal, f"SIG{name}"))
        self.slow = float(os.environ.get("SPFT_SLOW_STEP") or 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.slow:
            time.sleep(self.slow)
        if self.at and (trainer.current_epoch, batch_idx) == self.at[:2]:
            os.kill(os.getpid(), self.at[2])


def overrides(run_dir: Path, epochs: int, extra: tuple[str, ...] = ()) -> list[str]:
    return [*TINY, f"trainer.max_epochs={epochs}", f"run.dir={run_dir}", *extra]


def spft(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.setdefault("HF_HUB_OFFLINE", "1")
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), full.get("PYTHONPATH")) if p)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "spft.cli", *args], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=timeout)


def history_rows(run_dir: Path) -> int:
    path = run_dir / "history.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def state_dict(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


# ----------------------------------------------------------------------------------------------------------------
# Comparing a finished run with the reference

_CHECKPOINT_PATH = re.compile(r"^/.*/(checkpoints(?:/[^/]+)?)$")
_ENV_PER_PROCESS = ("started", "command", "git_sha")  # env.json fields that describe the process that started it


def _relocatable(obj):
    """``obj`` with every absolute path into a checkpoint folder reduced to ``RUN/checkpoints[/NAME]``."""
    if isinstance(obj, str):
        hit = _CHECKPOINT_PATH.match(obj)
        return f"RUN/{hit.group(1)}" if hit else obj
    if isinstance(obj, dict):
        return {_relocatable(k): _relocatable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocatable(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_relocatable(v) for v in obj)
    return obj


def _first_difference(a, b, where: str = "") -> str | None:
    """Where two nested structures (dicts, lists, tensors, numbers, strings) differ first; None when equal."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return None if same else where or "/"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where or '/'} (keys {sorted(map(str, a.keys() ^ b.keys()))[:3]})"
        for key in a:
            found = _first_difference(a[key], b[key], f"{where}/{key}")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where or '/'} (length {len(a)} vs {len(b)})"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return None  # NaN == NaN here
    return None if type(a) is type(b) and a == b else where or "/"


def _checkpoint(path: Path):
    import torch

    return _relocatable(torch.load(path, map_location="cpu", weights_only=False))


def tb_scalars(run_dir: Path) -> tuple[dict, list]:
    """TensorBoard records of a run: ``{(tag, step): value}`` as the last write left it (events in time order, over
    every ``events.out.tfevents.*`` file: a resumed run has one per segment), and every ``(tag, step, value)``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    events = []
    for path in sorted((run_dir / "logs" / "tb").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                v = value.simple_value if value.HasField("simple_value") else value.tensor.SerializeToString()
                events.append((event.wall_time, value.tag, event.step, v))
    events.sort(key=lambda e: e[0])
    every = [e[1:] for e in events]
    return {(tag, step): v for tag, step, v in every}, every


def record_files(run_dir: Path) -> set[str]:
    """A run's record files (relative names), less ``run.lock``, temp files and TensorBoard's event files (one per
    process, named by time, host and pid: compared by content, see :func:`differences`)."""
    out = set()
    for path in run_dir.rglob("*"):
        name = path.relative_to(run_dir).as_posix()
        if (path.is_file() and name != "run.lock" and not path.name.endswith(".tmp")
                and not path.name.startswith("events.out.tfevents.")):
            out.add(name)
    return out


def differences(run: Path, reference: Path) -> list[str]:
    """What differs between a finished run and the reference (empty: equal). Every record file is compared:

    * the set of files must be the same (less ``run.lock``, ``*.tmp`` — see :func:`stray_temps` — and TensorBoard's
      event files, whose names hold the time, host and pid);
    * every file byte for byte (history.csv, predictions_test.csv, logs/metrics.csv, metrics.json, thresholds.json,
      calibration.json, class_weights.json, data.json, logs/tb/hparams.yaml, and any file a later spft adds), except
      those that legitimately hold a time, a path or the process that wrote them:
    * ``DONE`` holds the finishing time: it must exist; so must ``curves.png`` (history.csv, compared, drawn under
      the run folder's name);
    * ``config.yaml`` is compared without ``run.dir`` (the absolute run path: relocated runs differ) and
      ``trainer.progress_bar`` (display only);
    * ``env.json`` without ``started``, ``command`` (the starting process's time and argv, run path included) and
      ``git_sha`` (the checkout's commit when the run started: others commit while a campaign runs);
    * ``checkpoints/*.ckpt``: the whole checkpoint (weights, optimizer and scheduler state, loops, callbacks, spft's
      own state) with every absolute path into a checkpoint folder read as its name there (``ModelCheckpoint``
      stores absolute paths, read as names inside the run's checkpoint folder by spft's ``RelocatableCheckpoint``);
      best.ckpt's weights must also be finite;
    * ``checkpoints/digests.json`` holds digests of those checkpoint bytes (which hold the run path): instead of the
      bytes, each checkpoint's digest must be among those recorded;
    * TensorBoard's events: every (tag, step) the reference logged, and no other, with every value written for it,
      in any segment's event file, equal to the reference's (a segment killed mid-epoch may have logged some again).
    """
    import yaml

    from spft.experiments.checkpoints import file_digest, recorded_digests

    out = [f"{name} missing" for name in ("config.yaml", "env.json", "data.json", "metrics.json", "DONE")
           if not (run / name).is_file()]
    mine, theirs = record_files(run), record_files(reference)
    out += [f"{name} missing" for name in sorted(theirs - mine) if f"{name} missing" not in out]
    out += [f"{name} not in the reference run" for name in sorted(mine - theirs)]
    for name in sorted(mine & theirs):
        a, b = run / name, reference / name
        if name in ("DONE", "curves.png"):  # the finishing time; history.csv drawn, titled with the run's folder name
            continue
        if name == "config.yaml":
            x, y = yaml.safe_load(a.read_text()), yaml.safe_load(b.read_text())
            for cfg in (x, y):
                (cfg.get("run") or {}).pop("dir", None)
                (cfg.get("trainer") or {}).pop("progress_bar", None)  # display only: the numbers never depend on it
            found = _first_difference(x, y)
        elif name == "env.json":
            x, y = json.loads(a.read_text()), json.loads(b.read_text())
            found = _first_difference(*({k: v for k, v in e.items() if k not in _ENV_PER_PROCESS} for e in (x, y)))
        elif name.endswith(".ckpt"):
            found = _first_difference(_checkpoint(a), _checkpoint(b))
        elif name == "checkpoints/digests.json":
            found = ", ".join(f"{c.name} digest not recorded" for c in sorted(a.parent.glob("*.ckpt"))
                              if file_digest(c) not in (recorded_digests(c) or []))
        else:
            found = a.read_bytes() != b.read_bytes()
        if found:
            out.append(name if found is True else f"{name}: {found}")
    best = run / "checkpoints" / "best.ckpt"
    if best.is_file():
        import torch

        if not all(torch.isfinite(v).all() for v in state_dict(best).values() if v.is_floating_point()):
            out.append("checkpoints/best.ckpt holds non-finite weights")
    if (reference / "logs" / "tb").is_dir():
        (last, every), (ref, _) = tb_scalars(run), tb_scalars(reference)
        if last.keys() != ref.keys():
            out.append(f"TensorBoard events: (tag, step) sets differ: {sorted(last.keys() ^ ref.keys())[:3]}")
        wrong = [(tag, step) for tag, step, v in every if (tag, step) in ref and ref[(tag, step)] != v]
        if wrong:
            out.append(f"TensorBoard events: {len(wrong)} value(s) differ, first {wrong[0]}")
    return out


def stray_temps(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or ".tmp" in p.suffix)]


def listing(run_dir: Path) -> list[tuple]:
    """Every entry under ``run_dir``: (name, kind, size, mtime_ns, mode, sha256 of a file) — to prove a refused
    command changed nothing."""
    out = []
    for path in sorted(run_dir.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        out.append((path.relative_to(run_dir).as_posix(), st.st_mode, st.st_size, st.st_mtime_ns, digest))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Planning kills that land

def _write_name(path: Path, run_dir: Path) -> str:
    """A logged write as a name: relative to the run, or ``cache:DIR/FILE`` for the stage-1 feature cache."""
    try:
        return path.relative_to(run_dir).as_posix()
    except ValueError:
        return f"cache:{path.parent.name}/{path.name}"


class Plan:
    """What the uninterrupted run writes (``SPFT_FAULT_LOG`` of the reference, see :func:`spft.atomic.fault_point`),
    and from it the writes a segment still has to make: a fresh start (or a resume before the first checkpoint, which
    records config.yaml, env.json and data.json again) makes them all, less the stage-1 features already cached; a
    resume after k finished epochs makes those after the reference's k-th epoch checkpoint (last.ckpt and its digest
    record); with every epoch finished, the test and evaluation records."""

    def __init__(self, reference: Path, log: Path):
        self.writes = [_write_name(Path(line), reference) for line in log.read_text().splitlines() if line]
        self.epoch_ends = [i + 2 for i, w in enumerate(self.writes) if w == "checkpoints/last.ckpt"]

    def remaining(self, run_dir: Path, cache: Path) -> list[str]:
        k = completed_epochs(run_dir) if (run_dir / "config.yaml").is_file() else 0
        writes = self.writes[self.epoch_ends[k - 1]:] if k else list(self.writes)
        cached = sum(1 for _ in (cache / "features").glob("*/meta.json")) if (cache / "features").is_dir() else 0
        groups = list(dict.fromkeys(w.split("/")[0] for w in writes if w.startswith("cache:")))[:cached]
        return [w for w in writes if not (w.startswith("cache:") and w.split("/")[0] in groups)]


def completed_epochs(run_dir: Path) -> int:
    """Epochs held by the checkpoint a resume starts from — spft's choice (:func:`spft.tasks.lifecycle`): last.ckpt,
    or best.ckpt when last.ckpt is missing or damaged; 0 without an intact one."""
    import torch

    from spft.experiments.checkpoints import newest_intact

    try:
        path = newest_intact(run_dir / "checkpoints", ("last.ckpt", "best.ckpt"))
        return 0 if path is None else int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1
    except Exception:  # every checkpoint damaged: the resume starts over
        return 0


def plan_attack(kind: str, run_dir: Path, cache: Path, plan: Plan, epochs: int, rng: random.Random) -> dict:
    """Where ``kind`` strikes in the next segment so that it lands before the segment ends. A write kill is drawn
    uniformly over every write the segment still makes; a signal at a random batch of a random epoch still to train
    — and when no epoch is left, the attack is re-planned as a write kill among the remaining (test) writes."""
    todo = plan.remaining(run_dir, cache)
    k = completed_epochs(run_dir) if (run_dir / "config.yaml").is_file() else 0
    note = ""
    if kind != "write" and k >= epochs:
        note, kind = f"{kind} re-planned as write: no epoch left", "write"
    if kind == "write":
        n = rng.randint(1, len(todo))
        return {"kind": kind, "env": {"SPFT_FAULT_POINT": str(n)}, "where": f"write {n}/{len(todo)}",
                "expect": todo[n - 1], "note": note}
    epoch, batch = rng.randint(k, epochs - 1), rng.randrange(BATCHES_PER_EPOCH)
    sig = "KILL" if kind == "sigkill" else "TERM"
    env = {"SPFT_TEST_CALLBACK": "fault_inject:KillAt", "SPFT_KILL_AT": f"{epoch}:{batch}:{sig}"}
    return {"kind": kind, "env": env, "where": f"epoch {epoch} batch {batch}", "expect": None, "note": note}


def segment_args(run_dir: Path, epochs: int, fresh: bool) -> tuple[str, ...]:
    return ("train", CONFIG, *overrides(run_dir, epochs)) if fresh else ("train", "--resume", str(run_dir))


def check_segment(run_dir: Path, seg: dict) -> str | None:
    """None when the attack landed as it should have; else what is wrong (a run that finished: it did not land)."""
    rc = seg["rc"]
    if rc == 0:
        return "did not land: the run finished first"
    if seg["kind"] == "write":
        if rc == -signal.SIGKILL and "fault injection: SIGKILL during write" in seg["stderr"]:
            return None
    elif seg["kind"] == "sigkill" and rc == -signal.SIGKILL:
        return None
    elif seg["kind"] == "sigterm" and rc == 143:
        if "interrupted at epoch" not in seg["stderr"]:
            return "exit 143 without the 'interrupted at epoch N' line"
        if (run_dir / "DONE").exists():
            return "DONE written by an interrupted run"
        return None
    return f"unexpected exit {rc}:\n{seg['stderr'][-3000:]}"


# ----------------------------------------------------------------------------------------------------------------
# Modifiers: what happens to the run directory between a kill and the resume

def _make_read_only(run_dir: Path):
    """Make ``run_dir`` read-only; returns the undo. As root a read-only bind mount (root ignores permissions),
    otherwise ``chmod -R a-w``. Raises ``OSError`` when that is not possible here (root without mount rights)."""
    if os.geteuid() == 0:
        for cmd in (["mount", "--bind", str(run_dir), str(run_dir)], ["mount", "-o", "remount,ro,bind", str(run_dir)]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                if cmd[1] != "--bind":
                    subprocess.run(["umount", str(run_dir)], capture_output=True)
                raise OSError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return lambda: subprocess.run(["umount", str(run_dir)], check=True, capture_output=True)
    modes = {p: p.stat().st_mode for p in [run_dir, *run_dir.rglob("*")]}
    for p, mode in sorted(modes.items(), key=lambda item: -len(item[0].parts)):  # files before their folders
        p.chmod(mode & ~0o222)

    def undo():
        for p, mode in sorted(modes.items(), key=lambda item: len(item[0].parts)):
            p.chmod(mode)
    return undo


def read_only_check(run_dir: Path, cache: Path) -> str | None:
    """``spft train --resume`` of a read-only run: exit 2, one line saying it is read-only, nothing changed (names,
    sizes, times, modes, contents). Returns a problem, or None."""
    before = listing(run_dir)
    try:
        undo = _make_read_only(run_dir)
    except OSError as exc:
        return f"cannot make {run_dir} read-only here: {exc}"
    try:
        proc = spft("train", "--resume", str(run_dir), env={"SPFT_CACHE": str(cache)})
    finally:
        undo()
    after = listing(run_dir)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 2 or len(lines) != 1 or "is read-only" not in lines[0]:
        return (f"read-only resume: exit {proc.returncode}, expected 2 and one 'is read-only' line:\n"
                f"{proc.stderr[-2000:]}")
    if after != before:
        changed = sorted({e[0] for e in set(after) ^ set(before)})
        return f"read-only resume changed the run: {changed[:5]}"
    return None


def modify(run_dir: Path, cache: Path, modifier: str, n: int) -> tuple[Path, str | None]:
    """Apply ``modifier`` to a killed run; returns (the run directory to resume, a problem or None)."""
    if modifier == "relocated":
        new = run_dir.with_name(f"{run_dir.name.split('~')[0]}~moved{n}")
        run_dir.rename(new)
        return new, None
    if modifier == "copied":
        new = run_dir.with_name(f"{run_dir.name.split('~')[0]}~copy{n}")
        shutil.copytree(run_dir, new, symlinks=True)
        shutil.rmtree(run_dir)  # the original is not needed again (and would hold the disk)
        return new, None
    if modifier == "read-only":
        return run_dir, read_only_check(run_dir, cache)
    if modifier:
        raise ValueError(f"unknown modifier {modifier!r}")
    return run_dir, None


# ----------------------------------------------------------------------------------------------------------------
# A campaign: one run attacked, resumed to its end, compared

def campaign(run_dir: Path, cache: Path, reference: Path, epochs: int, kinds: list[str], rng: random.Random,
             log=print, modifiers: list[str] | None = None, plan: Plan | None = None,
             stats: dict | None = None) -> tuple[int, list[str]]:
    """Attack one run with ``kinds`` (in order; each must land) and resume it to its end, then compare every record.

    ``modifiers``: for each attack, what happens to the run directory after the kill (``""``, ``relocated``: moved
    to a new name; ``copied``: copied, and resumed in the copy; ``read-only``: a resume of the read-only run must
    refuse and change nothing). A modifier drawn for a kill that leaves nothing to resume (killed before the run
    recorded its config) moves on to the next kill; after the last one, a write kill is added to carry it (counted
    as planned). Returns (kills landed, problems);
    ``log`` gets one line per segment; ``stats`` (a dict), when given, is filled with planned / landed / survived,
    the kinds that landed, the modifiers applied and the final run directory."""
    plan = plan or Plan(reference, reference.parent / f"{reference.name}.writes")
    modifiers = list(modifiers or [""] * len(kinds))
    stats = {} if stats is None else stats
    stats.update(planned=len(kinds), landed=0, kinds={}, modifiers={})
    problems, fresh, pending = [], True, []
    seg_no = 0

    def run_segment(env_extra: dict) -> subprocess.CompletedProcess:
        nonlocal seg_no
        seg_no += 1
        return spft(*segment_args(run_dir, epochs, fresh), env={"SPFT_CACHE": str(cache), **env_extra})

    queue = list(zip(kinds, modifiers))
    while queue:
        kind, modifier = queue.pop(0)
        attack = plan_attack(kind, run_dir, cache, plan, epochs, rng)
        proc = run_segment(attack["env"])
        seg = {"kind": attack["kind"], "rc": proc.returncode, "stderr": proc.stderr}
        wrong = check_segment(run_dir, seg)
        where = attack["where"]
        hit = re.search(r"fault injection: SIGKILL during write \d+ \((.*)\)", proc.stderr)
        if hit:
            where += f" ({_write_name(Path(hit.group(1)), run_dir)})"
            if attack["expect"] and Path(hit.group(1)).name != attack["expect"].split("/")[-1]:
                where += f" [planned: {attack['expect']}]"  # the plan drifted from spft's writes: still landed
        if wrong:
            problems.append(f"{attack['kind']} at {where}: {wrong}")
            break
        stats["landed"] += 1
        stats["kinds"][attack["kind"]] = stats["kinds"].get(attack["kind"], 0) + 1
        line = f"  {attack['kind']:7s} at {where}: exit {proc.returncode}, {history_rows(run_dir)} epoch(s) recorded"
        if attack["note"]:
            line += f" ({attack['note']})"
        if not (run_dir / "config.yaml").is_file():
            # killed before the run recorded its config (or before its first checkpoint, when spft removes the
            # directory it created): nothing to resume; the user starts it again
            line += "; nothing to resume yet: started again"
            shutil.rmtree(run_dir, ignore_errors=True)
            fresh = True
            if modifier:
                pending.append(modifier)
            if pending and not queue:
                queue.append(("write", ""))
                stats["planned"] += 1
                line += f"; a write kill added to carry {pending}"
            log(line)
            continue
        fresh = False
        for mod in [*pending, *([modifier] if modifier else [])]:
            run_dir, wrong = modify(run_dir, cache, mod, seg_no)
            stats["modifiers"][mod] = stats["modifiers"].get(mod, 0) + 1
            line += f"; {mod}" + (f" -> {run_dir.name}" if mod in ("relocated", "copied") else ": refused, unchanged")
            if wrong:
                problems.append(wrong)
        pending = []
        log(line)
        if problems:
            break
    if not problems:
        proc = run_segment({})
        if proc.returncode != 0:
            problems.append(f"final segment failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if not problems:
        if not (run_dir / "DONE").is_file():
            problems.append("no DONE after the last resume")
        else:
            problems += [f"differs from the uninterrupted run: {d}" for d in differences(run_dir, reference)]
            temps = stray_temps(run_dir)
            if temps:
                problems.append(f"stray temp files: {[str(t) for t in temps]}")
            if (run_dir / "run.lock").exists():
                again = spft("train", "--resume", str(run_dir), env={"SPFT_CACHE": str(cache)})
                if again.returncode != 0:
                    problems.append(f"run.lock blocks a further --resume: {again.stderr[-500:]}")
    stats["survived"] = 0 if problems else stats["landed"]
    stats["run_dir"] = str(run_dir)
    return stats["landed"], problems


def reference_run(work: Path, cache: Path, epochs: int) -> Path:
    """The uninterrupted run, with its write log (``reference.writes`` beside it, see :class:`Plan`)."""
    ref, writes = work / "reference", work / "reference.writes"
    if not (ref / "DONE").is_file() or not writes.is_file():
        shutil.rmtree(ref, ignore_errors=True)
        writes.unlink(missing_ok=True)
        proc = spft("train", CONFIG, *overrides(ref, epochs), env={"SPFT_CACHE": str(cache),
                                                                   "SPFT_FAULT_LOG": str(writes)})
        if proc.returncode != 0:
            raise SystemExit(f"reference run failed:\n{proc.stderr}")
    return ref


def campaign_cache(work: Path, shared: Path, name: str) -> Path:
    """A cache of its own for one attacked run (so its stage-1 features are written, and can be killed, again),
    sharing the generated phantoms."""
    cache = work / f"cache-{name}"
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "phantoms").exists() and (shared / "phantoms").exists():
        (cache / "phantoms").symlink_to((shared / "phantoms").resolve())
    return cache


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, also into a file
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kill points to land and survive (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--work", default=None, help="working folder (default: a new temp folder)")
    args = ap.parse_args(argv)
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="spft-faults-"))
    shared = work / "cache"
    shared.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    start = time.time()
    ref = reference_run(work, shared, args.epochs)
    plan = Plan(ref, work / "reference.writes")
    print(f"reference run: {ref} ({time.time() - start:.0f} s, {len(plan.writes)} atomic writes, "
          f"epochs end at writes {plan.epoch_ends})")
    totals = {"planned": 0, "landed": 0, "survived": 0, "kinds": {}, "modifiers": {}}
    runs, failures, deck = 0, [], []
    while totals["landed"] < args.kills and not failures:
        runs += 1
        n = min(rng.randint(2, 5), max(1, args.kills - totals["landed"]))
        kinds = [rng.choice(["write", "sigkill", "sigterm"]) for _ in range(n)]
        modifiers = []
        for _ in kinds:  # drawn from a shuffled deck, so every modifier comes up in a campaign of a few runs
            if not deck:
                deck = ["relocated", "copied", "read-only", "", ""]
                rng.shuffle(deck)
            modifiers.append(deck.pop())
        name = f"run{runs:03d}"
        print(f"{name}: attacks {[k + (f'+{m}' if m else '') for k, m in zip(kinds, modifiers)]}")
        cache = campaign_cache(work, shared, name)
        stats: dict = {}
        _, problems = campaign(work / name, cache, ref, args.epochs, kinds, rng, modifiers=modifiers, plan=plan,
                               stats=stats, log=lambda line: print(line, flush=True))
        for key in ("planned", "landed", "survived"):
            totals[key] += stats[key]
        for group in ("kinds", "modifiers"):
            for key, count in stats[group].items():
                totals[group][key] = totals[group].get(key, 0) + count
        print(f"  planned {stats['planned']}, landed {stats['landed']}, survived {stats['survived']}"
              + ("" if problems else ": all records equal to the uninterrupted run"))
        for line in problems:
            print(f"  PROBLEM: {line}")
        failures += problems
        shutil.rmtree(cache, ignore_errors=True)
        if not problems:
            shutil.rmtree(stats["run_dir"], ignore_errors=True)  # keep a broken run to look at
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(totals["kinds"].items()))
    mods = ", ".join(f"{k} {v}" for k, v in sorted(totals["modifiers"].items()))
    print(f"\n{runs} runs, {time.time() - start:.0f} s: planned {totals['planned']}, landed {totals['landed']}, "
          f"survived {totals['survived']} (kills: {kinds}; after a kill: {mods}); "
          f"{'all records equal to the uninterrupted run' if not failures else f'{len(failures)} problem(s)'}")
    return 1 if failures or totals["landed"] < totals["planned"] else 0


if __name__ == "__main__":
    sys.exit(main())

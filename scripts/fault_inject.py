"""Fault injection for ``spft train`` / ``--resume``: kill a tiny training at random moments, resume, compare.

    python scripts/fault_inject.py --kills 20 [--seed 0] [--epochs 4] [--work DIR]

A tiny run (2-block Dinov2, 240 phantoms, DataLoader workers = 2) is trained once straight through as the reference.
Then runs of the same config are attacked until ``--kills`` kill points were survived: each segment (the start, or a
``spft train --resume``) is killed by one of

* ``write``   — SIGKILL inside the N-th atomic file write (``SPFT_FAULT_POINT=N``, the hook in
  :func:`spft.atomic.fault_point`): checkpoints, digests, history, JSON records, stage-1 features;
* ``sigkill`` — SIGKILL at a random training batch of a random epoch (:class:`KillAt`);
* ``sigterm`` — SIGTERM at a random training batch (:class:`KillAt`): spft must exit 143 with the
  ``interrupted at epoch N; resume with ...`` line;

and resumed until ``DONE``. Each finished run must then equal the reference: ``history.csv``,
``predictions_test.csv``, ``logs/metrics.csv`` and the weights in ``checkpoints/best.ckpt``; no ``*.tmp`` may remain
in the run directory, and a ``run.lock`` left behind must not block a further ``spft train --resume``.
Each attacked run gets its own stage-1 feature cache, so feature-cache writes are among the kill points.

:class:`KillAt` is the test hook the suite uses too (``SPFT_TEST_CALLBACK=fault_inject:KillAt``,
``SPFT_KILL_AT=EPOCH:BATCH:SIGNAL``, this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
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


def differences(run: Path, reference: Path) -> list[str]:
    """What differs between a finished run and the reference (empty: equal)."""
    import torch

    out = [f"{name} missing" for name in ("config.yaml", "env.json", "data.json", "metrics.json")
           if not (run / name).is_file()]
    for name in ("history.csv", "predictions_test.csv", "logs/metrics.csv"):
        a, b = run / name, reference / name
        if not a.is_file() or a.read_text() != b.read_text():
            out.append(name)
    a, b = state_dict(run / "checkpoints" / "best.ckpt"), state_dict(reference / "checkpoints" / "best.ckpt")
    if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
        out.append("checkpoints/best.ckpt weights")
    if not all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point()):
        out.append("checkpoints/best.ckpt holds non-finite weights")
    return out


def stray_temps(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or ".tmp" in p.suffix)]


def attack(run_dir: Path, cache: Path, epochs: int, kind: str, rng: random.Random, fresh: bool) -> dict:
    """One segment (start or resume) under attack ``kind``; returns what happened."""
    done = history_rows(run_dir)
    env = {"SPFT_CACHE": str(cache)}
    if kind == "write":
        env["SPFT_FAULT_POINT"] = str(rng.randint(1, 30 if fresh else 20))
        where = f"write {env['SPFT_FAULT_POINT']}"
    else:
        epoch, batch = rng.randint(min(done, epochs - 1), epochs - 1), rng.randrange(BATCHES_PER_EPOCH)
        sig = "KILL" if kind == "sigkill" else "TERM"
        env.update({"SPFT_TEST_CALLBACK": "fault_inject:KillAt", "SPFT_KILL_AT": f"{epoch}:{batch}:{sig}"})
        where = f"epoch {epoch} batch {batch}"
    args = ("train", CONFIG, *overrides(run_dir, epochs)) if fresh else ("train", "--resume", str(run_dir))
    proc = spft(*args, env=env)
    hit = re.search(r"fault injection: SIGKILL during write \d+ \((.*)\)", proc.stderr)
    if hit:
        where += f" ({Path(hit.group(1)).name})"
    return {"kind": kind, "where": where, "rc": proc.returncode, "stderr": proc.stderr}


def check_segment(run_dir: Path, seg: dict) -> str | None:
    """None when the segment ended as its attack should have; else what is wrong."""
    rc = seg["rc"]
    if rc == 0:
        return None  # the attack point lay past the run's end: it finished
    if seg["kind"] in ("write", "sigkill") and rc == -signal.SIGKILL:
        return None
    if seg["kind"] == "sigterm" and rc == 143:
        if "interrupted at epoch" not in seg["stderr"]:
            return "exit 143 without the 'interrupted at epoch N' line"
        if (run_dir / "DONE").exists():
            return "DONE written by an interrupted run"
        return None
    return f"unexpected exit {rc}:\n{seg['stderr'][-3000:]}"


def campaign(run_dir: Path, cache: Path, reference: Path, epochs: int, kinds: list[str], rng: random.Random,
             log=print) -> tuple[int, list[str]]:
    """Attack one run with ``kinds`` (in order) and resume it to its end. Returns (kill points survived, problems)."""
    kills, problems, fresh = 0, [], True
    queue = list(kinds)
    for _ in range(len(kinds) + 10):
        kind = queue.pop(0) if queue else None
        if kind is None:
            args = ("train", CONFIG, *overrides(run_dir, epochs)) if fresh else ("train", "--resume", str(run_dir))
            proc = spft(*args, env={"SPFT_CACHE": str(cache)})
            if proc.returncode != 0:
                problems.append(f"final segment failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
                return kills, problems
            break
        seg = attack(run_dir, cache, epochs, kind, rng, fresh)
        wrong = check_segment(run_dir, seg)
        if wrong:
            problems.append(f"{kind} at {seg['where']}: {wrong}")
            return kills, problems
        if seg["rc"] == 0:
            log(f"  {kind:7s} at {seg['where']}: not reached, the run finished")
            break
        kills += 1
        log(f"  {kind:7s} at {seg['where']}: exit {seg['rc']}, {history_rows(run_dir)} epoch(s) recorded")
        if not (run_dir / "config.yaml").is_file():
            # killed before the run recorded its config (or before its first checkpoint, when spft removes the
            # directory it created): nothing to resume; the user starts it again
            log("    (nothing to resume yet: started again)")
            shutil.rmtree(run_dir, ignore_errors=True)
            fresh = True
        else:
            fresh = False
    if not (run_dir / "DONE").is_file():
        problems.append("no DONE after the last resume")
        return kills, problems
    problems += [f"differs from the uninterrupted run: {d}" for d in differences(run_dir, reference)]
    temps = stray_temps(run_dir)
    if temps:
        problems.append(f"stray temp files: {[str(t) for t in temps]}")
    if (run_dir / "run.lock").exists():
        again = spft("train", "--resume", str(run_dir), env={"SPFT_CACHE": str(cache)})
        if again.returncode != 0:
            problems.append(f"run.lock blocks a further --resume: {again.stderr[-500:]}")
    return kills, problems


def reference_run(work: Path, cache: Path, epochs: int) -> Path:
    ref = work / "reference"
    if not (ref / "DONE").is_file():
        shutil.rmtree(ref, ignore_errors=True)
        proc = spft("train", CONFIG, *overrides(ref, epochs), env={"SPFT_CACHE": str(cache)})
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kill points to survive (default 20)")
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
    print(f"reference run: {ref} ({time.time() - start:.0f} s)")
    total, runs, failures = 0, 0, []
    while total < args.kills:
        runs += 1
        kinds = [rng.choice(["write", "sigkill", "sigterm"]) for _ in range(rng.randint(2, 5))]
        run_dir = work / f"run{runs:03d}"
        print(f"run {runs}: attacks {kinds}")
        cache = campaign_cache(work, shared, f"run{runs:03d}")
        kills, problems = campaign(run_dir, cache, ref, args.epochs, kinds, rng)
        total += kills
        for line in problems:
            print(f"  PROBLEM: {line}")
        failures += problems
        shutil.rmtree(cache, ignore_errors=True)
        if problems:
            break  # a broken run is a finding: stop and show it
    print(f"\n{total} kill points survived in {runs} runs ({time.time() - start:.0f} s); "
          f"{'all equal to the uninterrupted run' if not failures else f'{len(failures)} problem(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

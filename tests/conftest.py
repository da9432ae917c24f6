"""Shared fixtures: offline environment, a tiny phantom set generated once per session, a tiny-model config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

# A 2-block Dinov2 on 32 px inputs: the real architecture, small enough for a CPU test in seconds.
TINY_MODEL = [
    "model.config={model_type: dinov2, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
    "mlp_ratio: 2, patch_size: 8, image_size: 32}",
    "model.head_hidden=32",
    "data.image_size=32",
]


@pytest.fixture(autouse=True)
def _spft_logger_restored():
    """A test that runs ``spft.cli.main`` in-process leaves the ``spft`` logger writing to its own stderr handler with
    ``propagate = False`` (what the command line wants); put it back after each test, so that a later test's
    ``caplog`` sees spft's records whatever pytest version (pytest 8.0 only captures propagated records)."""
    import logging

    logger = logging.getLogger("spft")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture(scope="session")
def spft_cache(tmp_path_factory) -> Path:
    """A private SPFT_CACHE so tests never touch ~/.cache and share generated phantoms."""
    cache = tmp_path_factory.mktemp("spft_cache")
    os.environ["SPFT_CACHE"] = str(cache)
    return cache


def tiny_overrides(run_dir: Path, n_images: int = 240, epochs: int = 4, extra: tuple[str, ...] = (),
                   phantom: bool = True) -> list[str]:
    """A tiny, fast run of the demo config; ``phantom=False`` for a run whose data.name is switched (the phantom
    keys then are not keys of its dataset)."""
    return [
        *TINY_MODEL,
        *([f"data.phantom.n_images={n_images}", "data.phantom.image_size=64"] if phantom else []),
        "data.num_workers=0",
        f"trainer.max_epochs={epochs}",
        "trainer.batch_size=32",
        "trainer.progress_bar=false",
        "recipe.stage1_epochs=1",
        "recipe.unfreeze.blocks_per_epoch=1",
        f"run.dir={run_dir}",
        *extra,
    ]


def run_cli(*args: str, env: dict | None = None, check: bool = True, timeout: int = 600,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """Run ``spft ARGS`` in its own process, as a user would run ``spft``: forked from a process that has imported
    torch and Lightning already (:mod:`cli_zygote`: ~7 s less per command), or with ``fresh=True`` (and with
    ``SPFT_TEST_FRESH_CLI=1`` for every call) as ``python -m spft.cli`` from nothing."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    if fresh or os.environ.get("SPFT_TEST_FRESH_CLI") == "1":
        proc = subprocess.run([sys.executable, "-m", "spft.cli", *args], capture_output=True, text=True,
                              env=full_env, cwd=REPO, timeout=timeout)
    else:
        proc = _run_forked(list(args), full_env, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"spft {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _run_forked(args: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    import tempfile

    import cli_zygote

    with tempfile.TemporaryDirectory(prefix="spft-cli-") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        child = cli_zygote.start(args, env, str(REPO), out, err)
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(["spft", *args], timeout)
        with open(out, encoding="utf-8", errors="replace") as fh_out, open(err, encoding="utf-8",
                                                                              errors="replace") as fh_err:
            return subprocess.CompletedProcess(["spft", *args], child.exitcode, fh_out.read(), fh_err.read())


SWEEP_CONFIG = "configs/phantom_cxr.yaml"


def sweep_overrides(epochs: int = 2) -> list[str]:
    """The tiny-run overrides without run.dir (the sweep sets it)."""
    return [o for o in tiny_overrides(Path("unused"), n_images=240, epochs=epochs) if not o.startswith("run.dir=")]


@pytest.fixture(scope="session")
def repeat_sweep(spft_cache, tmp_path_factory):
    """A 3-seed ``spft repeat`` run one after the other through the CLI: (sweep dir, process, CLI args). Shared by
    tests/test_sweep.py and tests/test_sweep_parallel.py (whose ``--jobs 2`` sweep must equal it)."""
    out = tmp_path_factory.mktemp("sweeps") / "repeat"
    args = ["repeat", SWEEP_CONFIG, *sweep_overrides(), "--seeds", "0,1,2", "--out", str(out)]
    return out, run_cli(*args), args

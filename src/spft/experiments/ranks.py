"""Which DDP process this is, from the launcher's environment alone (no torch, no spft imports): used by the run
directory, the run lock and the CLI before any process group exists."""

from __future__ import annotations

import os


def secondary_rank() -> bool:
    """True in a DDP process other than global rank 0, as the launcher told it through the environment
    (torchrun: ``RANK``; Lightning's own launcher: ``LOCAL_RANK``/``NODE_RANK``; SLURM: ``SLURM_PROCID``)."""
    env = os.environ
    return any(int(env.get(var) or 0) > 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))

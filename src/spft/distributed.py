"""Every rank / world / collective helper of spft in one place: which DDP process this is (from the launcher's
environment, before any process group exists), joining the launcher's process group outside a Lightning Trainer,
gathering per-rank results back into dataset order, agreeing on a flag, the late-gradient average that keeps blocks
opened after DDP wrapped the model in sync, and the per-epoch check that every rank holds the same weights.

torch is imported inside the functions that need it: the CLI, the run directory and the run lock ask
:func:`secondary_rank` long before torch is loaded.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


# ---- from the launcher's environment (no torch) ------------------------------------------------------------------

def secondary_rank() -> bool:
    """True in a DDP process other than global rank 0, as the launcher told it through the environment
    (torchrun: ``RANK``; Lightning's own launcher: ``LOCAL_RANK``/``NODE_RANK``; SLURM: ``SLURM_PROCID``)."""
    env = os.environ
    return any(int(env.get(var) or 0) > 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def launched_world() -> int:
    """How many processes the launcher started for this job (torchrun: ``WORLD_SIZE``; SLURM: ``SLURM_NTASKS``)."""
    env = os.environ
    return max(int(env.get("WORLD_SIZE") or 1), int(env.get("SLURM_NTASKS") or 1) if "SLURM_PROCID" in env else 1)


def local_processes(explicit: int | None = None) -> int:
    """Training processes on this node: ``explicit`` (the trainer's devices), else what the launcher says
    (torchrun: ``LOCAL_WORLD_SIZE``; SLURM: ``SLURM_NTASKS_PER_NODE``), else 1."""
    if explicit:
        return max(1, int(explicit))
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return max(1, int(value))
    return 1


# ---- process groups ------------------------------------------------------------------------------------------------

def init_from_launcher() -> tuple[int, int]:
    """(rank, world) for code that runs outside a Lightning Trainer (``spft evaluate``): when torchrun or SLURM
    launched several processes, join their process group (NCCL on GPUs, gloo on CPUs) once; else (0, 1)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK") or 0))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def rank_and_world(trainer) -> tuple[int, int]:
    """(global rank, world size) of a Lightning ``trainer``, (0, 1) when there is none."""
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


# ---- collectives ---------------------------------------------------------------------------------------------------

def gather_objects(obj, world: int) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, obj)
    return out


def all_ranks_agree(flag: bool, world: int) -> bool:
    """True only when ``flag`` holds on every rank (so all ranks take the same branch of a collective step)."""
    return all(gather_objects(bool(flag), world))


def gather_by_index(parts: dict[str, list], world: int, per_batch: tuple[str, ...] = ("loss",)) -> dict:
    """Concatenate per-batch lists of tensors from every DDP rank and put the samples back in dataset order.

    ``parts["index"]`` holds each sample's position in the split; every other per-sample key is reordered by it,
    keys in ``per_batch`` (e.g. summed losses) are just concatenated. Evaluation shards carry no padding
    (:class:`~spft.data.dataset.ShardSampler`), so the result is exactly the single-process evaluation set.
    """
    import torch

    local = {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items() if v or k == "index"}
    if world > 1:
        gathered = gather_objects(local, world)
        local = {k: torch.cat([g[k] for g in gathered]) for k in local}
    order = torch.argsort(local["index"].long())
    return {k: (v if k in per_batch else v[order]) for k, v in local.items()}


def average_gradients(params: list, world: int) -> None:
    """All-reduce the gradients of ``params`` (one flat buffer) and divide by ``world``: what DDP does for the
    parameters it registered, for those it did not (blocks opened after it wrapped the model)."""
    import torch

    from spft.compat import flatten_dense_tensors, unflatten_dense_tensors

    grads = [p.grad for p in params]
    if not grads:
        return
    flat = flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= world
    for g, synced in zip(grads, unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def check_ranks_agree(model, epoch: int) -> None:
    """After each DDP epoch: every rank's parameter digest, logged and compared; divergence stops the run
    (a silent divergence would make the saved rank-0 model one of several different models)."""
    import torch.distributed as dist

    from spft.models.digest import weights_digest

    mine = weights_digest(model, buffers=False)  # buffers (BN statistics) are each rank's own between broadcasts
    prints = gather_objects(mine, dist.get_world_size())
    log.info("rank %d weights digest after epoch %d: %s", dist.get_rank(), epoch, mine)
    if len(set(prints)) > 1:
        raise RuntimeError(f"DDP ranks hold different weights after epoch {epoch}: digests {prints}")

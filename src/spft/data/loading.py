"""DataLoader settings chosen from the machine: workers, pinned memory and prefetch (``data.num_workers`` etc.).

Every task builds its loaders with :func:`loader_options` so the choice is made in one place. ``null`` in the config
means "choose": workers = cores this process may use - 1 (at most 16, at least 0), pinned memory when a GPU trains,
prefetch 4 batches per worker. An explicit value is always used as given (``data.prefetch_factor`` only applies with
workers: torch refuses it without). Bad values raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import os

from spft.distributed import local_processes
from spft.errors import DataError

MAX_AUTO_WORKERS = 16
DEFAULT_PREFETCH = 4


def cpu_count() -> int:
    """Cores this process may use (the affinity mask under SLURM/cgroups/taskset), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(data_cfg, local_world: int | None = None) -> int:
    """``data.num_workers``, or ``min(16, cores per local DDP process - 1)`` (at least 0) when it is null.

    Raises:
        ValueError: ``data.num_workers`` is negative.
    """
    if data_cfg.num_workers is not None:
        if data_cfg.num_workers < 0:
            raise DataError(f"data.num_workers must be >= 0 (or null to choose from the cores), "
                             f"got {data_cfg.num_workers}")
        return int(data_cfg.num_workers)
    # under DDP every process on the node builds loaders: share the cores, else 8 ranks x 15 workers would fight
    # over 16 cores
    return max(0, min(MAX_AUTO_WORKERS, cpu_count() // local_processes(local_world) - 1))


def loader_options(data_cfg, on_gpu: bool, local_world: int | None = None) -> dict:
    """Keyword arguments for ``torch.utils.data.DataLoader``: num_workers, pin_memory, persistent_workers and
    prefetch_factor (only with workers, as torch requires).

    Raises:
        ValueError: ``data.num_workers`` is negative or ``data.prefetch_factor`` is below 1.
    """
    workers = resolve_workers(data_cfg, local_world)
    prefetch = data_cfg.prefetch_factor
    if prefetch is not None and prefetch < 1:
        raise DataError(f"data.prefetch_factor must be >= 1 (or null for {DEFAULT_PREFETCH}), got {prefetch}")
    options = {"num_workers": workers,
               "pin_memory": bool(on_gpu if data_cfg.pin_memory is None else data_cfg.pin_memory),
               "persistent_workers": workers > 0}
    if workers > 0:
        options["prefetch_factor"] = int(DEFAULT_PREFETCH if prefetch is None else prefetch)
    return options

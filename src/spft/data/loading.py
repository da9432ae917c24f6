"""DataLoader settings chosen from the machine: workers, pinned memory and prefetch (``data.num_workers`` etc.).

Every task builds its loaders with :func:`loader_options` so the choice is made in one place. ``null`` in the config
means "choose": workers = cores - 1 (at most 16, at least 0), pinned memory when a GPU trains, prefetch 4 batches
per worker. An explicit value is always used as given.
"""

from __future__ import annotations

import os


def cpu_count() -> int:
    """Cores this process may use (the affinity mask under SLURM/cgroups), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def resolve_workers(data_cfg) -> int:
    """``data.num_workers``, or ``min(16, cores - 1)`` when it is null."""
    if data_cfg.num_workers is not None:
        if data_cfg.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {data_cfg.num_workers}")
        return int(data_cfg.num_workers)
    return max(0, min(16, cpu_count() - 1))


def loader_options(data_cfg, on_gpu: bool) -> dict:
    """Keyword arguments for ``torch.utils.data.DataLoader``: num_workers, pin_memory, persistent_workers and
    prefetch_factor (only with workers, as torch requires)."""
    workers = resolve_workers(data_cfg)
    options = {"num_workers": workers,
               "pin_memory": bool(on_gpu if data_cfg.pin_memory is None else data_cfg.pin_memory),
               "persistent_workers": workers > 0}
    if workers > 0:
        options["prefetch_factor"] = int(data_cfg.prefetch_factor or 4)
    return options

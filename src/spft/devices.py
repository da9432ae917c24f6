"""Which device and numeric precision spft runs on, in one place: the training device and precision of a config
(Lightning), the evaluation device, a ``--device`` option (auto / cpu / cuda / cuda:N) as torch and as Ultralytics
name it, and Ultralytics' AMP setting."""

from __future__ import annotations

import torch

from spft.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``--device`` as a torch device: ``auto`` is the GPU when there is one; ``cuda`` without one is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here (use cpu or auto)")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def ultralytics_device(device: str | torch.device = "auto") -> str:
    """``--device`` (auto / cpu / cuda / cuda:N) as Ultralytics names it: ``cpu`` or a GPU index."""
    resolved = resolve_device(device)
    return "cpu" if resolved.type == "cpu" else str(resolved.index or 0)


def trains_on_gpu(cfg) -> bool:
    """Whether the trainer will run on a CUDA GPU (decides pinned memory and precision defaults)."""
    return cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def eval_device(cfg) -> str:
    """Where a run's evaluation runs: ``cuda`` when there is a GPU and ``trainer.accelerator`` is not cpu."""
    return "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu"


def resolve_precision(cfg) -> str:
    """``trainer.precision``, else bf16-mixed on a GPU that supports it (16-mixed otherwise), else fp32."""
    if cfg.trainer.precision:
        return cfg.trainer.precision
    if trains_on_gpu(cfg):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def ultralytics_amp(device: str):
    """Ultralytics' ``amp`` argument for its device string: off on a CPU, bf16 where the GPU supports it."""
    if device == "cpu":
        return False
    return "bf16" if torch.cuda.is_bf16_supported() else True

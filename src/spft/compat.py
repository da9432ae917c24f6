"""The one place spft reaches into other libraries' private APIs.

Every private name spft uses — an underscore attribute, a module under ``torch._``, a method a subclass overrides
that its library does not document — is reached through this module, with a docstring that names the library, the
private name, the version it was checked against and what breaks without it. ``tests/test_compat.py`` has one test
per touchpoint that fails with a message naming the touchpoint when an upgrade removes, renames or changes it; the
major versions of these libraries are capped in ``pyproject.toml`` for the same reason.

Overrides of private methods stay in the subclasses that need them (a ``ModelCheckpoint`` subclass overriding
``_save_checkpoint``); they are listed in :data:`PRIVATE_OVERRIDES`, and :func:`check_override` verifies that the
base class still has the method, with the parameters the override expects, and still calls it.

Checked against: Python 3.11.7, torch 2.14.1, lightning 2.6.6, transformers 5.25.0, ultralytics 8.4.190,
submitit 1.5.4 (:data:`CHECKED_AGAINST`; :func:`installed_versions` reads what is installed now).
``tests/test_compat.py`` also passes at pyproject's lower bounds (``make test-lowest``): lightning 2.5.0,
transformers 5.21.0, ultralytics 8.4.68, submitit 1.5.0 (torch 2.14.1 there too: torch comes from the Makefile's pins).

Importing this module imports only the standard library (the CLI, ``spft.recipe`` and the detection task's registry
entry import it); each function imports its library when called.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

CHECKED_AGAINST = {"python": "3.11.7", "torch": "2.14.1", "lightning": "2.6.6", "transformers": "5.25.0",
                   "ultralytics": "8.4.190", "submitit": "1.5.4"}


def installed_versions() -> dict[str, str | None]:
    """The installed version of each library in :data:`CHECKED_AGAINST` (``None``: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in CHECKED_AGAINST:
        if name == "python":
            continue
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


# --- torch ----------------------------------------------------------------------------------------------------------

def flatten_dense_tensors(tensors: list):
    """torch: ``torch._utils._flatten_dense_tensors`` (checked: torch 2.14.1) — one flat buffer of ``tensors``.

    Used by :func:`spft.distributed.average_gradients` to all-reduce the gradients of blocks opened after DDP wrapped
    the model in one collective. Without it: one all-reduce per tensor (slow), or blocks that diverge across ranks."""
    from torch._utils import _flatten_dense_tensors

    return _flatten_dense_tensors(tensors)


def unflatten_dense_tensors(flat, tensors: list) -> tuple:
    """torch: ``torch._utils._unflatten_dense_tensors`` (checked: torch 2.14.1) — views of ``flat`` shaped like
    ``tensors``, the inverse of :func:`flatten_dense_tensors` (same user, same consequence)."""
    from torch._utils import _unflatten_dense_tensors

    return _unflatten_dense_tensors(flat, tensors)


def group_tensors_by_device_and_dtype(tensorlistlist: list[list]) -> dict:
    """torch: ``torch.utils._foreach_utils._group_tensors_by_device_and_dtype`` (checked: torch 2.14.1).

    ``{(device, dtype): ([list per input list], indices)}``: what torch's own optimizers use to batch
    ``_foreach`` calls. Used by :class:`spft.recipe.ema.EmaModel` (one ``_foreach_lerp_`` per group); without it the
    EMA update falls back to nothing — it raises, as a ``_foreach`` op needs same-device, same-dtype lists."""
    from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

    return _group_tensors_by_device_and_dtype(tensorlistlist)


def foreach_lerp_(selves: list, ends: list, weight: float) -> None:
    """torch: ``torch._foreach_lerp_(self, end, weight)`` (checked: torch 2.14.1) — in place ``a += w * (b - a)``
    over tensor lists, one kernel per group. Used by :class:`spft.recipe.ema.EmaModel`; without it the EMA update
    costs a Python call and temporaries per tensor."""
    import torch

    torch._foreach_lerp_(selves, ends, weight)


def dynamo_recompile_limit() -> tuple[str, int]:
    """torch: ``torch._dynamo.config.recompile_limit`` (``cache_size_limit`` before torch 2.6; checked: torch
    2.14.1) — ``(name, value)`` of how many graphs dynamo compiles per function before it falls back to eager.

    Used by :func:`spft.models.speed.compile_encoder`: progressive unfreezing changes ``requires_grad`` once per
    stage, each a new graph; with the default (8) a long plan would silently run uncompiled."""
    import torch._dynamo

    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    return name, int(getattr(torch._dynamo.config, name))


def set_dynamo_recompile_limit(value: int) -> None:
    """Set :func:`dynamo_recompile_limit` (torch: ``torch._dynamo.config.recompile_limit``; same user and reason)."""
    import torch._dynamo

    name, _ = dynamo_recompile_limit()
    setattr(torch._dynamo.config, name, int(value))


def is_compiled_in_place(module) -> bool:
    """torch: ``nn.Module._compiled_call_impl`` (checked: torch 2.14.1) — set by ``nn.Module.compile()``, the only
    trace an in-place compile leaves. Used by :func:`spft.models.speed.is_compiled` for env.json's ``speed``
    record; without it the record would say ``compile: false`` for a compiled encoder."""
    return getattr(module, "_compiled_call_impl", None) is not None


def batch_norm_base() -> type:
    """torch: ``torch.nn.modules.batchnorm._BatchNorm`` (checked: torch 2.14.1) — the base of BatchNorm1d/2d/3d and
    SyncBatchNorm (not of InstanceNorm). Used by the detection trainer to run the batch norms of frozen, randomly
    initialised backbone modules in train mode; without it those layers stay the identity and the signal vanishes."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return _BatchNorm


# --- transformers ---------------------------------------------------------------------------------------------------

def attn_implementation(config) -> str | None:
    """transformers: ``PretrainedConfig._attn_implementation`` (checked: transformers 5.25.0) — the attention
    implementation a model actually runs (``eager``, ``sdpa``, ``flash_attention_2`` ...), after transformers' own
    fallbacks. ``None`` for ``config=None`` or a config without it.

    Used by :mod:`spft.models.encoders` (fallback warnings, env.json's ``speed`` record) and
    :func:`spft.models.heatmaps.eager_attention` (attention rollout must switch to eager and back); without it a
    fallback would go unreported and rollout would get no attention weights."""
    return getattr(config, "_attn_implementation", None)


def attention_function_names() -> list[str] | None:
    """transformers: ``transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS.valid_keys()`` (checked: transformers
    5.25.0; not in the public ``transformers`` namespace) — the registered attention implementations other than
    ``eager``. ``None`` on a transformers without the registry. Used to refuse a misspelt
    ``model.attn_implementation`` in one line; without it transformers' own error comes at model build."""
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return None
    return list(ALL_ATTENTION_FUNCTIONS.valid_keys())


def gradient_checkpointing_layer_class() -> type | None:
    """transformers: ``transformers.modeling_layers.GradientCheckpointingLayer`` (checked: transformers 5.25.0;
    ``None`` before it existed) — the block class whose instances checkpoint when ``gradient_checkpointing`` is set."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return None
    return GradientCheckpointingLayer


def enable_layer_checkpointing(layer, checkpoint_function) -> None:
    """transformers: ``GradientCheckpointingLayer._gradient_checkpointing_func`` (checked: transformers 5.25.0) —
    what the layer calls to recompute itself in backward, next to the public ``gradient_checkpointing`` flag.

    Used by :func:`spft.models.encoders.enable_gradient_checkpointing` for encoders built from such layers that do
    not declare ``supports_gradient_checkpointing`` (SAM2's Hiera image encoder); without it
    ``model.gradient_checkpointing: true`` is refused for SAM2."""
    layer.gradient_checkpointing = True
    layer._gradient_checkpointing_func = checkpoint_function


# --- Lightning ------------------------------------------------------------------------------------------------------

def checkpoint_last_saved(callback) -> tuple[int, str]:
    """Lightning: ``ModelCheckpoint._last_global_step_saved`` and ``._last_checkpoint_saved`` (checked: lightning
    2.6.6) — the global step and file of the callback's last save.

    Used by :class:`spft.tasks.lightning.trainer.LastCheckpoint` to copy ``best.ckpt`` instead of serialising the
    same step twice; without them last.ckpt costs a second full save whenever best.ckpt was written."""
    return callback._last_global_step_saved, callback._last_checkpoint_saved


def record_checkpoint_saved(callback, global_step: int, filepath: str) -> None:
    """Set :func:`checkpoint_last_saved` (Lightning: the same two attributes, written by
    ``ModelCheckpoint._save_checkpoint``); without it Lightning would save the copied step again."""
    callback._last_global_step_saved = global_step
    callback._last_checkpoint_saved = filepath


def logger_filesystem(obj):
    """Lightning: ``CSVLogger._fs`` / ``_ExperimentWriter._fs`` (checked: lightning 2.6.6) — the fsspec filesystem
    of the log folder. Used by spft's resumable CSV log (:class:`spft.tasks.lightning.trainer.ResumableCSVLogger`)
    to read and trim ``metrics.csv`` where Lightning writes it; without it a resumed run loses its earlier rows."""
    return obj._fs


def csv_logger_experiment(logger):
    """Lightning: ``CSVLogger._experiment`` (checked: lightning 2.6.6) — the backing field of the ``experiment``
    property (``None`` until first use), which :class:`~spft.tasks.lightning.trainer.ResumableCSVLogger` overrides
    to build its keeping writer; without it Lightning's deleting writer would be built instead."""
    return logger._experiment


def set_csv_logger_experiment(logger, writer) -> None:
    """Set :func:`csv_logger_experiment` (Lightning: ``CSVLogger._experiment``; same user and reason)."""
    logger._experiment = writer


# --- Ultralytics ----------------------------------------------------------------------------------------------------

def ultralytics_image_open() -> tuple | None:
    """Ultralytics: ``ultralytics.utils.patches.image_open`` and ``._image_open`` (checked: ultralytics 8.4.190) —
    ``(the wrapper Ultralytics puts on PIL.Image.open, Pillow's original)``; ``None`` when Ultralytics is not
    imported. Used by :func:`spft.tasks.detection.restore_pil_open`; without it an unreadable image would make
    Ultralytics pip-install ``pi-heif`` instead of spft reporting the file."""
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is None:
        return None
    return getattr(patches, "image_open", None), getattr(patches, "_image_open", None)


# --- submitit -------------------------------------------------------------------------------------------------------

SUBMITIT_LOCAL_CONTROLLER = "submitit.local._local"
"""submitit: the private module a ``LocalExecutor`` job's controller runs as (``python -m submitit.local._local``,
checked: submitit 1.5.4). :mod:`spft.experiments.slurm` looks for it in ``/proc/PID/cmdline`` to tell a running
local job from one that died; without it every running local job reads as INTERRUPTED."""


def submission_script(executor, uid: str = "preview") -> str:
    """submitit: ``Executor._make_submission_file_text(command, uid)`` and ``Executor._submitit_command_str``
    (checked: submitit 1.5.4) — the sbatch script submitit would submit. Used by ``spft repeat|ablate --launcher
    slurm --dry-run`` (:func:`spft.experiments.slurm.sbatch_script`) to show it; without it there is no preview."""
    return executor._make_submission_file_text(executor._submitit_command_str, uid)


# --- Python's argparse ----------------------------------------------------------------------------------------------

def subparser_actions(parser) -> list:
    """Python: ``ArgumentParser._actions`` and ``argparse._SubParsersAction`` (checked: Python 3.10-3.13, 3.11.7
    here) — the subcommand actions of ``parser``. Used by :mod:`spft.cli` to reach every leaf command's parser;
    without it ``-v`` after a subcommand stops working."""
    import argparse

    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def has_option_string(parser, option: str) -> bool:
    """Python: ``ArgumentParser._option_string_actions`` (checked: Python 3.11.7) — whether ``parser`` already has
    ``option`` (adding it twice raises). Used by :mod:`spft.cli` before adding ``-v`` to each leaf parser."""
    return option in parser._option_string_actions


# --- overrides of private methods -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrivateOverride:
    """A method of a library class that an spft subclass overrides although the library does not document it.

    ``base``/``subclass``: ``module:Class``; ``params``: the parameter names of the base method after ``self``, as
    the library passes them; ``called_in``: the module whose source calls ``.method(`` (what makes the override
    run); ``library``: the distribution whose version is checked."""

    library: str
    base: str
    method: str
    params: tuple[str, ...]
    subclass: str
    called_in: str
    why: str

    @property
    def name(self) -> str:
        return f"{self.base.replace(':', '.')}.{self.method}"


PRIVATE_OVERRIDES: tuple[PrivateOverride, ...] = (
    PrivateOverride("lightning", "lightning.pytorch.callbacks:ModelCheckpoint", "_save_checkpoint",
                    ("trainer", "filepath"), "spft.tasks.lightning.trainer:LastCheckpoint",
                    "lightning.pytorch.callbacks.model_checkpoint",
                    "last.ckpt is a byte copy of best.ckpt saved at the same step (no second serialisation)"),
    PrivateOverride("lightning", "lightning.pytorch.callbacks:ModelCheckpoint", "_generate_state_key",
                    ("kwargs",), "spft.tasks.lightning.trainer:RelocatableCheckpoint",
                    "lightning.pytorch.callbacks.model_checkpoint",
                    "the callback's state key keeps the name 'ModelCheckpoint', so older checkpoints' best-tracking "
                    "state still loads"),
    PrivateOverride("lightning", "lightning.pytorch.loggers.csv_logs:ExperimentWriter", "_check_log_dir_exists",
                    (), "spft.tasks.lightning.trainer:_KeepingWriter", "lightning.fabric.loggers.csv_logs",
                    "Lightning deletes metrics.csv there; a resumed run keeps its earlier epochs' rows"),
    PrivateOverride("torch", "torch.nn:Module", "_load_from_state_dict",
                    ("state_dict", "prefix", "local_metadata", "strict", "missing_keys", "unexpected_keys",
                     "error_msgs"),
                    "spft.recipe.ema:EmaModel", "torch.nn.modules.module",
                    "the EMA's Python update counter is re-read from the loaded n_averaged buffer"),
    PrivateOverride("ultralytics", "ultralytics.engine.trainer:BaseTrainer", "_setup_train", (),
                    "spft.tasks.detection.trainer:SpftTrainerMixin", "ultralytics.engine.trainer",
                    "the recipe's EMA decay, the resumed class weights and the random-weights warning after "
                    "Ultralytics' setup"),
    PrivateOverride("ultralytics", "ultralytics.engine.trainer:BaseTrainer", "_setup_scheduler", (),
                    "spft.tasks.detection.trainer:SpftTrainerMixin", "ultralytics.engine.trainer",
                    "the recipe's per-group schedule instead of Ultralytics' single lambda"),
    PrivateOverride("ultralytics", "ultralytics.engine.trainer:BaseTrainer", "_model_train", (),
                    "spft.tasks.detection.trainer:SpftTrainerMixin", "ultralytics.engine.trainer",
                    "the stage plan's trainable blocks at every epoch start (Ultralytics resets requires_grad)"),
    PrivateOverride("ultralytics", "ultralytics.models.utils.loss:RTDETRDetectionLoss", "_get_loss_class",
                    ("pred_scores", "targets", "gt_scores", "num_gts", "postfix"),
                    "spft.tasks.detection.losses:WeightedRTDETRLoss", "ultralytics.models.utils.loss",
                    "RT-DETR's classification term weighted per class (recipe.class_weights)"),
)
"""Every override of a library's private method in spft (``tests/test_compat.py`` checks each one)."""


def _resolve(dotted: str):
    import importlib

    module, _, qualname = dotted.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def check_override(override: PrivateOverride) -> list[str]:
    """What no longer holds for ``override`` in the installed library (empty: all fine).

    Checks that the base class still has the method, callable, with ``override.params`` after ``self``; that the
    spft subclass still defines it and accepts those parameters; and that ``override.called_in`` still calls it."""
    import importlib
    import inspect

    problems = []
    base = _resolve(override.base)
    method = getattr(base, override.method, None)
    if not callable(method):
        return [f"{override.name} is gone (spft overrides it: {override.why})"]
    params = [p.name for p in inspect.signature(method).parameters.values()][1:]
    if tuple(params) != override.params:
        problems.append(f"{override.name} now takes ({', '.join(params)}), spft's override expects "
                        f"({', '.join(override.params)})")
    sub = _resolve(override.subclass)
    if override.method not in vars(sub):
        problems.append(f"{override.subclass} no longer overrides {override.method}: remove it from PRIVATE_OVERRIDES")
    else:
        sig = inspect.signature(getattr(sub, override.method))
        args = [None] + [None] * sum(1 for p in override.params if p not in ("args", "kwargs"))
        try:
            sig.bind(*args)
        except TypeError as exc:
            problems.append(f"{override.subclass}.{override.method} does not accept the base's parameters: {exc}")
    source = inspect.getsource(importlib.import_module(override.called_in))
    if f".{override.method}(" not in source:
        problems.append(f"{override.called_in} no longer calls .{override.method}(: spft's override would never run")
    return problems

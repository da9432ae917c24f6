"""The Lightning Trainer every Lightning task uses, and what it is built from: :func:`build_trainer` (best/last
checkpoints, early stopping, the recipe's callbacks from :mod:`spft.tasks.lightning.callbacks`, CSV + TensorBoard
logs, the progress bar of :mod:`spft.tasks.lightning.progress`), the checkpoint files (:class:`LastCheckpoint` after
every epoch, :class:`AtomicCheckpointIO`: atomic writes with a recorded digest, verified loads), the CSV log that
survives ``--resume``, :func:`quiet_lightning` and :func:`load_checkpoint_into` for evaluation.
"""

from __future__ import annotations

import contextlib
import csv
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from spft.atomic import atomic_write_text
from spft.compat import (
    checkpoint_last_saved,
    csv_logger_experiment,
    logger_filesystem,
    record_checkpoint_saved,
    set_csv_logger_experiment,
)
from spft.devices import resolve_precision
from spft.errors import DataError, MissingFileError
from spft.experiments.checkpoints import copy_checkpoint, load_checkpoint, newest_intact, save_checkpoint
from spft.tasks.hooks import injected_callbacks
from spft.tasks.lightning.callbacks import recipe_callbacks
from spft.tasks.lightning.data import FreshEpochOrder
from spft.tasks.lightning.progress import StderrProgressBar, quiet_device_banners


class RelocatableCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose saved state survives a moved or copied run directory.

    Lightning stores the absolute ``dirpath`` in a checkpoint and, when a resumed run's folder differs, drops
    ``best_model_score`` and the top-k record (only a warning says so): a worse epoch after ``--resume`` in a moved
    run would then become "best". Run directories are relocatable, so the paths in the saved state are read as
    *names inside the checkpoint folder*: each one is re-rooted in this run's ``dirpath`` before Lightning loads it,
    whatever folder the run was in when it was saved."""

    # The name in the callback's state key (Lightning uses the class name): "ModelCheckpoint", as before this class
    # existed, so the best-tracking state of checkpoints written by earlier versions still loads.
    state_name = "ModelCheckpoint"

    def _generate_state_key(self, **kwargs) -> str:  # Lightning private: spft.compat.PRIVATE_OVERRIDES
        return f"{self.state_name}{kwargs!r}"

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        if self.dirpath is not None and state.get("dirpath") not in (None, self.dirpath):
            here = Path(self.dirpath)

            def moved(path):
                return str(here / Path(path).name) if path else path

            state["dirpath"] = self.dirpath
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state:
                    state[key] = moved(state[key])
            if isinstance(state.get("best_k_models"), dict):
                state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
        super().load_state_dict(state)


class LastCheckpoint(RelocatableCheckpoint):
    """``last.ckpt`` after every epoch — Lightning's ``save_last`` only writes it when a monitored checkpoint was
    saved, so a crash after a non-improving epoch would lose every epoch since the best. When ``best.ckpt`` was
    written at this very step, last.ckpt is a byte copy of it (no second serialisation) — a copy, not a hard link,
    so that one damaged file never takes the other with it and ``--resume`` can fall back to the intact one."""

    def __init__(self, best: ModelCheckpoint, dirpath):
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                         enable_version_counter=False)
        self._best = best

    state_name = "LastCheckpoint"

    def _save_checkpoint(self, trainer, filepath: str) -> None:  # Lightning private: spft.compat.PRIVATE_OVERRIDES
        best_step, best_file = checkpoint_last_saved(self._best)
        if best_step == trainer.global_step and best_file:
            if trainer.is_global_zero:
                copy_checkpoint(best_file, filepath)
            trainer.strategy.barrier()
            record_checkpoint_saved(self, trainer.global_step, filepath)
        else:
            super()._save_checkpoint(trainer, filepath)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through :mod:`spft.experiments.checkpoints`: atomic writes with a recorded digest, and loads that
    verify the digest and never unpickle code (``weights_only=True``) — Lightning's resume reads through here too."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location="cpu" if map_location is None else map_location)


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer without its delete-on-start: a resumed run appends to the earlier epochs' rows."""

    def __init__(self, log_dir: str):
        super().__init__(log_dir)
        fs = logger_filesystem(self)
        if fs.isfile(self.metrics_file_path):
            with fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])

    def _check_log_dir_exists(self) -> None:  # Lightning warns and deletes metrics.csv here (spft.compat)
        pass

    def keep_epochs_before(self, epoch: int) -> None:
        """Drop the rows of epochs >= ``epoch`` (an epoch an interruption cut short is trained and logged again).

        The kept lines are kept byte for byte, as Lightning's writer wrote them (``\\r\\n`` line ends, its quoting):
        re-serialising them with another CSV writer would leave a resumed run's log in two formats."""
        fs = logger_filesystem(self)
        if not fs.isfile(self.metrics_file_path):
            return
        with fs.open(self.metrics_file_path, "r", newline="") as fh:
            lines = fh.read().splitlines(keepends=True)  # Lightning's cells (metric names, numbers) hold no newline
        if not lines:
            return
        header = next(csv.reader([lines[0]]))
        column = header.index("epoch") if "epoch" in header else None

        def before(line: str) -> bool:
            cells = next(csv.reader([line]), [])
            cell = cells[column] if column is not None and column < len(cells) else ""
            return not cell or float(cell) < epoch

        kept = [lines[0], *(line for line in lines[1:] if before(line))]
        if len(kept) != len(lines):
            atomic_write_text(self.metrics_file_path, "".join(kept))


class ResumableCSVLogger(CSVLogger):
    """``logs/metrics.csv`` that survives ``--resume``: Lightning's CSVLogger deletes the file when a run starts in
    an existing log folder; this one keeps the rows of the epochs the checkpoint holds and appends the rest (see
    :class:`FlushCSVLog`, which also flushes the rows before each epoch's checkpoint)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        if csv_logger_experiment(self) is None:
            logger_filesystem(self).makedirs(self.root_dir, exist_ok=True)
            set_csv_logger_experiment(self, _KeepingWriter(log_dir=self.log_dir))
        return csv_logger_experiment(self)

    def keep_epochs_before(self, epoch: int) -> None:
        self.experiment.keep_epochs_before(epoch)


class FlushCSVLog(L.Callback):
    """Write the CSV log's buffered rows at each validation end, before the epoch's checkpoints (Lightning runs
    checkpoint callbacks last): a run killed later keeps in metrics.csv every epoch its checkpoint holds. When a
    resumed run starts training, the log keeps the rows of the epochs before it and drops those of the epoch the
    interruption cut short (they are logged again)."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, ResumableCSVLogger):
                    logger.keep_epochs_before(trainer.current_epoch)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()


# Lightning warnings a user of spft cannot act on (spft chose the setting, or it is Lightning's own business).
_UNACTIONABLE_WARNINGS = (
    r".*does not have many workers",  # data.num_workers is the user's explicit choice (0 in tests, on laptops)
    r".*overridden `transfer_batch_to_device` in `LightningModule` but have passed in a `LightningDataModule`",
    r"Checkpoint directory .* exists and is not empty",  # every --resume
    r"Experiment logs directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning vs torch versions
    r"Trying to infer the `batch_size` from an ambiguous collection",
    r"Found \d+ module\(s\) in eval mode at the start of training",  # the recipe's frozen blocks, on purpose
)


@contextlib.contextmanager
def quiet_lightning():
    """Ignore :data:`_UNACTIONABLE_WARNINGS` inside the block only (never a process-wide filter)."""
    with warnings.catch_warnings():
        for pattern in _UNACTIONABLE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def build_trainer(cfg, run_dir: Path, monitor: str, reload_dataloaders: bool = False,
                  extra_callbacks: tuple = ()) -> L.Trainer:
    """The Lightning Trainer every Lightning task uses: best/last checkpoints and early stopping on ``monitor``
    (an EMA metric when EMA is on), the recipe's callbacks, progress bar, CSV + TensorBoard logs, atomic checkpoint
    files.

    ``reload_dataloaders`` asks the DataModule for its loaders every epoch (the stage-1 feature cache switches
    from feature batches to images at stage 2; the DataModule hands back the same loader objects otherwise)."""
    best = RelocatableCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode="max",
                                 save_top_k=1, enable_version_counter=False)
    callbacks = [
        best,  # before last: last.ckpt must carry the best-tracking state this epoch updated
        LastCheckpoint(best, dirpath=run_dir / "checkpoints"),
        EarlyStopping(monitor=monitor, mode="max", patience=cfg.trainer.patience, check_finite=False),
        FreshEpochOrder(),  # each epoch its own sample order, whatever the worker count (resume included)
        FlushCSVLog(),
        *extra_callbacks,
    ]
    quiet_device_banners()  # Lightning's GPU/TPU banners (env.json says which device ran)
    if cfg.trainer.progress_bar:
        callbacks.append(StderrProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps // 2)))
    callbacks += injected_callbacks()
    callbacks += recipe_callbacks(cfg, run_dir)  # last: their hooks run after the others', as module hooks would
    loggers = [ResumableCSVLogger(run_dir, name="logs", version=""),
               TensorBoardLogger(run_dir, name="logs", version="tb")]
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy,
        use_distributed_sampler=False,  # spft.tasks.lightning.data shards itself: no padded evaluation sets
        precision=resolve_precision(cfg), callbacks=callbacks, logger=loggers,
        plugins=[AtomicCheckpointIO()], log_every_n_steps=cfg.trainer.log_every_n_steps, num_sanity_val_steps=0,
        enable_progress_bar=cfg.trainer.progress_bar, enable_model_summary=False,
        reload_dataloaders_every_n_epochs=1 if reload_dataloaders else 0,
        deterministic=cfg.trainer.deterministic,
        limit_train_batches=cfg.trainer.limit_train_batches, limit_val_batches=cfg.trainer.limit_val_batches,
    )


def load_checkpoint_into(module, ckpt: Path) -> int | None:
    """Load raw and EMA weights from ``ckpt`` into ``module``; the labels must be the run's. Returns the epoch.

    The file is verified against its recorded digest and loaded without unpickling code
    (:func:`spft.experiments.checkpoints.load_checkpoint`). When ``best.ckpt`` / ``last.ckpt`` is missing or damaged,
    the other one is used with a warning naming the damaged file."""
    ckpt = Path(ckpt)
    other = {"best.ckpt": "last.ckpt", "last.ckpt": "best.ckpt"}.get(ckpt.name)
    if other is not None:
        found = newest_intact(ckpt.parent, (ckpt.name, other))
        if found is None:
            raise MissingFileError(f"{ckpt} not found (has the run finished its first epoch?)")
        ckpt = found
    state = load_checkpoint(ckpt)
    saved = state.get("spft", {}).get("classes")
    if saved is not None and list(saved) != list(module.classes):
        raise DataError(f"the data's classes/structures {module.classes} differ from the run's {list(saved)} "
                        f"({ckpt})")
    module.load_state_dict(state["state_dict"])
    return state.get("epoch")


def load_best_weights(module, run_dir: Path) -> int | None:
    """Load ``best.ckpt`` (else, with a warning, ``last.ckpt``) into ``module``; returns the saved epoch."""
    return load_checkpoint_into(module, run_dir / "checkpoints" / "best.ckpt")

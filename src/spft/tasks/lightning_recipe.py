"""The SPFT recipe on Lightning, shared by every Lightning task (classification, segmentation).

:class:`RecipeModule` owns what does not depend on the task: the stage plan applied at each epoch (idempotent
freezing), the per-epoch reseed that makes ``--resume`` equal an uninterrupted run, the EMA update after every
optimizer step, the AdamW groups and cosine schedule from :mod:`spft.recipe`, the class/structure weights and
history in every checkpoint, and the per-epoch history row. Tasks add their forward, loss and validation metric.
EMA is torch's ``AveragedModel`` held as a submodule rather than Lightning's ``EMAWeightAveraging``: we need raw
and EMA metrics each epoch, a warm-up, and both weight sets in every checkpoint regardless of
``save_weights_only`` (docs/decisions.md#lightning).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import signal
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from spft.atomic import atomic_write_csv, atomic_write_json
from spft.devices import resolve_precision, trains_on_gpu
from spft.distributed import average_gradients, check_ranks_agree
from spft.errors import DataError, MissingFileError
from spft.experiments.checkpoints import copy_checkpoint, load_checkpoint, newest_intact, save_checkpoint
from spft.recipe import (
    ClassWeights,
    StagePlan,
    apply_trainable,
    build_ema,
    build_optimizer,
    build_scheduler,
    describe,
    trainable_at,
)
from spft.tasks.lightning_data import FreshEpochOrder

log = logging.getLogger(__name__)


def stage_plan(recipe_cfg) -> StagePlan:
    """The recipe section of the config as a :class:`~spft.recipe.StagePlan`."""
    u = recipe_cfg.unfreeze
    return StagePlan(stage1_epochs=recipe_cfg.stage1_epochs, unfreeze=u.enabled, top_k=u.top_k,
                     blocks_per_epoch=u.blocks_per_epoch, embeddings=u.embeddings)


def seed_everything_for_epoch(seed: int, epoch: int) -> None:
    """Reseed python, numpy and torch from (seed, epoch): training randomness becomes a function of the epoch."""
    s = (seed * 1_000_003 + epoch) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def rng_state() -> dict:
    """Recorded for provenance; resume does not need it because every epoch reseeds from (seed, epoch)."""
    # plain types only: Lightning loads checkpoints with torch.load(weights_only=True), which refuses numpy objects
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": random.getstate()}


def clean_row(row: dict) -> dict:
    """None and NaN as empty CSV cells."""
    return {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}


class RecipeModule(L.LightningModule):
    """Base LightningModule running the SPFT recipe around ``self.model`` (which must offer ``layer_groups()``).

    Args:
        cfg: the resolved :class:`~spft.config.SpftConfig`.
        model: the task model; ``model.layer_groups()`` names embeddings, blocks, final norm and head.
        classes: label names (classes or structures), in the order of the weights.
        weights: the run's :class:`~spft.recipe.ClassWeights`.
        run_dir: where ``history.csv`` and ``class_weights.json`` go (None: write nothing, e.g. in evaluation).
        head_name: how stage messages call the head (``mask decoder`` for SAM2).
    """

    head_lr_key = "lr_head"

    def __init__(self, cfg, model, classes: list[str], weights: ClassWeights, run_dir: str | Path | None = None,
                 head_name: str = "head"):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.classes = list(classes)
        self.cw = weights
        self.run_dir = Path(run_dir) if run_dir else None
        self.head_name = head_name
        self.plan = stage_plan(cfg.recipe)
        self.groups = model.layer_groups()
        self.n_blocks = len(self.groups.blocks)
        self.ema = build_ema(model, cfg.recipe.ema.decay, cfg.recipe.ema.warmup) if cfg.recipe.ema.enabled else None
        self.history: list[dict] = []
        # the epoch a resumed run continues at (set when the checkpoint loads). Lightning reports the checkpoint's
        # own epoch as current_epoch until its loop restarts, i.e. while it builds the first loaders.
        self.resumed_epoch: int | None = None
        self._state = None
        self._n_trainable = 0
        self._epoch_lrs: dict[str, float] = {}
        self._train_loss = (0.0, 0)
        self._step_ids: list | None = None  # the image ids of the batch being trained, for a divergence message
        self._step_loss: torch.Tensor | None = None
        self._pending_check = None  # (values [loss, grad norm], epoch, step, ids) of the last step, read lazily
        self._check_host: torch.Tensor | None = None
        self._check_ready = None
        apply_trainable(self.groups, trainable_at(self.plan, 0, self.n_blocks))

    def apply_speed_options(self) -> dict:
        """``model.*`` / ``trainer.compile`` speed options on the raw model, after the EMA copy exists (the EMA only
        evaluates: it needs neither compile nor gradient checkpointing; the attention kernel was chosen when the
        encoder was built, so both copies share it). The EMA copy gets channels-last too. Returns what is in
        effect, with the precision, for ``env.json``."""
        from spft.models.speed import apply_speed_options

        speed = apply_speed_options(self.model, self.cfg, on_gpu=trains_on_gpu(self.cfg))
        if speed.get("channels_last") and self.ema is not None:
            self.ema.module.to(memory_format=torch.channels_last)
        self.speed = {**speed, "precision": resolve_precision(self.cfg)}
        return self.speed

    # ---- recipe hooks -------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        state = trainable_at(self.plan, self.current_epoch, self.n_blocks)
        self._n_trainable = apply_trainable(self.groups, state)
        if state != self._state:
            text = describe(state, self.n_blocks).replace("head", self.head_name)
            log.info("epoch %d: %s (%s trainable parameters)", self.current_epoch, text, f"{self._n_trainable:,}")
        self._state = state
        self._train_loss = (0.0, 0)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Reseed at the first batch, not at epoch start: on resume Lightning creates the DataLoader iterator (which
        # draws from the global RNG) at a different moment than in an uninterrupted run.
        self._step_ids = batch.get("id") if isinstance(batch, dict) else None
        self._step_loss = None
        if batch_idx == 0:
            seed_everything_for_epoch(self.cfg.seed, self.current_epoch)
            # the learning rates of the epoch's first step, one per recipe part, for history.csv
            self._epoch_lrs = {}
            for group in self.trainer.optimizers[0].param_groups:
                self._epoch_lrs.setdefault(f"lr_{group['part']}", group["lr"])

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int = 0):
        """Tensors of the batch dict to ``device``; ids and groups (lists of strings) stay as they are. Lightning's
        generic version walks every string of those lists, a measurable cost per step on small models."""
        if isinstance(batch, dict):
            return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def track_train_loss(self, loss: torch.Tensor, n: int) -> None:
        # a device tensor, read once per epoch: float(loss) every step would wait for the GPU every step
        total, count = self._train_loss
        self._train_loss = (total + loss.detach() * n, count + n)
        # loggers only record every log_every_n_steps anyway; self.log costs ~1 ms per call on small models
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss", loss, prog_bar=True, batch_size=n)

    def on_fit_start(self) -> None:
        # DDP registers for gradient all-reduce only the parameters that train when it wraps the model (before
        # this hook); blocks opened later would silently diverge across ranks (Lightning #20340,
        # docs/decisions.md rule 3). Remember the registered set; on_after_backward averages the others' gradients
        # itself.
        self._ddp_registered = {id(p) for p in self.parameters() if p.requires_grad}

    def on_after_backward(self) -> None:
        if self.trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return
        late = [p for p in self.model.parameters() if p.requires_grad and p.grad is not None
                and id(p) not in self._ddp_registered]
        average_gradients(late, self.trainer.world_size)

    # ---- divergence: a non-finite loss or gradient norm stops the run at its step ---------------------------------
    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._step_loss = loss.detach()

    def on_before_optimizer_step(self, optimizer) -> None:
        """Record this step's loss and gradient norm; the previous step's are checked now. Reading them one step
        late costs no GPU synchronisation per step (a non-blocking copy and an event); the weights a bad step
        produced are never saved: the check runs again before every validation (hence every checkpoint)."""
        self.check_finite()
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # 16-bit mixed precision: the grad scaler itself skips steps with overflowing (inf) gradients
        if grads and not str(self.trainer.precision).startswith("16"):
            norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        else:
            norm = torch.zeros((), device=self.device)
        loss = self._step_loss if self._step_loss is not None else torch.zeros((), device=norm.device)
        values = torch.stack([loss.float().reshape(()), norm.float().reshape(()).to(loss.device)])
        if values.is_cuda:
            if self._check_host is None:
                self._check_host = torch.empty(2, pin_memory=True)
            self._check_host.copy_(values, non_blocking=True)
            self._check_ready = torch.cuda.Event()
            self._check_ready.record()
            values = self._check_host
        self._pending_check = (values, self.current_epoch, self.global_step, self._step_ids)

    def check_finite(self) -> None:
        """Raise :class:`~spft.errors.TrainingDiverged` if the last recorded step had a non-finite loss or gradient
        norm: epoch, step and the batch's image ids in one line; no checkpoint of the diverged state is written."""
        if self._pending_check is None:
            return
        values, epoch, step, ids = self._pending_check
        self._pending_check = None
        if self._check_ready is not None:
            self._check_ready.synchronize()
            self._check_ready = None
        loss, norm = (float(v) for v in values.tolist())
        if math.isfinite(loss) and math.isfinite(norm):
            return
        from spft.errors import TrainingDiverged

        raise TrainingDiverged(divergence_message(epoch, step, loss, norm, ids, self.run_dir))

    def on_validation_start(self) -> None:
        self.check_finite()  # before any validation metric, history row or checkpoint of this epoch

    def on_train_start(self) -> None:
        # a resumed run: the CSV log keeps the rows of the epochs before this one and drops those of the epoch
        # the interruption cut short (they are logged again)
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                if isinstance(logger, ResumableCSVLogger):
                    logger.keep_epochs_before(self.current_epoch)

    def on_train_end(self) -> None:
        self.check_finite()

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        if self.trainer.world_size > 1:
            check_ranks_agree(self.model, self.current_epoch)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def eval_model(self) -> torch.nn.Module:
        """The weights used for evaluation and export: EMA when enabled, raw otherwise."""
        return self.ema.module if self.ema is not None else self.model

    def refine_weights(self, metric_per_class: list[float | None]):
        """Stage 2 only, after each validation: the recipe's refinement from a per-class validation metric."""
        state = trainable_at(self.plan, self.current_epoch, self.n_blocks)
        refined = state.stage == 2 and self.cfg.recipe.class_weights.refine and self.cw.enabled
        if refined:
            self.cw.refine(self.current_epoch, metric_per_class)
        return state, refined

    def record_epoch(self, state, refined: bool, val_loss: float, metrics: dict, weight_log: str) -> dict:
        """Append one history row (stage, trainable parameters, lrs, losses, ``metrics``, weights) and write files."""
        train_total, train_n = self._train_loss
        train_total = float(train_total)
        row = {"epoch": self.current_epoch, "stage": state.stage, "open_blocks": len(state.open_blocks),
               "trainable_params": self._n_trainable, "step": self.global_step,
               "train_loss": train_total / train_n if train_n else None, "val_loss": val_loss, **metrics}
        row.update(self._epoch_lrs)
        row.update({f"w_{c}": float(w) for c, w in zip(self.classes, self.cw.current)})
        self.history.append(row)
        # straight to the loggers, one call: these are records, not monitored values, and self.log costs ~1 ms each
        scalars = {"stage": float(state.stage), "trainable_params": float(self._n_trainable),
                   "epoch": float(self.current_epoch)}  # the epoch: a resumed CSV log is trimmed by it
        scalars.update({f"{weight_log}/{c}": float(w) for c, w in zip(self.classes, self.cw.current)})
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(scalars, step=self.global_step)
        if self.run_dir is not None and self.trainer.is_global_zero:
            atomic_write_csv(self.run_dir / "history.csv", [clean_row(r) for r in self.history])
            if refined or not (self.run_dir / "class_weights.json").exists():
                atomic_write_json(self.run_dir / "class_weights.json", self.cw.as_dict())
        return row

    # ---- optimizer ----------------------------------------------------------------------------------------------
    def head_lr(self) -> float:
        return self.cfg.optim.lr_head

    def configure_optimizers(self):
        o = self.cfg.optim
        optimizer = build_optimizer(self.groups, o.lr_encoder, self.head_lr(), o.weight_decay)
        total = self._estimated_steps()
        steps_per_epoch = max(1, math.ceil(total / max(1, self.trainer.max_epochs)))
        scheduler = build_scheduler(optimizer, self.plan, self.n_blocks, steps_per_epoch, total,
                                    warmup_steps=o.warmup_steps, min_factor=o.min_lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _estimated_steps(self) -> int:
        """Lightning's ``estimated_stepping_batches``. It builds the train loader before a resumed run's loop state
        is restored, i.e. as if at epoch 0: for a run resumed in stage 2 that would extract stage-1 features with the
        stage-2 encoder (a pass over every image, for nothing). Features and images give the same number of
        batches, so the estimate is made with the feature cache set aside when the resumed epoch does not use it."""
        dm = self.trainer.datamodule
        cache = getattr(dm, "feature_cache", None)
        resumed = self.resumed_epoch
        aside = (cache is not None and resumed is not None and hasattr(self, "uses_feature_cache")
                 and not self.uses_feature_cache(resumed))
        if aside:
            dm.feature_cache = None
        try:
            return int(self.trainer.estimated_stepping_batches)
        finally:
            if aside:
                dm.feature_cache = cache

    # ---- checkpoint extras --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spft"] = {"class_weights": self.cw.state_dict(), "history": self.history,
                              "classes": self.classes, "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("epoch") is not None:  # spft saves at the end of an epoch: training goes on at the next
            self.resumed_epoch = int(checkpoint["epoch"]) + 1
        extra = checkpoint.get("spft", {})
        if "class_weights" in extra:
            self.cw.load_state_dict(extra["class_weights"])
        self.history = list(extra.get("history", []))


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch — Lightning's ``save_last`` only writes it when a monitored checkpoint was
    saved, so a crash after a non-improving epoch would lose every epoch since the best. When ``best.ckpt`` was
    written at this very step, last.ckpt is a byte copy of it (no second serialisation) — a copy, not a hard link,
    so that one damaged file never takes the other with it and ``--resume`` can fall back to the intact one."""

    def __init__(self, best: ModelCheckpoint, dirpath):
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                         enable_version_counter=False)
        self._best = best

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        best = self._best
        if best._last_global_step_saved == trainer.global_step and best._last_checkpoint_saved:
            if trainer.is_global_zero:
                copy_checkpoint(best._last_checkpoint_saved, filepath)
            trainer.strategy.barrier()
            self._last_global_step_saved = trainer.global_step
            self._last_checkpoint_saved = filepath
        else:
            super()._save_checkpoint(trainer, filepath)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through :mod:`spft.experiments.checkpoints`: atomic writes with a recorded digest, and loads that
    verify the digest and never unpickle code (``weights_only=True``) — Lightning's resume reads through here too."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location="cpu" if map_location is None else map_location)


class CrashAfterEpoch(L.Callback):
    """Test hook: ``SPFT_CRASH_AFTER_EPOCH=k`` kills the process (os._exit) once epoch k's checkpoint is written.

    It fires at the start of epoch k+1, i.e. after ``last.ckpt`` for epoch k exists — like a power cut would.
    """

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os._exit(17)


def injected_callbacks() -> list[L.Callback]:
    """Test hook: ``SPFT_TEST_CALLBACK=module:Name`` adds ``Name()`` from an importable module to the trainer (the
    test suite's fault injection lives in the tests, not here)."""
    spec = os.environ.get("SPFT_TEST_CALLBACK")
    if not spec:
        return []
    import importlib

    module, _, name = spec.partition(":")
    return [getattr(importlib.import_module(module), name)()]


def divergence_message(epoch: int, step: int, loss: float, norm: float, ids, run_dir: Path | None) -> str:
    """One line: where training diverged, on which images, and what was kept."""
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    ids = [str(i) for i in (ids or [])]
    shown = ", ".join(ids[:64]) + (f" ... ({len(ids)} in all)" if len(ids) > 64 else "")
    kept = "no checkpoint was written yet"
    if run_dir is not None and (run_dir / "checkpoints" / "last.ckpt").is_file():
        kept = f"{run_dir / 'checkpoints' / 'last.ckpt'} keeps the last good epoch"
    return (f"training diverged at epoch {epoch}, step {step}: non-finite {what} (loss {loss:g}, gradient norm "
            f"{norm:g}) on the batch of image ids [{shown}]; {kept} — lower optim.lr_head / optim.lr_encoder "
            "(or check these images) and start a new run")


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer without its delete-on-start: a resumed run appends to the earlier epochs' rows."""

    def __init__(self, log_dir: str):
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])

    def _check_log_dir_exists(self) -> None:  # Lightning warns and deletes metrics.csv here
        pass

    def keep_epochs_before(self, epoch: int) -> None:
        """Drop the rows of epochs >= ``epoch`` (an epoch an interruption cut short is trained and logged again)."""
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
            reader = csv.DictReader(fh)
            names, rows = list(reader.fieldnames or []), list(reader)

        def before(row: dict) -> bool:
            cell = row.get("epoch") or ""
            return not cell or float(cell) < epoch

        kept = [r for r in rows if before(r)]
        if len(kept) != len(rows):
            atomic_write_csv(self.metrics_file_path, kept, fieldnames=names)


class ResumableCSVLogger(CSVLogger):
    """``logs/metrics.csv`` that survives ``--resume``: Lightning's CSVLogger deletes the file when a run starts in
    an existing log folder; this one keeps the rows of the epochs the checkpoint holds and appends the rest (see
    :meth:`RecipeModule.on_train_start`). Rows are flushed before each epoch's checkpoint (:class:`FlushCSVLog`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    def keep_epochs_before(self, epoch: int) -> None:
        self.experiment.keep_epochs_before(epoch)


class FlushCSVLog(L.Callback):
    """Write the CSV log's buffered rows at each validation end, before the epoch's checkpoints (Lightning runs
    checkpoint callbacks last): a run killed later keeps in metrics.csv every epoch its checkpoint holds."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars on stderr (Lightning writes them to stdout, which holds spft's results and, as its
    last line, the run directory)."""

    @staticmethod
    def _to_stderr(make):
        with contextlib.redirect_stdout(sys.stderr):  # Lightning passes file=sys.stdout, read at call time
            return make()

    def init_sanity_tqdm(self):
        return self._to_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._to_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return self._to_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):
        return self._to_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self):
        return self._to_stderr(super().init_predict_tqdm)


# Lightning warnings a user of spft cannot act on (spft chose the setting, or it is Lightning's own business).
_UNACTIONABLE_WARNINGS = (
    r".*does not have many workers",  # data.num_workers is the user's explicit choice (0 in tests, on laptops)
    r".*overridden `transfer_batch_to_device` in `LightningModule` but have passed in a `LightningDataModule`",
    r"Checkpoint directory .* exists and is not empty",  # every --resume
    r"Experiment logs directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning vs torch versions
    r"Trying to infer the `batch_size` from an ambiguous collection",
)


@contextlib.contextmanager
def quiet_lightning():
    """Ignore :data:`_UNACTIONABLE_WARNINGS` inside the block only (never a process-wide filter)."""
    with warnings.catch_warnings():
        for pattern in _UNACTIONABLE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


class _Stop(BaseException):
    """Raised by :class:`SignalGuard` outside the training loop (not an Exception: nothing may swallow it)."""


class SignalGuard(L.Callback):
    """SIGTERM (SLURM, Kubernetes) and SIGINT (Ctrl+C) during ``spft train``: stop cleanly, keep the last epoch.

    While the training loop runs, a signal goes through Lightning's own SIGTERM path (SIGINT is turned into it):
    the current step finishes, no checkpoint of the partial epoch is written, and ``trainer.fit`` stops — so
    ``last.ckpt`` stays the end of the last complete epoch, from which ``--resume`` equals an uninterrupted run.
    Before and after the loop (setup, feature extraction, test evaluation) the signal stops the run at once (every
    file is written atomically). Either way :func:`fit_and_finish` raises :class:`~spft.errors.RunInterrupted`
    (exit 128 + signal) and ``DONE`` is not written. A second Ctrl+C interrupts immediately.
    """

    def __init__(self):
        self.signum: int | None = None
        self.in_loop = False
        self.trainer = None  # the run's trainer once built (the interruption message names its epoch)
        self._previous: dict = {}

    def __enter__(self) -> SignalGuard:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
            log.info("%s received: stopping (checkpoints/last.ckpt keeps the last complete epoch)",
                     signal.Signals(signum).name)
        if not self.in_loop:
            raise _Stop()
        if signum == signal.SIGINT:
            if not first:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler (which also calls this one) stops the loop

    def on_train_start(self, trainer, pl_module) -> None:
        self.in_loop = True  # Lightning's SIGTERM handler is installed from here on

    def on_train_end(self, trainer, pl_module) -> None:
        self.in_loop = False

    def interrupted(self, run_dir: Path, epoch: int, fresh: bool):
        from spft.errors import RunInterrupted

        signum = self.signum or signal.SIGTERM
        if fresh and not (run_dir / "checkpoints" / "last.ckpt").is_file():
            return RunInterrupted(f"interrupted at epoch {epoch} before the first checkpoint; nothing to resume — "
                                  "start the run again", signum)
        return RunInterrupted(f"interrupted at epoch {epoch}; resume with spft train --resume {run_dir}", signum)


def build_trainer(cfg, run_dir: Path, monitor: str, reload_dataloaders: bool = False,
                  extra_callbacks: tuple = ()) -> L.Trainer:
    """The Lightning Trainer every Lightning task uses: best/last checkpoints and early stopping on ``monitor``
    (an EMA metric when EMA is on), progress bar, CSV + TensorBoard logs, atomic checkpoint files.

    ``reload_dataloaders`` asks the DataModule for its loaders every epoch (the stage-1 feature cache switches
    from feature batches to images at stage 2; the DataModule hands back the same loader objects otherwise)."""
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode="max",
                           save_top_k=1, enable_version_counter=False)
    callbacks = [
        best,  # before last: last.ckpt must carry the best-tracking state this epoch updated
        LastCheckpoint(best, dirpath=run_dir / "checkpoints"),
        EarlyStopping(monitor=monitor, mode="max", patience=cfg.trainer.patience, check_finite=False),
        FreshEpochOrder(),  # each epoch its own sample order, whatever the worker count (resume included)
        FlushCSVLog(),
        *extra_callbacks,
    ]
    if cfg.trainer.progress_bar:
        callbacks.append(StderrProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps // 2)))
    if os.environ.get("SPFT_CRASH_AFTER_EPOCH"):
        callbacks.append(CrashAfterEpoch(int(os.environ["SPFT_CRASH_AFTER_EPOCH"])))
    callbacks += injected_callbacks()
    loggers = [ResumableCSVLogger(run_dir, name="logs", version=""),
               TensorBoardLogger(run_dir, name="logs", version="tb")]
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy,
        use_distributed_sampler=False,  # spft.tasks.lightning_data shards itself: no padded evaluation sets
        precision=resolve_precision(cfg), callbacks=callbacks, logger=loggers,
        plugins=[AtomicCheckpointIO()], log_every_n_steps=cfg.trainer.log_every_n_steps, num_sanity_val_steps=0,
        enable_progress_bar=cfg.trainer.progress_bar, enable_model_summary=False,
        reload_dataloaders_every_n_epochs=1 if reload_dataloaders else 0,
        deterministic=cfg.trainer.deterministic,
        limit_train_batches=cfg.trainer.limit_train_batches, limit_val_batches=cfg.trainer.limit_val_batches,
    )


def load_checkpoint_into(module: RecipeModule, ckpt: Path) -> int | None:
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


def load_best_weights(module: RecipeModule, run_dir: Path) -> int | None:
    """Load ``best.ckpt`` (else, with a warning, ``last.ckpt``) into ``module``; returns the saved epoch."""
    return load_checkpoint_into(module, run_dir / "checkpoints" / "best.ckpt")


def split_counts(table) -> dict:
    """``n_images`` and ``n_groups`` (patients / lesions) per split, for ``data.json``."""
    counts = {s: int(len(table.indices(s))) for s in ("train", "val", "test")}
    return {"n_images": counts, "n_groups": {s: len({table.groups[i] for i in table.indices(s)}) for s in counts}}


def preprocessing_record(prep) -> dict:
    """``data.json``'s ``preprocessing``: size (model input side), resize rule and size, crop, interpolation,
    rescale, mean, std, source (``Preprocessing.record``)."""
    if hasattr(prep, "record"):
        return prep.record()
    return {"size": prep.size, "mean": prep.mean, "std": prep.std, "source": prep.source}

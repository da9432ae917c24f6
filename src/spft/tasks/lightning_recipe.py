"""The SPFT recipe on Lightning, shared by every Lightning task (classification, segmentation).

:class:`RecipeModule` owns what does not depend on the task: the stage plan applied at each epoch (idempotent
freezing), the per-epoch reseed that makes ``--resume`` equal an uninterrupted run, the EMA update after every
optimizer step, the AdamW groups and cosine schedule from :mod:`spft.recipe`, the class/structure weights and
history in every checkpoint, and the per-epoch history row. Tasks add their forward, loss and validation metric.
EMA is torch's ``AveragedModel`` held as a submodule rather than Lightning's ``EMAWeightAveraging``: we need raw
and EMA metrics each epoch, a warm-up, and both weight sets in every checkpoint regardless of
``save_weights_only`` (specs/engines.md C1).
"""

from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from spft.errors import ConfigError, MissingFileError
from spft.experiments.rundir import atomic_write_csv, atomic_write_json, atomic_write_with
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


def gather_by_index(parts: dict[str, list], world: int, per_batch: tuple[str, ...] = ("loss",)) -> dict:
    """Concatenate per-batch lists of tensors from every DDP rank and put the samples back in dataset order.

    ``parts["index"]`` holds each sample's position in the split; every other per-sample key is reordered by it,
    keys in ``per_batch`` (e.g. summed losses) are just concatenated. Evaluation shards carry no padding
    (:class:`~spft.data.dataset.ShardSampler`), so the result is exactly the single-process evaluation set.
    """
    local = {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items() if v or k == "index"}
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, local)
        local = {k: torch.cat([g[k] for g in gathered]) for k in local}
    order = torch.argsort(local["index"].long())
    return {k: (v if k in per_batch else v[order]) for k, v in local.items()}


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal on all DDP ranks exactly when they hold the same weights."""
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_ranks_agree(model: torch.nn.Module, epoch: int) -> None:
    """After each DDP epoch: every rank's weights fingerprint, logged and compared; divergence stops the run
    (a silent divergence would make the saved rank-0 model one of several different models)."""
    mine = weights_fingerprint(model)
    rank = torch.distributed.get_rank()
    prints: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(prints, mine)
    log.info("rank %d weights fingerprint after epoch %d: %s", rank, epoch, mine)
    if len(set(prints)) > 1:
        raise RuntimeError(f"DDP ranks hold different weights after epoch {epoch}: fingerprints {prints}")


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
        self._state = None
        self._n_trainable = 0
        self._epoch_lrs: dict[str, float] = {}
        self._train_loss = (0.0, 0)
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
        # this hook); blocks opened later would silently diverge across ranks (Lightning #20340, ARCHITECTURE
        # rule 3). Remember the registered set; on_after_backward averages the others' gradients itself.
        self._ddp_registered = {id(p) for p in self.parameters() if p.requires_grad}

    def on_after_backward(self) -> None:
        if self.trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return
        late = [p for p in self.model.parameters() if p.requires_grad and p.grad is not None
                and id(p) not in self._ddp_registered]
        if late:
            grads = [p.grad for p in late]
            flat = torch._utils._flatten_dense_tensors(grads)
            torch.distributed.all_reduce(flat)
            flat /= self.trainer.world_size
            for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(synced)

    def on_train_epoch_end(self) -> None:
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
        scalars = {"stage": float(state.stage), "trainable_params": float(self._n_trainable)}
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
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, math.ceil(total / max(1, self.trainer.max_epochs)))
        scheduler = build_scheduler(optimizer, self.plan, self.n_blocks, steps_per_epoch, total,
                                    warmup_steps=o.warmup_steps, min_factor=o.min_lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoint extras --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spft"] = {"class_weights": self.cw.state_dict(), "history": self.history,
                              "classes": self.classes, "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get("spft", {})
        if "class_weights" in extra:
            self.cw.load_state_dict(extra["class_weights"])
        self.history = list(extra.get("history", []))


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch — Lightning's ``save_last`` only writes it when a monitored checkpoint was
    saved, so a crash after a non-improving epoch would lose every epoch since the best. When ``best.ckpt`` was
    written at this very step, last.ckpt becomes a hard link to it (atomic: link to a temp name, ``os.replace``)
    instead of a second serialisation; a later atomic replace of either name leaves the other intact."""

    def __init__(self, best: ModelCheckpoint, dirpath):
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                         enable_version_counter=False)
        self._best = best

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        best = self._best
        if best._last_global_step_saved == trainer.global_step and best._last_checkpoint_saved:
            if trainer.is_global_zero:
                _link_or_copy(best._last_checkpoint_saved, filepath)
            trainer.strategy.barrier()
            self._last_global_step_saved = trainer.global_step
            self._last_checkpoint_saved = filepath
        else:
            super()._save_checkpoint(trainer, filepath)


def _link_or_copy(source: str, target: str) -> None:
    import shutil

    tmp = f"{target}.tmp{os.getpid()}"
    try:
        try:
            os.link(source, tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialise to a temp file beside the target, fsync, ``os.replace``: never a truncated .ckpt."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write_with(path, lambda fh: torch.save(checkpoint, fh))


class CrashAfterEpoch(L.Callback):
    """Test hook: ``SPFT_CRASH_AFTER_EPOCH=k`` kills the process (os._exit) once epoch k's checkpoint is written.

    It fires at the start of epoch k+1, i.e. after ``last.ckpt`` for epoch k exists — like a power cut would.
    """

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os._exit(17)


def resolve_precision(cfg) -> str:
    """``trainer.precision``, else bf16-mixed on a GPU that supports it (16-mixed otherwise), else fp32."""
    if cfg.trainer.precision:
        return cfg.trainer.precision
    if trains_on_gpu(cfg):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_trainer(cfg, run_dir: Path, monitor: str, reload_dataloaders: bool = False) -> L.Trainer:
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
    ]
    if cfg.trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps // 2)))
    if os.environ.get("SPFT_CRASH_AFTER_EPOCH"):
        callbacks.append(CrashAfterEpoch(int(os.environ["SPFT_CRASH_AFTER_EPOCH"])))
    loggers = [CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="logs", version="tb")]
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
    """Load raw and EMA weights from ``ckpt`` into ``module``; the labels must be the run's. Returns the epoch."""
    if not ckpt.is_file():
        raise MissingFileError(f"{ckpt} not found (has the run finished its first epoch?)")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved = state.get("spft", {}).get("classes")
    if saved is not None and list(saved) != list(module.classes):
        raise ConfigError(f"the data's classes/structures {module.classes} differ from the run's {list(saved)}")
    module.load_state_dict(state["state_dict"])
    return state.get("epoch")


def load_best_weights(module: RecipeModule, run_dir: Path) -> int | None:
    """Load ``best.ckpt`` (else ``last.ckpt``) into ``module``; returns the saved epoch."""
    best = run_dir / "checkpoints" / "best.ckpt"
    return load_checkpoint_into(module, best if best.is_file() else run_dir / "checkpoints" / "last.ckpt")


def trains_on_gpu(cfg) -> bool:
    """Whether the trainer will run on a CUDA GPU (decides pinned memory and precision defaults)."""
    return cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def eval_device(cfg) -> str:
    return "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu"


def fit_and_finish(cfg, run_dir: Path, ckpt_path: str | None, *, build_run, describe_data, test,
                   monitor: str) -> Path:
    """Train one Lightning task to its end and finish it: the flow every Lightning task shares.

    ``build_run(cfg, run_dir) -> (table, prep, module, datamodule)``; ``describe_data(table, prep) -> dict`` (the
    run's ``data.json``); ``test(module, datamodule, device, run_dir, best_epoch)`` scores the best weights on the
    test split and writes the metrics. A new run (``ckpt_path`` None) first records config.yaml, env.json (with
    the speed options in effect) and data.json; under DDP only rank 0 writes and tests, the others return after
    fitting. ``DONE`` is written last.
    """
    from spft.config import dump_yaml
    from spft.experiments.rundir import atomic_write_text, environment, mark_done

    table, prep, module, dm = build_run(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir, monitor, reload_dataloaders=getattr(dm, "feature_cache", None) is not None)
    if ckpt_path is None and trainer.global_rank == 0:
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        atomic_write_json(run_dir / "env.json", environment(str(trainer.strategy.root_device), speed=module.speed))
        atomic_write_json(run_dir / "data.json", describe_data(table, prep))
    log.info("run directory: %s", run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    if trainer.global_rank != 0:
        return run_dir
    best_epoch = load_best_weights(module, run_dir)
    test(module, dm, trainer.strategy.root_device, run_dir, best_epoch)
    mark_done(run_dir)
    return run_dir


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


def start_run(cfg, fit_and_finish) -> Path:
    """A new run: seed, create the run directory, ``fit_and_finish(cfg, run_dir, None)``."""
    from spft.experiments.rundir import create_run_dir

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return fit_and_finish(cfg, create_run_dir(cfg), None)


def resume_run(run_dir: str | Path, fit_and_finish) -> Path:
    """Continue a killed run from ``last.ckpt`` (or start it again if no epoch finished); a finished run is left."""
    from spft.experiments.rundir import config_to_resume

    run_dir = Path(run_dir)
    cfg = config_to_resume(run_dir)
    if cfg is None:
        return run_dir
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return fit_and_finish(cfg, run_dir, resume_checkpoint(run_dir))


def resume_checkpoint(run_dir: Path) -> str | None:
    """``last.ckpt`` to resume from, or None (with a warning) when the run died before its first epoch ended."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return str(last)
    log.warning("%s has no last.ckpt (killed before the first epoch ended): starting it again", run_dir)
    return None

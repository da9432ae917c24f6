"""The SPFT recipe's concerns on Lightning, one callback each (the shape of Lightning's ``BaseFinetuning`` /
``WeightAveraging``: one concern, its hooks, its own state), added by
:func:`spft.tasks.lightning.trainer.build_trainer` through :func:`recipe_callbacks`:

* :class:`ProgressiveUnfreezing` — the stage plan applied at each epoch start, and the gradient average of blocks
  opened after DDP wrapped the model;
* :class:`EpochReseed` — python, numpy and torch reseeded from (seed, epoch) at each epoch's first batch;
* :class:`EmaUpdate` — the EMA update after every optimizer step;
* :class:`ClassWeightRefinement` — the stage-2 refinement of the class (structure) weights from the validation
  metric, and ``class_weights.json``;
* :class:`HistoryWriter` — one ``history.csv`` row per epoch (and the same scalars to the loggers);
* :class:`DivergenceGuard` — a non-finite loss or gradient norm stops the run at its step; DDP ranks must agree.

What the task module and the checkpoint hold stays on :class:`~spft.tasks.lightning.recipe.RecipeModule`, so
checkpoints keep their format: the EMA weights are its ``ema`` submodule (``ema.*`` keys of ``state_dict``), the
class weights (``module.cw``, which the loss reads) and the rows (``module.history``) go to ``checkpoint["spft"]``.
A task reports each validation with :meth:`RecipeModule.validation_scored`, which hands the
:class:`EpochScores` to every :class:`RecipeCallback` in order (refinement, then the history row).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch

from spft.atomic import atomic_write_csv, atomic_write_json
from spft.distributed import average_gradients, check_ranks_agree
from spft.recipe import StagePlan, apply_trainable, describe, stage_at, stage_plan, trainable_at

log = logging.getLogger(__name__)


@dataclass
class EpochScores:
    """What a task's validation gives the recipe at the end of an epoch."""

    per_class: list[float | None]  # the monitored per-class (per-structure) metric, higher is better: refinement
    val_loss: float
    metrics: dict = field(default_factory=dict)  # extra history.csv columns (val_auc_raw, val_dice_heart, ...)
    weight_log: str = "class_weight"  # logger prefix of the weights (class_weight / structure_weight)


class RecipeCallback(L.Callback):
    """A recipe concern that also hears of each validation's :class:`EpochScores`."""

    def on_validation_scores(self, trainer, pl_module, scores: EpochScores) -> None:
        """Called by :meth:`RecipeModule.validation_scored` (not during the sanity check)."""


class ProgressiveUnfreezing(L.Callback):
    """At each epoch start, the trainable state ``trainable_at(plan, epoch)`` applied to ``pl_module.groups``
    (idempotent, so a resumed run needs no state) and logged when it changes.

    DDP registers for gradient all-reduce only the parameters that train when it wraps the model (before
    ``on_fit_start``); blocks opened later would silently diverge across ranks (Lightning #20340,
    docs/decisions.md rule 3). The registered set is remembered at fit start and ``on_after_backward`` averages the
    other trainable parameters' gradients itself."""

    def __init__(self, plan: StagePlan):
        self.plan = plan
        self.state = None  # the TrainableState in effect
        self.n_trainable = 0
        self._ddp_registered: set[int] = set()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._ddp_registered = {id(p) for p in pl_module.parameters() if p.requires_grad}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch, n_blocks = trainer.current_epoch, pl_module.n_blocks
        state = trainable_at(self.plan, epoch, n_blocks)
        self.n_trainable = apply_trainable(pl_module.groups, state)
        if state != self.state:
            text = describe(state, n_blocks).replace("head", pl_module.head_name)
            log.info("epoch %d: %s (%s trainable parameters)", epoch, text, f"{self.n_trainable:,}")
        self.state = state

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return
        late = [p for p in pl_module.model.parameters() if p.requires_grad and p.grad is not None
                and id(p) not in self._ddp_registered]
        average_gradients(late, trainer.world_size)


def seed_everything_for_epoch(seed: int, epoch: int) -> None:
    """Reseed python, numpy and torch from (seed, epoch): training randomness becomes a function of the epoch."""
    s = (seed * 1_000_003 + epoch) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def rng_state() -> dict:
    """The generators' state, recorded in checkpoints for provenance (resume does not need it: every epoch reseeds
    from (seed, epoch)). Plain types only: Lightning loads checkpoints with ``weights_only=True``."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": random.getstate()}


class EpochReseed(L.Callback):
    """Reseed from (seed, epoch) at each epoch's first batch — not at epoch start: on resume Lightning creates the
    DataLoader iterator (which draws from the global RNG) at a different moment than in an uninterrupted run. This
    is what makes ``--resume`` equal an uninterrupted run (docs/decisions.md rule 2)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            seed_everything_for_epoch(self.seed, trainer.current_epoch)


class EmaUpdate(L.Callback):
    """The EMA update after every optimizer step (``pl_module.ema``, when EMA is on). The averaged weights are the
    module's ``ema`` submodule rather than this callback's state: evaluation and export read them from the module,
    and every checkpoint keeps them under ``ema.*`` whatever ``save_weights_only`` says
    (docs/decisions.md#lightning)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if pl_module.ema is not None:
            pl_module.ema.update_parameters(pl_module.model)


class ClassWeightRefinement(RecipeCallback):
    """After each stage-2 validation, ``pl_module.cw`` refined from the monitored per-class metric (when
    ``recipe.class_weights.refine`` and class weights are on); ``class_weights.json`` written when they changed or
    when the run has none yet (rank 0, ``run_dir`` set)."""

    def __init__(self, plan: StagePlan, refine: bool, run_dir: str | Path | None):
        self.plan = plan
        self.refine = refine
        self.run_dir = Path(run_dir) if run_dir else None

    def on_validation_scores(self, trainer, pl_module, scores: EpochScores) -> None:
        epoch = trainer.current_epoch
        refined = self.refine and pl_module.cw.enabled and stage_at(self.plan, epoch) == 2
        if refined:
            pl_module.cw.refine(epoch, scores.per_class)
        if self.run_dir is not None and trainer.is_global_zero:
            path = self.run_dir / "class_weights.json"
            if refined or not path.exists():
                atomic_write_json(path, pl_module.cw.as_dict())


def clean_row(row: dict) -> dict:
    """None and NaN as empty CSV cells."""
    return {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}


class HistoryWriter(RecipeCallback):
    """One row per epoch appended to ``pl_module.history`` and written to ``history.csv`` (rank 0, ``run_dir``
    set): epoch, stage, open blocks, trainable parameters, step, train and validation loss, the task's metrics, the
    learning rate of each recipe part at the epoch's first step, and the current weights (``w_<class>``). The
    stage, trainable parameters, epoch and weights also go to the loggers, in one call."""

    def __init__(self, unfreezing: ProgressiveUnfreezing, run_dir: str | Path | None):
        self.unfreezing = unfreezing
        self.run_dir = Path(run_dir) if run_dir else None
        self.epoch_lrs: dict[str, float] = {}  # the learning rates of this epoch's first step, one per recipe part

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.epoch_lrs = {}
            for group in trainer.optimizers[0].param_groups:
                self.epoch_lrs.setdefault(f"lr_{group['part']}", group["lr"])

    def on_validation_scores(self, trainer, pl_module, scores: EpochScores) -> None:
        state, n_trainable = self.unfreezing.state, self.unfreezing.n_trainable
        epoch, weights = trainer.current_epoch, [float(w) for w in pl_module.cw.current]
        row = {"epoch": epoch, "stage": state.stage, "open_blocks": len(state.open_blocks),
               "trainable_params": n_trainable, "step": trainer.global_step,
               "train_loss": pl_module.epoch_train_loss(), "val_loss": scores.val_loss, **scores.metrics}
        row.update(self.epoch_lrs)
        row.update({f"w_{c}": w for c, w in zip(pl_module.classes, weights)})
        pl_module.history.append(row)
        if not trainer.is_global_zero:
            return
        # straight to the loggers, one call: these are records, not monitored values, and self.log costs ~1 ms each
        scalars = {"stage": float(state.stage), "trainable_params": float(n_trainable),
                   "epoch": float(epoch)}  # the epoch: a resumed CSV log is trimmed by it
        scalars.update({f"{scores.weight_log}/{c}": w for c, w in zip(pl_module.classes, weights)})
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        if self.run_dir is not None:
            atomic_write_csv(self.run_dir / "history.csv", [clean_row(r) for r in pl_module.history])


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


class DivergenceGuard(L.Callback):
    """A non-finite loss or gradient norm stops the run (:class:`~spft.errors.TrainingDiverged`) naming the epoch,
    the step and the batch's image ids; after each DDP epoch the ranks' weights must agree.

    Each step's loss and gradient norm are recorded and checked one step late, which costs no GPU synchronisation
    per step (a non-blocking copy and an event); the weights a bad step produced are never saved: the check runs
    again before every validation (hence every checkpoint), at each epoch end and at the end of training."""

    def __init__(self, run_dir: str | Path | None):
        self.run_dir = Path(run_dir) if run_dir else None
        self._step_ids: list | None = None  # the image ids of the batch being trained
        self._step_loss: torch.Tensor | None = None
        self._pending = None  # (values [loss, grad norm], epoch, step, ids) of the last step, read lazily
        self._host: torch.Tensor | None = None
        self._ready = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._step_ids = batch.get("id") if isinstance(batch, dict) else None
        self._step_loss = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._step_loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.check()
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # 16-bit mixed precision: the grad scaler itself skips steps with overflowing (inf) gradients
        if grads and not str(trainer.precision).startswith("16"):
            norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        else:
            norm = torch.zeros((), device=pl_module.device)
        loss = self._step_loss if self._step_loss is not None else torch.zeros((), device=norm.device)
        values = torch.stack([loss.float().reshape(()), norm.float().reshape(()).to(loss.device)])
        if values.is_cuda:
            if self._host is None:
                self._host = torch.empty(2, pin_memory=True)
            self._host.copy_(values, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
            values = self._host
        self._pending = (values, trainer.current_epoch, trainer.global_step, self._step_ids)

    def check(self) -> None:
        """Raise :class:`~spft.errors.TrainingDiverged` if the last recorded step had a non-finite loss or gradient
        norm: epoch, step and the batch's image ids in one line; no checkpoint of the diverged state is written."""
        if self._pending is None:
            return
        values, epoch, step, ids = self._pending
        self._pending = None
        if self._ready is not None:
            self._ready.synchronize()
            self._ready = None
        loss, norm = (float(v) for v in values.tolist())
        if math.isfinite(loss) and math.isfinite(norm):
            return
        from spft.errors import TrainingDiverged

        raise TrainingDiverged(divergence_message(epoch, step, loss, norm, ids, self.run_dir))

    def on_validation_start(self, trainer, pl_module) -> None:
        self.check()  # before any validation metric, history row or checkpoint of this epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check()
        if trainer.world_size > 1:
            check_ranks_agree(pl_module.model, trainer.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        self.check()


def recipe_callbacks(cfg, run_dir: str | Path | None) -> list[L.Callback]:
    """The recipe's callbacks for a Lightning run of ``cfg``, in the order their hooks must run."""
    plan = stage_plan(cfg)
    unfreezing = ProgressiveUnfreezing(plan)
    return [unfreezing, EpochReseed(cfg.seed), DivergenceGuard(run_dir), EmaUpdate(),
            ClassWeightRefinement(plan, cfg.recipe.class_weights.refine, run_dir), HistoryWriter(unfreezing, run_dir)]

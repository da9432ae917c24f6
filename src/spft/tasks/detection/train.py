"""Training entry point for detection: config -> prepared Ultralytics dataset -> SPFT trainer -> test metrics -> DONE.

``train(cfg)`` starts a run (``spft train configs/phantom_detect_yolov8.yaml``); ``resume(run_dir)`` continues a
killed one from ``checkpoints/last.pt`` (``spft train --resume RUN_DIR``). Both go through the shared run lifecycle
(:mod:`spft.tasks.lifecycle`) with :class:`DetectionEngine` as the adapter, and finish by scoring the best EMA
weights on the test split, drawing predicted vs ground-truth boxes and marking the run DONE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import ultralytics  # the `detect` extra: the task registry turns its absence into an install hint
import yaml

from spft.atomic import atomic_write_json
from spft.config import SpftConfig
from spft.data.loading import resolve_workers
from spft.devices import eval_device, ultralytics_amp, ultralytics_device
from spft.errors import MissingFileError
from spft.experiments.checkpoints import newest_intact, record_digest, recorded_epoch
from spft.experiments.rundir import environment
from spft.tasks.detection import restore_pil_open
from spft.tasks.detection.checks import check_detection_config
from spft.tasks.detection.dataset import dataset_yaml_for, randomly_initialised, resolve_model
from spft.tasks.detection.evaluate import evaluate_weights, is_rtdetr
from spft.tasks.lifecycle import Unguarded, resume_run, start_run

log = logging.getLogger(__name__)
restore_pil_open()


def trainer_overrides(cfg: SpftConfig, run_dir: Path, data_yaml: Path) -> dict:
    """Ultralytics train arguments; everything the recipe decides is left to the SPFT trainer's overrides."""
    device = ultralytics_device(eval_device(cfg))
    det = cfg.detection
    return {
        "model": resolve_model(cfg.model.name), "data": str(data_yaml), "epochs": cfg.trainer.max_epochs,
        "batch": cfg.trainer.batch_size, "imgsz": det.imgsz, "device": device, "workers": resolve_workers(cfg.data),
        "seed": cfg.seed, "deterministic": cfg.trainer.deterministic, "patience": cfg.trainer.patience,
        "optimizer": "AdamW", "lr0": cfg.optim.lr_head, "weight_decay": cfg.optim.weight_decay,
        "nbs": cfg.trainer.batch_size,  # one optimizer step per batch, as in the recipe
        "warmup_epochs": 0.0,  # the recipe's warm-up (optim.warmup_steps) is in the scheduler
        "cos_lr": True, "mosaic": det.mosaic, "fliplr": det.fliplr, "conf": det.conf, "amp": ultralytics_amp(device),
        "plots": False, "val": True, "verbose": False, "exist_ok": True,
        # True keeps the weights of a .pt model.name (False would discard them); a path loads detection.weights
        "pretrained": resolve_model(det.weights) if det.weights else True,
        "save_dir": str(run_dir / "ultralytics"),
    }


def _trainer_class(cfg: SpftConfig):
    from spft.tasks.detection.trainer import SpftRtdetrTrainer, SpftYoloTrainer

    return SpftRtdetrTrainer if is_rtdetr(cfg) else SpftYoloTrainer


def _adaptations(cfg: SpftConfig, trainer_cls, amp) -> dict:
    """What the run used where Ultralytics could not follow the recipe exactly (written to ultralytics.json)."""

    ema = cfg.recipe.ema
    return {
        "ultralytics": ultralytics.__version__, "trainer": trainer_cls.__name__, "licence": "AGPL-3.0",
        "ema": (f"Ultralytics ModelEMA (always on, updated after every optimizer step) with its decay replaced by "
                f"spft.recipe.ema_decay_at(updates, decay={ema.decay}, warmup={ema.warmup})"
                + ("" if ema.enabled else "; recipe.ema.enabled=false sets the decay to 0, i.e. EMA = raw weights")),
        "checkpoints": "last.pt / best.pt hold the EMA weights only (Ultralytics saves 'model': None); a resumed "
                       "run continues from those EMA weights, not from the raw ones",
        "model_selection": "best.pt = highest Ultralytics fitness = mAP50-95 on val; early stopping on the same "
                           f"with patience {cfg.trainer.patience} epochs",
        "schedule": "recipe cosine per optimizer group (backbone modules open on the stage plan), evaluated per "
                    "epoch because Ultralytics steps its scheduler once per epoch; optim.warmup_steps is rounded up "
                    "to whole epochs",
        "optimizer": "AdamW over the recipe's groups; Ultralytics clips gradients at max-norm 10; nbs = batch so "
                     "every batch is one optimizer step",
        "class_weights": ("model.class_weights, read by v8DetectionLoss" if not is_rtdetr(cfg) else
                          "spft.tasks.detection.losses.WeightedRTDETRLoss (RT-DETR's loss has no class weights)"),
        "augmentation": f"Ultralytics defaults except mosaic={cfg.detection.mosaic}, fliplr={cfg.detection.fliplr}",
        "frozen_batchnorm": "eval mode in frozen backbone modules (Ultralytics' freeze rule)" + (
            "; train mode in this run: the model has random weights (model.name is a model YAML, no "
            "detection.weights), and never-estimated statistics in eval mode make each batch norm the identity, "
            "so the signal vanishes through the frozen modules" if randomly_initialised(cfg) else ""),
        "amp": amp,
        "devices": "one device: Ultralytics' multi-GPU DDP relaunches a stock trainer from its arguments, which "
                   "would drop the SPFT subclass, so trainer.devices is not used for detection",
    }


def _best_epoch(run_dir: Path) -> int | None:
    """The epoch best.pt comes from: the last one with the highest val mAP50-95 (Ultralytics' fitness)."""
    from spft.csvsafe import read_rows

    history = run_dir / "history.csv"
    if not history.is_file():
        return None
    with open(history, newline="") as fh:
        rows = [r for r in read_rows(fh) if r.get("val_map50_95") not in (None, "")]
    if not rows:
        return None
    best = max(float(r["val_map50_95"]) for r in rows)
    return max(int(r["epoch"]) for r in rows if float(r["val_map50_95"]) == best)


@dataclass(frozen=True)
class DetectionEngine(Unguarded):
    """Detection's steps in the shared run lifecycle (:mod:`spft.tasks.lifecycle`): the adapter that puts the
    Ultralytics trainer between the lifecycle's record files and its ``DONE``. Ultralytics seeds itself (``seed``)
    and handles no signals, so seeding and guarding are the defaults (none)."""

    checkpoint_names: tuple[str, str] = ("best.pt", "last.pt")
    loadable: bool = False  # Ultralytics unpickles .pt files: spft checks their recorded digests, never loads them

    def setup(self, cfg: SpftConfig, run_dir: Path, resume_from: Path | None, guard) -> DetectionAttempt:
        check_detection_config(cfg)
        data_yaml = dataset_yaml_for(cfg)
        return DetectionAttempt(cfg, run_dir, resume_from, data_yaml, trainer_overrides(cfg, run_dir, data_yaml))


@dataclass
class DetectionAttempt:
    cfg: SpftConfig
    run_dir: Path
    resume_from: Path | None
    data_yaml: Path
    overrides: dict
    primary: bool = True  # one process: Ultralytics' own DDP would drop the SPFT trainer subclass
    epoch_listeners: list = field(default_factory=list)  # called after each epoch (spft.tasks.lifecycle)

    def records(self) -> dict:
        def env() -> dict:
            return {**environment(self.overrides["device"]), "ultralytics": ultralytics.__version__}

        return {"env.json": env,
                "ultralytics.json": lambda: _adaptations(self.cfg, _trainer_class(self.cfg), self.overrides["amp"]),
                "data.json": lambda: {"dataset_yaml": str(self.data_yaml),
                                      **yaml.safe_load(self.data_yaml.read_text())}}

    def fit(self) -> None:
        overrides = dict(self.overrides)
        if self.resume_from is not None:
            # the epoch spft recorded when the file was written: spft itself never unpickles an Ultralytics .pt
            epoch = recorded_epoch(self.resume_from)
            if epoch is not None and epoch + 1 >= self.cfg.trainer.max_epochs:  # training over: finish only
                return
            overrides["resume"] = str(self.resume_from)
        trainer = _trainer_class(self.cfg)(overrides=overrides, spft_cfg=self.cfg, run_dir=self.run_dir)
        for listener in self.epoch_listeners:  # after save_metrics (history.csv) and save_model of each epoch
            trainer.add_callback("on_fit_epoch_end", lambda _trainer, listener=listener: listener())
        trainer.train()
        for final in (self.run_dir / "checkpoints" / "last.pt", self.run_dir / "checkpoints" / "best.pt"):
            if final.is_file():  # Ultralytics rewrites both when training ends (optimizer stripped): record them again
                record_digest(final)

    def load_best(self) -> Path:
        ckpt = self.run_dir / "checkpoints"
        weights = newest_intact(ckpt, ("best.pt", "last.pt"), loadable=False)
        if weights is None:
            raise MissingFileError(f"{ckpt} holds no best.pt or last.pt (did the first epoch finish?)")
        return weights

    def test(self, weights: Path) -> None:
        cfg, run_dir = self.cfg, self.run_dir
        ev = evaluate_weights(weights, cfg, self.data_yaml, "test", run_dir / "ultralytics" / "test")
        metrics = ev.metrics()
        metrics["best_epoch"] = _best_epoch(run_dir)
        metrics["checkpoint"] = weights.name
        atomic_write_json(run_dir / "metrics.json", metrics)
        if cfg.detection.figures > 0:
            from spft.tasks.detection.figures import draw_predictions

            draw_predictions(weights, cfg, self.data_yaml, run_dir / "figures", cfg.detection.figures)


ENGINE = DetectionEngine()


def train(cfg: SpftConfig) -> Path:
    """Run the two-stage SPFT recipe on Ultralytics for ``cfg`` and return the run directory."""
    return start_run(cfg, ENGINE)


def resume(run_dir: str | Path) -> Path:
    """Continue a killed detection run from ``checkpoints/last.pt`` (or start it again if no epoch finished)."""
    return resume_run(run_dir, ENGINE)

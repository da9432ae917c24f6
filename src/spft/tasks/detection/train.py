"""Training entry point for detection: config -> prepared Ultralytics dataset -> SPFT trainer -> test metrics -> DONE.

``train(cfg)`` starts a run (``spft train configs/phantom_detect_yolov8.yaml``); ``resume(run_dir)`` continues a
killed one from ``checkpoints/last.pt`` (``spft train --resume RUN_DIR``). Both finish by scoring the best EMA
weights on the test split, drawing predicted vs ground-truth boxes and marking the run DONE.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import ultralytics  # the `detect` extra: the task registry turns its absence into an install hint
import yaml

from spft.config import SpftConfig, dump_yaml
from spft.data.loading import resolve_workers
from spft.errors import ConfigError, MissingFileError
from spft.experiments.checkpoints import newest_intact, record_digest, recorded_epoch
from spft.experiments.rundir import (
    atomic_write_json,
    atomic_write_text,
    config_to_resume,
    create_run_dir,
    environment,
    mark_done,
)
from spft.tasks.detection import restore_pil_open
from spft.tasks.detection.checks import check_detection_config
from spft.tasks.detection.evaluate import device_of, evaluate_weights, is_rtdetr

log = logging.getLogger(__name__)
restore_pil_open()

MODELS_DIR = Path(__file__).resolve().parent / "models"
DETECTION_DATASETS = ("phantom_detect", "vindr_cxr", "tbx11k")


def dataset_yaml_for(cfg: SpftConfig) -> Path:
    """The prepared dataset's ``dataset.yaml`` (phantoms are generated on demand; real data needs ``spft prepare``)."""
    name = cfg.data.name
    if name == "phantom_detect":
        from spft.data.yolo_layout import build_phantom_detection

        return build_phantom_detection(cfg.data.phantom, cfg.data.root)
    if name not in DETECTION_DATASETS:
        raise ConfigError(f"data.name: detection needs one of {', '.join(DETECTION_DATASETS)}, got {name!r}")
    from spft.data.vindr_cxr import default_dataset_dir

    folder = Path(cfg.detection.dataset_dir) if cfg.detection.dataset_dir else default_dataset_dir(cfg)
    target = folder / "dataset.yaml"
    if not target.is_file():
        command = "vindr-cxr" if name == "vindr_cxr" else "tbx11k"
        raise MissingFileError(f"{target} not found: run `spft prepare {command} CONFIG` first "
                                "(or set detection.dataset_dir to a prepared copy)")
    return target


def resolve_model(name: str) -> str:
    """``model.name`` as given (a path, ``yolov8n.yaml``, ``yolov8s.pt``) or a YAML shipped with spft."""
    if Path(name).exists():
        return str(Path(name).resolve())
    shipped = MODELS_DIR / name
    return str(shipped) if shipped.is_file() else name


def _amp(device: str):
    if device == "cpu":
        return False
    return "bf16" if torch.cuda.is_bf16_supported() else True


def trainer_overrides(cfg: SpftConfig, run_dir: Path, data_yaml: Path) -> dict:
    """Ultralytics train arguments; everything the recipe decides is left to the SPFT trainer's overrides."""
    device = device_of(cfg)
    det = cfg.detection
    return {
        "model": resolve_model(cfg.model.name), "data": str(data_yaml), "epochs": cfg.trainer.max_epochs,
        "batch": cfg.trainer.batch_size, "imgsz": det.imgsz, "device": device, "workers": resolve_workers(cfg.data),
        "seed": cfg.seed, "deterministic": cfg.trainer.deterministic, "patience": cfg.trainer.patience,
        "optimizer": "AdamW", "lr0": cfg.optim.lr_head, "weight_decay": cfg.optim.weight_decay,
        "nbs": cfg.trainer.batch_size,  # one optimizer step per batch, as in the recipe
        "warmup_epochs": 0.0,  # the recipe's warm-up (optim.warmup_steps) is in the scheduler
        "cos_lr": True, "mosaic": det.mosaic, "fliplr": det.fliplr, "conf": det.conf, "amp": _amp(device),
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
        "amp": amp,
        "devices": "one device: Ultralytics' multi-GPU DDP relaunches a stock trainer from its arguments, which "
                   "would drop the SPFT subclass, so trainer.devices is not used for detection",
    }


def _write_run_files(cfg: SpftConfig, run_dir: Path, data_yaml: Path, overrides: dict) -> None:

    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    env = environment(overrides["device"])
    env["ultralytics"] = ultralytics.__version__
    atomic_write_json(run_dir / "env.json", env)
    atomic_write_json(run_dir / "ultralytics.json", _adaptations(cfg, _trainer_class(cfg), overrides["amp"]))
    atomic_write_json(run_dir / "data.json", {"dataset_yaml": str(data_yaml), **yaml.safe_load(data_yaml.read_text())})


def _best_epoch(run_dir: Path) -> int | None:
    """The epoch best.pt comes from: the last one with the highest val mAP50-95 (Ultralytics' fitness)."""
    import csv

    history = run_dir / "history.csv"
    if not history.is_file():
        return None
    with open(history, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_map50_95") not in (None, "")]
    if not rows:
        return None
    best = max(float(r["val_map50_95"]) for r in rows)
    return max(int(r["epoch"]) for r in rows if float(r["val_map50_95"]) == best)


def _finish(cfg: SpftConfig, run_dir: Path, data_yaml: Path) -> Path:
    ckpt = run_dir / "checkpoints"
    weights = newest_intact(ckpt, ("best.pt", "last.pt"), loadable=False)
    if weights is None:
        raise MissingFileError(f"{ckpt} holds no best.pt or last.pt (did the first epoch finish?)")
    ev = evaluate_weights(weights, cfg, data_yaml, "test", run_dir / "ultralytics" / "test")
    metrics = ev.metrics()
    metrics["best_epoch"] = _best_epoch(run_dir)
    metrics["checkpoint"] = weights.name
    atomic_write_json(run_dir / "metrics.json", metrics)
    if cfg.detection.figures > 0:
        from spft.tasks.detection.figures import draw_predictions

        draw_predictions(weights, cfg, data_yaml, run_dir / "figures", cfg.detection.figures)
    mark_done(run_dir)
    return run_dir


def _run(cfg: SpftConfig, run_dir: Path, resume_from: Path | None) -> Path:
    check_detection_config(cfg)
    data_yaml = dataset_yaml_for(cfg)
    overrides = trainer_overrides(cfg, run_dir, data_yaml)
    if resume_from is None:
        _write_run_files(cfg, run_dir, data_yaml, overrides)
    else:
        # the epoch spft recorded when the file was written: spft itself never unpickles an Ultralytics .pt
        epoch = recorded_epoch(resume_from)
        if epoch is not None and epoch + 1 >= cfg.trainer.max_epochs:  # training over
            return _finish(cfg, run_dir, data_yaml)
        overrides["resume"] = str(resume_from)
    log.info("run directory: %s", run_dir)
    trainer = _trainer_class(cfg)(overrides=overrides, spft_cfg=cfg, run_dir=run_dir)
    trainer.train()
    for final in (run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"):
        if final.is_file():  # Ultralytics rewrites both when training ends (optimizer stripped): record them again
            record_digest(final)
    return _finish(cfg, run_dir, data_yaml)


def train(cfg: SpftConfig) -> Path:
    """Run the two-stage SPFT recipe on Ultralytics for ``cfg`` and return the run directory."""
    run_dir = create_run_dir(cfg)
    return _run(cfg, run_dir, None)


def resume(run_dir: str | Path) -> Path:
    """Continue a killed detection run from ``checkpoints/last.pt`` (or start it again if no epoch finished)."""
    run_dir = Path(run_dir)
    cfg = config_to_resume(run_dir)
    if cfg is None:
        return run_dir
    # last.pt, or best.pt (warned) when last.pt does not match the digest recorded when it was written
    last = newest_intact(run_dir / "checkpoints", ("last.pt", "best.pt"), loadable=False)
    if last is None:
        log.warning("%s has no last.pt (killed before the first epoch ended): starting it again", run_dir)
    return _run(cfg, run_dir, last)

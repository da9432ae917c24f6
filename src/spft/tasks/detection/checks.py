"""Checks of the ``detection`` config keys that types alone cannot express (no Ultralytics import, so
``spft prepare`` can use them too)."""

from __future__ import annotations

from spft.config import SpftConfig


def check_detection_config(cfg: SpftConfig) -> None:
    """Checks of the ``detection`` keys that types cannot express; the error names the key."""
    from spft.config import ConfigError

    det = cfg.detection
    if not cfg.model.name:
        raise ConfigError("'model.name': detection needs an Ultralytics model YAML or weights (e.g. yolov8n.yaml)")
    checks = [("detection.imgsz", det.imgsz >= 32, "an integer >= 32"),
              ("detection.long_side", det.long_side >= 32, "an integer >= 32"),
              ("detection.iou_thr", 0.0 < det.iou_thr < 1.0, "a value in (0, 1)"),
              ("detection.no_finding_share", 0.0 <= det.no_finding_share <= 1.0, "a value in [0, 1]"),
              ("detection.backbone_lr_ratio", det.backbone_lr_ratio is None or det.backbone_lr_ratio >= 0,
               "null or >= 0"),
              ("detection.figures", det.figures >= 0, "an integer >= 0")]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"'{key}': expected {expected}, got {eval_key(cfg, key)!r}")
    for key in ("trainer.limit_train_batches", "trainer.limit_val_batches"):
        if eval_key(cfg, key) is not None:
            raise ConfigError(f"'{key}': not available for detection (Ultralytics trains and validates on every "
                              "batch); leave it null and use a smaller dataset for a quick run")


def eval_key(cfg: SpftConfig, dotted: str):
    """The value of a dotted config key (for error messages)."""
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node

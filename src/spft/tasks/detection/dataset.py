"""Where a detection run's data and model come from: the prepared Ultralytics ``dataset.yaml`` (phantoms generated
on demand) and ``model.name`` resolved against the model YAMLs shipped with spft. No Ultralytics import here."""

from __future__ import annotations

from pathlib import Path

from spft.config import SpftConfig
from spft.errors import ConfigError, MissingFileError

MODELS_DIR = Path(__file__).resolve().parent / "models"
OWN_DATASETS = ("yolo", "coco", "csv")  # your own data: spft.data.own_detection
DETECTION_DATASETS = ("phantom_detect", "vindr_cxr", "tbx11k", *OWN_DATASETS)


def dataset_yaml_for(cfg: SpftConfig, training: bool = True) -> Path:
    """The prepared dataset's ``dataset.yaml`` (phantoms are generated on demand; your own data — yolo, coco, csv —
    is listed or converted on demand; VinDr-CXR and TBX-11K need ``spft prepare``). ``training=False`` (evaluation)
    accepts data without train or val split (a test JSON or CSV alone)."""
    name = cfg.data.name
    if name == "phantom_detect":
        from spft.data.yolo_layout import build_phantom_detection

        return build_phantom_detection(cfg.data.phantom, cfg.data.root)
    if name in OWN_DATASETS:
        from spft.data.own_detection import prepare_own

        return prepare_own(cfg, training=training)
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


def randomly_initialised(cfg: SpftConfig) -> bool:
    """True when the detector starts from random weights: ``model.name`` is a model YAML and no
    ``detection.weights`` are loaded (Ultralytics builds a ``.yaml`` model from scratch)."""
    return Path(str(cfg.model.name)).suffix.lower() in (".yaml", ".yml") and not cfg.detection.weights

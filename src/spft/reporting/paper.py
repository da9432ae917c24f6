"""The SPFT paper's published numbers (its Tables I, II, IV, V, VI, VIII and X; docs/design.md#paper-results).

Shown beside our numbers, always marked "paper", when a run's ``data.name`` is one of the paper's datasets; they
are reference values typed from the paper, never used in any computation of ours. Only values that read
unambiguously from the extracted text are here (CheXpert's macro AUC is the paper's "≈ 0.835").
"""

from __future__ import annotations

import re

_CXR14_CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural Thickening", "Hernia"]
_HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
_HAM_NAMES = {"akiec": "Actinic Keratoses", "bcc": "Basal Cell Carcinoma", "bkl": "Benign Keratosis",
              "df": "Dermatofibroma", "mel": "Melanoma", "nv": "Melanocytic Nevi", "vasc": "Vascular Lesions"}


def _cols(classes: list[str], *columns: list[float | None]) -> dict[str, list[float | None]]:
    """{class: [value per column]} from per-column lists that start with the macro AUC."""
    return {name: [col[i] for col in columns] for i, name in enumerate(["macro", *classes])}


PAPER: dict[str, dict] = {
    "chestxray14": {
        "title": "ChestX-ray14",
        # Table IV: three independent runs (macro first, then the 14 classes in the paper's order)
        "runs": _cols(_CXR14_CLASSES,
                      [0.8331, 0.7857, 0.9014, 0.8351, 0.7094, 0.8447, 0.7785, 0.7507, 0.8950, 0.7680, 0.8627, 0.9388,
                       0.8468, 0.8009, 0.9461],
                      [0.8302, 0.7936, 0.8956, 0.8380, 0.7088, 0.8416, 0.7804, 0.7428, 0.8912, 0.7635, 0.8598, 0.9359,
                       0.8278, 0.7917, 0.9515],
                      [0.8309, 0.7977, 0.8999, 0.8365, 0.7064, 0.8471, 0.7804, 0.7471, 0.8921, 0.7718, 0.8636, 0.9364,
                       0.8382, 0.7998, 0.9152]),
        # Table V: mean ± std over the three runs
        "mean_std": _cols(_CXR14_CLASSES,
                          [0.8314, 0.7923, 0.8990, 0.8365, 0.7082, 0.8445, 0.7798, 0.7469, 0.8928, 0.7678, 0.8620,
                           0.9370, 0.8376, 0.7975, 0.9376],
                          [0.0015, 0.0060, 0.0030, 0.0015, 0.0016, 0.0028, 0.0011, 0.0040, 0.0020, 0.0042, 0.0020,
                           0.0015, 0.0095, 0.0049, 0.0196]),
        # Table VI: unfreezing depth, one run each (overlay names of the built-in `depth` study)
        "depth": _cols(_CXR14_CLASSES,
                       [0.8331, 0.7857, 0.9014, 0.8351, 0.7094, 0.8447, 0.7785, 0.7507, 0.8950, 0.7680, 0.8627, 0.9388,
                        0.8468, 0.8009, 0.9461],
                       [0.8320, 0.7766, 0.8941, 0.8302, 0.7077, 0.8321, 0.7584, 0.7369, 0.8882, 0.7508, 0.8594, 0.9315,
                        0.8232, 0.7806, 0.9518]),
        "depth_columns": ["top10", "all_blocks"],
        # Table X: the ablation ladder, macro AUC (overlay names of the built-in `ladder` study)
        "ladder": {"head_only": 0.8095, "unfreeze": 0.8216, "class_weights": 0.8306, "spft": 0.8331},
    },
    "ham10000": {
        "title": "HAM10000",
        "runs": _cols(_HAM_CLASSES,  # Table I
                      [0.9243, 0.9468, 0.9379, 0.9185, 0.9207, 0.8554, 0.9396, 0.9515],
                      [0.9164, 0.9379, 0.9558, 0.8755, 0.8935, 0.8893, 0.9285, 0.9342],
                      [0.9554, 0.9604, 0.9675, 0.9318, 0.9873, 0.9056, 0.9566, 0.9788]),
        "mean_std": _cols(_HAM_CLASSES,  # Table II
                          [0.9320, 0.9484, 0.9537, 0.9086, 0.9338, 0.8834, 0.9416, 0.9548],
                          [0.0168, 0.0092, 0.0123, 0.0238, 0.0397, 0.0209, 0.0116, 0.0182]),
        # Table III: baselines, macro AUC
        "baselines": {"ResNet50": 0.8388, "InceptionV3": 0.8589, "DenseNet121": 0.8967, "ALBEF (images only)": 0.9136},
    },
    "chexpert": {
        "title": "CheXpert (validation set)",
        # Table VIII: one run; Fracture has no positive in the validation set (excluded); macro is "≈ 0.835"
        "runs": {"macro": [0.835], "Atelectasis": [0.8277], "Cardiomegaly": [0.7884], "Consolidation": [0.8801],
                 "Edema": [0.9175], "Enlarged Cardiomediastinum": [0.5146], "Fracture": [None],
                 "Lung Lesion": [0.6738], "Lung Opacity": [0.9256], "No Finding": [0.8739],
                 "Pleural Effusion": [0.9209], "Pleural Other": [0.8584], "Pneumonia": [0.8092],
                 "Pneumothorax": [0.8850], "Support Devices": [0.9705]},
    },
}

_ALIASES = {"chestxray14": "chestxray14", "nihchestxray14": "chestxray14", "cxr14": "chestxray14",
            "chexpert": "chexpert", "ham10000": "ham10000"}


def norm(name: str) -> str:
    """A name reduced to lowercase letters and digits (``Pleural_Thickening`` → ``pleuralthickening``)."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def paper_dataset(data_name: str | None) -> str | None:
    """The paper's key for a config's ``data.name`` (chestxray14, chexpert, ham10000), or None (phantom, csv)."""
    return _ALIASES.get(norm(data_name or ""))


def lookup(dataset: str | None, table: str, name: str) -> list[float | None] | None:
    """The paper's values in ``table`` (runs, mean_std, depth) for a class name or ``"macro"``; None if absent."""
    if dataset not in PAPER or table not in PAPER[dataset]:
        return None
    by_norm = {norm(k): v for k, v in PAPER[dataset][table].items()}
    if dataset == "ham10000":  # the paper names classes "Actinic Keratoses (akiec)"; datasets use either part
        by_norm.update({norm(_HAM_NAMES[k]): v for k, v in PAPER[dataset][table].items() if k in _HAM_NAMES})
    return by_norm.get(norm(name))

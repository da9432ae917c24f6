"""``MODEL_CARD.md`` of an exported classification run, written from the run directory's own records.

Sections: model (encoder, head, weights), data (``data.json``: dataset, classes, split counts and grouping, label
policy, split method), preprocessing, training recipe (``config.yaml``: loss, recipe, optim, trainer), test metrics
(with the bootstrap 95% intervals of ``RUN/report/report.json`` when ``spft report RUN`` was run, else the point
estimates of ``metrics.json``), operating points (``thresholds.json``), calibration (``calibration.json``), intended
use and limits, and how to use the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from spft.tasks.classification.source import ClassifierRecord
from spft.tasks.common.export_folder import RESEARCH_ONLY, SAME_SOURCE, card_header, recipe_section

RAD_DINO_PRETRAINING = ("RAD-DINO (microsoft/rad-dino) was pre-trained on chest X-rays that include the public "
                        "ChestX-ray14 (NIH), CheXpert, MIMIC-CXR, PadChest and BRAX images; results on those "
                        "datasets are not an external validation of this model.")


def _read(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _report_entry(run_dir: Path) -> dict | None:
    """The run's entry (with ``bootstrap``) in ``RUN/report/report.json``, when ``spft report RUN`` wrote one."""
    report = _read(run_dir / "report" / "report.json")
    if not isinstance(report, dict):
        return None
    runs = [r for r in report.get("runs", []) if isinstance(r, dict) and r.get("bootstrap")]
    for r in runs:
        if str(r.get("run_dir", "")) in ("", ".", str(run_dir), run_dir.name):
            return r
    return runs[0] if len(runs) == 1 else None


def _metrics_section(run_dir: Path, classes: list[str]) -> list[str]:
    metrics = _read(run_dir / "metrics.json") or {}
    entry = _report_entry(run_dir)
    lines = ["## Test metrics", ""]
    if not metrics and entry is None:
        return lines + ["No metrics.json in the run directory (the run did not finish its test evaluation).", ""]
    n = metrics.get("n")
    lines.append(f"Split `{metrics.get('split', 'test')}`, {n if n is not None else '?'} images, best epoch "
                 f"{metrics.get('best_epoch', '?')}; AUC of the weights in this folder.")
    lines.append("")
    per_class = (entry or {}).get("per_class_auc") or metrics.get("per_class_auc") or {}
    macro = (entry or {}).get("macro_auc", metrics.get("macro_auc"))
    if entry is not None:
        boot = entry["bootstrap"]
        lines += [f"95% bootstrap intervals from `report/report.json` ({boot.get('n_boot')} replicates, resampling "
                  f"{boot.get('unit')}).", "", "| class | AUC | 95% CI |", "|---|---|---|"]
        for c in classes:
            lo, hi = (boot.get("per_class", {}).get(c) or [None, None])
            lines.append(f"| {c} | {_fmt(per_class.get(c))} | {_fmt(lo)} – {_fmt(hi)} |")
        lo, hi = boot.get("macro") or [None, None]
        lines.append(f"| **macro** | **{_fmt(macro)}** | {_fmt(lo)} – {_fmt(hi)} |")
    else:
        lines += ["Point estimates from `metrics.json` (no intervals: `spft report RUN_DIR` adds bootstrap 95% "
                  "intervals, and a later export puts them here).", "", "| class | AUC |", "|---|---|"]
        for c in classes:
            lines.append(f"| {c} | {_fmt(per_class.get(c))} |")
        lines.append(f"| **macro** | **{_fmt(macro)}** |")
    excluded = metrics.get("excluded_classes") or []
    if excluded:
        lines += ["", f"Excluded from the macro AUC (no positive or no negative in the test split): "
                      f"{', '.join(excluded)}."]
    return lines + [""]


def _thresholds_section(run_dir: Path, loaded: ClassifierRecord) -> list[str]:
    record = _read(run_dir / "thresholds.json")
    lines = ["## Operating points", ""]
    if not isinstance(record, dict):
        return lines + ["The run has no `thresholds.json`: `pred_<class>` uses 0.5 for every class, which is not a "
                        "chosen operating point." + (" (This model is single-label, `loss: ce`: `pred_<class>` is "
                                                     "the arg-max.)" if loaded.loss == "ce" else ""), ""]
    lines.append(f"From `thresholds.json`: method `{record.get('method')}`, target `{record.get('target')}`, chosen "
                 f"on the `{record.get('split')}` split." + (" Single-label model (`loss: ce`): `pred_<class>` is the "
                                                             "arg-max; thresholds are for reference." if loaded.loss
                                                             == "ce" else ""))
    entries = record.get("classes") or {}
    keys: list[str] = []
    for entry in entries.values():
        if isinstance(entry, dict):
            keys += [k for k in entry if k != "threshold" and k not in keys and not isinstance(entry[k], (dict, list))]
    lines += ["", "| class | threshold | " + " | ".join(keys) + " |", "|---" * (2 + len(keys)) + "|"]
    for c in loaded.classes:
        entry = entries.get(c)
        if not isinstance(entry, dict):
            lines.append(f"| {c} | 0.5 (none chosen) | " + " | ".join("" for _ in keys) + " |")
            continue
        lines.append(f"| {c} | {_fmt(entry.get('threshold'))} | " + " | ".join(_fmt(entry.get(k)) for k in keys)
                     + " |")
    return lines + [""]


def _calibration_section(run_dir: Path, loaded: ClassifierRecord) -> list[str]:
    record = _read(run_dir / "calibration.json")
    lines = ["## Calibration", ""]
    if not isinstance(record, dict):
        return lines + ["The run has no `calibration.json`: probabilities are the model's raw "
                        f"{'softmax' if loaded.loss == 'ce' else 'sigmoid'} outputs (temperature 1).", ""]
    lines.append(f"Method `{record.get('method')}`, temperature {_fmt(loaded.temperature)}: reported probability = "
                 f"{'softmax' if loaded.loss == 'ce' else 'sigmoid'}(logit / T).")
    extra = {k: v for k, v in record.items() if k not in ("method", "temperature")}
    if extra:
        lines.append("")
        lines += [f"- {k}: {json.dumps(v) if isinstance(v, (dict, list)) else _fmt(v)}" for k, v in extra.items()]
    return lines + [""]


def _data_section(run_dir: Path, cfg: dict, loaded: ClassifierRecord) -> list[str]:
    data = _read(run_dir / "data.json") or {}
    dcfg = cfg.get("data", {}) or {}
    where = ", ".join(f"{k} `{dcfg[k]}`" for k in ("csv", "root") if dcfg.get(k))
    lines = ["## Data", "", f"- Dataset: `{dcfg.get('name', '?')}`" + (f" ({where})" if where else ""),
             f"- Classes ({len(loaded.classes)}): {', '.join(loaded.classes)}",
             f"- Label policy: {data.get('label_policy', 'not recorded')}",
             f"- Split: {data.get('split_policy', 'not recorded')} (method `{data.get('split_method', '?')}`)"]
    if dcfg.get("patient_column"):
        lines.append(f"- Grouping: splits are disjoint in `{dcfg['patient_column']}` (no patient in two splits)")
    counts, groups = data.get("n_images") or {}, data.get("n_groups") or {}
    if counts:
        lines += ["", "| split | images | groups (patients / lesions) |", "|---|---|---|"]
        lines += [f"| {s} | {counts.get(s, '?')} | {groups.get(s, '?')} |" for s in ("train", "val", "test")]
    return lines + [""]


def _model_section(cfg: dict, loaded: ClassifierRecord) -> list[str]:
    model = loaded.model
    enc = model.encoder.config
    mcfg = cfg.get("model", {}) or {}
    name = mcfg.get("name") or "randomly initialised from `model.config` (not pretrained)"
    kind = ("single-label (softmax over the classes, `loss: ce`)" if loaded.loss == "ce"
            else "multi-label (one sigmoid per class, `loss: bce`)")
    return ["## Model", "",
            f"- Task: image classification, {kind}",
            f"- Encoder: {name} — {type(model.encoder).__name__}, hidden size {getattr(enc, 'hidden_size', '?')}, "
            f"{getattr(enc, 'num_hidden_layers', '?')} blocks, patch {getattr(enc, 'patch_size', '?')}",
            f"- Head: {model.pooling} pooling of the patch tokens ({model.n_prefix} prefix token(s) left out) → MLP "
            f"(hidden {model.head.net[1].out_features}, GELU, dropout {model.head.net[3].p}) → "
            f"{len(loaded.classes)} logits",
            f"- Weights: {'EMA' if loaded.meta.get('weights') == 'ema' else 'raw'} weights of "
            f"`{Path(str(loaded.meta.get('checkpoint', '?'))).name}` (epoch {loaded.meta.get('epoch', '?')})", ""]


def _preprocessing_section(loaded: ClassifierRecord) -> list[str]:
    prep = loaded.preprocessing
    return ["## Preprocessing", "",
            f"- Colour: images read as {'grey (replicated to 3 channels)' if loaded.color == 'grey' else 'RGB'}; "
            "16-bit images scaled 0..65535 → 0..255; DICOM through its LUTs and windowing",
            f"- Geometry: {prep.geometry()} → {prep.size} x {prep.size}",
            f"- Rescale {prep.rescale}, mean {list(prep.mean)}, std {list(prep.std)} (source: {prep.source})",
            "- The same recipe as `preprocessor_config.json` (transformers' BitImageProcessor)", ""]


def model_card(run_dir: str | Path, loaded: ClassifierRecord, formats: dict | None = None) -> str:
    """The Markdown model card of ``run_dir`` (the classifier ``loaded`` from it)."""
    from spft.experiments.rundir import read_run_yaml

    run_dir = Path(run_dir)
    cfg = read_run_yaml(run_dir / "config.yaml")
    mcfg = cfg.get("model", {}) or {}
    raddino = "rad-dino" in str(mcfg.get("name") or "").lower()
    lines = card_header(loaded.name, run_dir, formats)
    lines += _model_section(cfg, loaded)
    lines += _data_section(run_dir, cfg, loaded)
    lines += _preprocessing_section(loaded)
    lines += recipe_section(cfg)
    lines += _metrics_section(run_dir, loaded.classes)
    lines += _thresholds_section(run_dir, loaded)
    lines += _calibration_section(run_dir, loaded)
    lines += ["## Intended use and limits", "", RESEARCH_ONLY, SAME_SOURCE,
              "- " + (RAD_DINO_PRETRAINING if raddino else
                      "The encoder was randomly initialised (no pre-training images)." if not mcfg.get("name") else
                      f"Check which images `{mcfg.get('name')}` was pre-trained on before calling a test set "
                      "external (for RAD-DINO: ChestX-ray14, CheXpert, MIMIC-CXR, PadChest, BRAX)."),
              "- Where labels were mined from radiology reports (ChestX-ray14, CheXpert, MIMIC-CXR) they are noisy; "
              "the AUCs measure agreement with those labels, not with a radiologist's reading.",
              "- " + ("Thresholds were chosen on the validation split; " if (run_dir / "thresholds.json").is_file()
                      else "No operating point was chosen (0.5 everywhere); ")
              + "prevalence in another population changes the predictive values at the same threshold.", ""]
    lines += ["## Using this model", "", "```bash", "spft predict THIS_FOLDER images/ --out predictions.csv", "```", "",
              "```python", "import spft", "", "m = spft.load(\"THIS_FOLDER\")", "table = m.predict([\"scan1.png\", "
              "\"scan2.dcm\"])  # id, prob_<class>, pred_<class>", "```", "",
              "The encoder alone: `transformers.AutoModel.from_pretrained(THIS_FOLDER)` (it reports the "
              "`spft_head.*` weights as unused: those are the classification head, read by `spft.load`).", ""]
    return "\n".join(lines)

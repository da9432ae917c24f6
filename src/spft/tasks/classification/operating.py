"""Operating points and calibration of a classification run: fitted on validation at the end of training, reused by
``spft evaluate``.

At the end of training (:func:`fit_and_apply`): the best (EMA) weights score the validation and the test split; a
temperature ``T`` is fitted on the validation logits when ``evaluation.calibration: temperature`` (else ``T = 1``);
per-class thresholds are chosen on the *calibrated* validation probabilities by ``evaluation.threshold`` (and
``evaluation.target``); then ``RUN/calibration.json`` and ``RUN/thresholds.json`` are written and the test
evaluation's probabilities become ``sigmoid(logit / T)`` (``softmax(logits / T)`` for ``loss: ce``), AUC included.

``spft evaluate`` (:func:`apply_run_records`) never refits: it applies the run's ``T`` and thresholds to the data it
scores. A run without these files (made before they existed) is scored as before, without operating points.

Files (read by ``spft.load`` / ``spft predict`` too):

* ``thresholds.json``: ``{"method", "target", "split": "val", "classes": {class: {threshold, sensitivity,
  specificity, ppv, npv, f1} | null}}``, the metrics being those on validation at the threshold; null where no
  threshold is defined (no positive or no negative in validation);
* ``calibration.json``: ``{"method": "none"|"temperature", "temperature", "fitted_on": "val", "ece_val_before",
  "ece_val_after", "ece_test_before", "ece_test_after", "bins": 15}`` (always written).

Keys added to the evaluation's metrics (``metrics.json`` and the ``spft evaluate`` files): ``per_class_auprc``,
``macro_auprc``, ``operating_points`` (per class at the validation thresholds, null where the threshold is),
``macro_operating_point``, ``ece`` (``before``/``after`` calibration, per class too), ``calibration``
(method, temperature) and ``thresholds`` (method, target, split).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from spft.errors import DataError
from spft.metrics import multilabel_auc
from spft.metrics.calibration import (
    BINS,
    T_BOUNDS,
    calibrated_probabilities,
    fit_temperature,
    per_class_ece,
    summary_ece,
)
from spft.metrics.operating_points import (
    choose_thresholds,
    macro,
    macro_operating_point,
    operating_points,
    per_class_auprc,
)

log = logging.getLogger(__name__)

THRESHOLDS = "thresholds.json"
CALIBRATION = "calibration.json"


def _classes(ev) -> list[str]:
    return list(ev.auc.classes)


def calibrate(ev, temperature: float, multiclass: bool) -> None:
    """Set ``ev``'s probabilities to ``sigmoid(logit / T)`` (``softmax`` for ``multiclass``) and recompute its AUC."""
    if ev.logits is None:
        raise DataError("calibration needs the evaluation's logits")
    ev.probs = calibrated_probabilities(ev.logits, temperature, multiclass)
    ev.auc = multilabel_auc(ev.probs, ev.labels, _classes(ev))


def _ece_pair(ev, temperature: float, multiclass: bool) -> tuple[float | None, float | None]:
    classes = _classes(ev)
    before = summary_ece(calibrated_probabilities(ev.logits, 1.0, multiclass), ev.labels, classes, multiclass)
    after = summary_ece(calibrated_probabilities(ev.logits, temperature, multiclass), ev.labels, classes, multiclass)
    return before, after


def threshold_record(val, method: str, target: float | None) -> dict:
    """``thresholds.json``: per class the threshold chosen on ``val``'s (calibrated) probabilities and the
    validation metrics there; null where undefined."""
    classes = _classes(val)
    chosen = choose_thresholds(val.probs, val.labels, classes, method, target)
    points = operating_points(val.probs, val.labels, classes, chosen)
    return {"method": method, "target": None if target is None else float(target), "split": "val",
            "classes": points}


def thresholds_of(record: dict) -> dict[str, float | None]:
    """``{class: threshold or None}`` from a ``thresholds.json`` mapping."""
    return {c: (None if p is None else p.get("threshold")) for c, p in record.get("classes", {}).items()}


def extra_metrics(ev, thresholds: dict | None, calibration: dict, multiclass: bool) -> dict:
    """The keys an evaluation adds to its metrics (see the module docstring). ``ev.probs`` must already be the
    calibrated probabilities; ``thresholds``: a ``thresholds.json`` mapping, or None (an older run: no operating
    points)."""
    classes = _classes(ev)
    auprc = per_class_auprc(ev.probs, ev.labels, classes)
    out: dict = {"per_class_auprc": auprc, "macro_auprc": macro(auprc)}
    if thresholds is not None:
        th = thresholds_of(thresholds)
        missing = [c for c in classes if c not in th]
        if missing:
            raise DataError(f"{THRESHOLDS} has no threshold for class(es) {', '.join(missing)}: it belongs to another "
                            "run or was edited")
        points = operating_points(ev.probs, ev.labels, classes, th)
        out.update(operating_points=points, macro_operating_point=macro_operating_point(points),
                   thresholds={"method": thresholds.get("method"), "target": thresholds.get("target"),
                               "split": thresholds.get("split", "val")})
    t = float(calibration.get("temperature", 1.0))
    out["calibration"] = {"method": calibration.get("method", "none"), "temperature": t}
    if ev.logits is not None:
        before, after = _ece_pair(ev, t, multiclass)
        out["ece"] = {"bins": BINS, "kind": "top-label" if multiclass else "macro over classes",
                      "before": before, "after": after,
                      "per_class_before": per_class_ece(calibrated_probabilities(ev.logits, 1.0, multiclass),
                                                        ev.labels, classes),
                      "per_class_after": per_class_ece(ev.probs, ev.labels, classes)}
    return out


def fit_and_apply(run_dir: Path, cfg, val, test) -> None:
    """End of training: fit ``T`` (when asked) and the thresholds on ``val``, write ``calibration.json`` and
    ``thresholds.json``, calibrate ``test`` and attach its extra metrics (written with ``metrics.json``).

    ``val`` is None when the run has no validation images: ``T = 1`` and no threshold is defined.
    """
    from spft.atomic import atomic_write_json

    multiclass = cfg.loss == "ce"
    ev_cfg = cfg.evaluation
    t = 1.0
    if val is not None and ev_cfg.calibration == "temperature":
        t = fit_temperature(val.logits, val.labels, multiclass)
        log.info("temperature scaling: T = %.4f (fitted on %d validation images)", t, len(val.ids))
        if min(abs(t - b) / b for b in T_BOUNDS) < 1e-3:
            log.warning("temperature scaling: T = %.4g is at the edge of the searched range %s: the validation "
                        "logits are far from calibrated (or too few to fit on)", t, T_BOUNDS)
    if val is not None:
        calibrate(val, t, multiclass)
        thresholds = threshold_record(val, ev_cfg.threshold, ev_cfg.target)
    else:
        log.warning("no validation images: no temperature and no thresholds fitted")
        thresholds = {"method": ev_cfg.threshold, "target": ev_cfg.target, "split": "val",
                      "classes": {c: None for c in _classes(test)}}
    undefined = [c for c, p in thresholds["classes"].items() if p is None]
    if undefined:
        log.warning("no threshold for %s: no positive or no negative validation image (predict uses 0.5 there)",
                    ", ".join(undefined))
    calibrate(test, t, multiclass)
    val_ece = _ece_pair(val, t, multiclass) if val is not None else (None, None)
    test_ece = _ece_pair(test, t, multiclass)
    calibration = {"method": ev_cfg.calibration, "temperature": t, "fitted_on": "val",
                   "ece_val_before": val_ece[0], "ece_val_after": val_ece[1],
                   "ece_test_before": test_ece[0], "ece_test_after": test_ece[1], "bins": BINS}
    atomic_write_json(Path(run_dir) / CALIBRATION, calibration)
    atomic_write_json(Path(run_dir) / THRESHOLDS, thresholds)
    test.extra.update(extra_metrics(test, thresholds, calibration, multiclass))


def read_run_records(run_dir: Path) -> tuple[dict | None, dict | None]:
    """``(thresholds.json, calibration.json)`` of a run, None for a file it does not have."""
    out = []
    for name in (THRESHOLDS, CALIBRATION):
        path = Path(run_dir) / name
        if not path.is_file():
            out.append(None)
            continue
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is damaged ({exc}); re-create it by evaluating the run's validation split "
                            "or restore it from a copy") from exc
    return out[0], out[1]


def apply_run_records(run_dir: Path, cfg, ev) -> None:
    """``spft evaluate``: the run's temperature and thresholds applied to ``ev`` (never refitted); a run without
    them (older than these files) keeps plain probabilities and gets no operating points."""
    thresholds, calibration = read_run_records(run_dir)
    if calibration is None:
        calibration = {"method": "none", "temperature": 1.0}
    t = float(calibration.get("temperature", 1.0))
    if not (np.isfinite(t) and t > 0):
        raise DataError(f"{Path(run_dir) / CALIBRATION}: temperature must be a positive number, got {t}")
    multiclass = cfg.loss == "ce"
    calibrate(ev, t, multiclass)
    if thresholds is None:
        log.info("%s has no %s (a run made before operating points existed): no operating points reported",
                 run_dir, THRESHOLDS)
    ev.extra.update(extra_metrics(ev, thresholds, calibration, multiclass))


def format_operating_points(ev) -> str:
    """The operating-point table printed after the AUC table (empty when the evaluation has none)."""
    points = ev.extra.get("operating_points")
    if not points:
        return ""
    width = max(len(c) for c in [*points, "macro"])
    cols = ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1")
    head = f"{'class':<{width}}  " + "  ".join(f"{c:>11}" for c in cols)
    lines = [head, "-" * len(head)]

    def cell(v) -> str:
        return f"{'n/a':>11}" if v is None else f"{v:>11.4f}"

    for c, p in points.items():
        lines.append(f"{c:<{width}}  " + "  ".join(cell(None if p is None else p.get(k)) for k in cols))
    m = ev.extra.get("macro_operating_point", {})
    lines.append(f"{'macro':<{width}}  {'':>11}  " + "  ".join(cell(m.get(k)) for k in cols[1:]))
    th = ev.extra.get("thresholds", {})
    lines.append(f"thresholds: {th.get('method')}"
                 + (f" (target {th.get('target')})" if th.get("target") is not None else "")
                 + f", chosen on {th.get('split', 'val')}; calibration: {ev.extra['calibration']['method']} "
                 f"(T = {ev.extra['calibration']['temperature']:.4f})")
    return "\n".join(lines)

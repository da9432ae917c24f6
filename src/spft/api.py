"""``spft.load``: a trained model (run directory or ``spft export`` folder) ready to predict, from Python.

    import spft
    m = spft.load("runs/phantom_cxr/20250101-120000")   # or an export folder
    table = m.predict(["a.png", "scans/", array])        # id, prob_<class>, pred_<class>
    m.classes, m.thresholds, m.preprocessing

The task is read from the folder and its predict module found through :mod:`spft.tasks.registry`; neither this
module nor ``import spft`` imports torch, transformers or Lightning until ``load`` is called.
"""

from __future__ import annotations

from pathlib import Path


def load(source: str | Path, checkpoint: str = "best", device: str = "auto", engine: str | None = None):
    """The model of ``source`` on ``device`` (``auto``: CUDA when available, else CPU).

    ``checkpoint``: ``best`` (default) or ``last`` for a run directory; the weights are the EMA copy when the run
    used EMA. For classification the result is a :class:`spft.tasks.classification.predict.Classifier`; for
    detection a :class:`spft.tasks.detection.predict.Detector` (``predict(paths)``: one row per box); for segmentation
    a :class:`spft.tasks.segmentation.predict.Segmenter` (``predict(paths, prompts=BOXES_CSV_OR_TABLE)``: RLE masks).

    ``engine`` (classification): ``torch`` (default) or ``onnx`` (an export folder's ``model.onnx`` in onnxruntime on
    the CPU; :mod:`spft.tasks.classification.engine`).
    """
    import inspect

    from spft.errors import ConfigError
    from spft.experiments.rundir import task_of_model
    from spft.tasks.registry import predict_api

    task = task_of_model(source)
    api = predict_api(task)
    extra = {} if engine is None else {"engine": engine}
    if extra and "engine" not in inspect.signature(api.load).parameters:
        raise ConfigError(f"engine: not an option of this model's task ({task}); only classification has engines")
    return api.load(source, checkpoint=checkpoint, device=device, **extra)

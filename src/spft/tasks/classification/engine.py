"""Which engine runs a classifier's forward pass in ``spft predict`` / ``spft.load``: PyTorch or onnxruntime.

Only the forward differs: both engines get the same preprocessed ``pixel_values`` batches (decoding, preprocessing
and batching are :class:`~spft.tasks.classification.predict.Classifier`'s) and return the same ``logits``, to which
the same calibration (``calibration.json`` temperature, sigmoid / softmax in float64) and thresholds are applied.

* ``torch``: the PyTorch model (bf16 autocast on a GPU, float32 on the CPU); run directories and export folders.
* ``onnx``: the export folder's ``model.onnx`` (``spft export RUN --out DIR --format onnx``) in onnxruntime's
  ``CPUExecutionProvider``, float32, ``intra_op_num_threads`` = torch's thread count (``OMP_NUM_THREADS``), so the
  two engines use the same cores. Its ``logits`` output is used, not its ``probabilities`` (which bake in the
  temperature of export time): a later ``calibration.json`` applies to both engines alike.

The default is ``torch``, chosen by measurement (``benchmarks/predict_bench.py --size raddino --onnx``, CPU, one
intra-op thread each; ``benchmarks/RESULTS.md``, "CPU serving"): at RAD-DINO size onnxruntime took 1.59x PyTorch
eager's time in plain loops on the same tensors, 1.69x through spft's ``predict_pixels`` and 1.77x end to end
(probably PyTorch's fused scaled-dot-product attention over 1,370 tokens against the separate matmul / softmax
nodes that opset 18 exports it as; not profiled). An ``auto`` that took ``model.onnx`` when a folder has one
would therefore be slower, so there is none. ``onnx`` is for serving the exact graph ``spft export`` verified, and
for comparing the two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spft.errors import ConfigError, DependencyError, MissingFileError
from spft.tasks.classification.export import ONNX_FILE

ENGINES = ("torch", "onnx")
NEEDS_EXPORT = "export it with spft export RUN --out DIR --format onnx"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ConfigError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def onnxruntime_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def resolve_engine(engine: str, source: Path, device: str | torch.device = "cpu", heatmaps: bool = False) -> str:
    """``engine`` when it can run on ``source`` (a run directory or an export folder) and ``device`` (as asked:
    ``auto`` is the CPU for ``onnx``); else one line naming what is missing (checked before a model is built)."""
    check_engine(engine)
    if engine == "torch":
        return engine
    if heatmaps:
        raise ConfigError("--heatmaps needs --engine torch: Grad-CAM and attention rollout differentiate the "
                          "PyTorch model, which model.onnx (outputs only) cannot")
    if not (Path(source) / ONNX_FILE).is_file():
        raise MissingFileError(f"{source} has no {ONNX_FILE}; {NEEDS_EXPORT}")
    if str(device) not in ("auto", "cpu"):
        raise ConfigError(f"--engine onnx runs on the CPU (onnxruntime's CPUExecutionProvider); --device "
                          f"{device} needs --engine torch")
    if not onnxruntime_installed():
        raise DependencyError("--engine onnx needs onnxruntime: pip install 'spft[export]'")
    return engine


class OnnxForward:
    """``pixel_values [B, 3, H, W] -> logits [B, C]`` (float32, CPU) through ``folder/model.onnx`` in onnxruntime.

    The model's input and outputs are checked against the folder's ``config.json`` when the session opens (input
    ``pixel_values`` with 3 channels of ``size`` x ``size``, output ``logits`` with one column per class), so a
    ``model.onnx`` from another export is one line, not a shape error on the first batch."""

    def __init__(self, folder: Path, n_classes: int, size: int, threads: int | None = None):
        import onnxruntime as ort

        path = Path(folder) / ONNX_FILE
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.log_severity_level = 3  # errors only: no provider chatter on stderr
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own (unexported) error types
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{path}: onnxruntime cannot load it ({why}); {NEEDS_EXPORT}") from exc
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        shape = inputs.get("pixel_values")
        if shape is None or len(shape) != 4 or list(shape[1:]) != [3, size, size]:
            raise ConfigError(f"{path}: input pixel_values is {shape}, config.json describes [batch, 3, {size}, "
                              f"{size}]; {NEEDS_EXPORT}")
        out = outputs.get("logits")
        if out is None or len(out) != 2 or out[1] != n_classes:
            raise ConfigError(f"{path}: output logits is {out}, config.json has {n_classes} classes; {NEEDS_EXPORT}")
        self.path = path

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(pixel_values.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run(["logits"], {"pixel_values": batch})
        return torch.from_numpy(logits)

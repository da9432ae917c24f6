"""DICOM decoding for chest radiographs: pixel data -> display-ready 8-bit grey array.

Order (specs/datasets.md §4.5): modality LUT (rescale slope/intercept), then VOI LUT or window centre/width,
then MONOCHROME1 inversion (low values display white there), then min-max scaling to 0..255. pydicom does the
LUT work (``apply_modality_lut``, ``apply_voi_lut``); this module only fixes the order and the output type.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spft.errors import DataError

log = logging.getLogger(__name__)


def read_dicom(path: str | Path, voi_lut: bool = True) -> np.ndarray:
    """Decode a DICOM file into a uint8 (rows, columns) array, white = dense.

    Args:
        path: The ``.dicom`` / ``.dcm`` file.
        voi_lut: Apply the file's VOI LUT or window (if it has one) after the modality LUT.

    Raises:
        ValueError: If the file cannot be decoded or holds no 2-D grey image (the message names the file).
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for broken or compressed files without a decoder
        raise DataError(f"cannot decode DICOM {path}: {exc}") from exc
    if arr.ndim != 2:
        raise DataError(f"{path}: expected one grey frame, got pixel data of shape {arr.shape}")
    img = apply_modality_lut(arr, ds).astype(np.float64)
    if voi_lut:
        img = np.asarray(apply_voi_lut(img, ds), dtype=np.float64)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        img = img.max() - img
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        log.warning("%s: constant image", path)
        return np.zeros(img.shape, dtype=np.uint8)
    return np.clip(np.rint((img - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)

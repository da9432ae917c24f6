"""DICOM decoding for chest radiographs: pixel data -> display-ready 8-bit grey array. The one DICOM reader of spft:
VinDr-CXR preparation, the CSV dataset, the image cache and ``spft data check`` all decode through here
(:func:`spft.data.io.load_image` dispatches ``.dcm``/``.dicom`` files to :func:`read_dicom`).

Order (docs/decisions.md#dicom): modality LUT (rescale slope/intercept), then VOI LUT or window centre/width,
then MONOCHROME1 inversion (low values display white there), then min-max scaling to 0..255. pydicom does the
LUT work (``apply_modality_lut``, ``apply_voi_lut``); this module only fixes the order and the output type.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spft.errors import BadImageError, DataError, DependencyError

log = logging.getLogger(__name__)


def _pydicom():
    try:
        import pydicom
    except ModuleNotFoundError as exc:  # a base dependency; only a broken install gets here
        raise DependencyError("reading DICOM files needs pydicom: pip install pydicom") from exc
    return pydicom


def _bad(message: str) -> DataError:
    return BadImageError(message)


def _check_size(path, ds, max_pixels: int | None) -> tuple[int, int]:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise _bad(f"cannot decode DICOM {path}: no Rows/Columns (not an image)") from None
    if max_pixels is not None and rows * cols > max_pixels:
        raise _bad(f"image {path}: {cols}x{rows} = {rows * cols:,} pixels is more than data.max_image_pixels = "
                   f"{max_pixels:,} (raise the key, or null for no limit)")
    return rows, cols


def check_dicom(path: str | Path, max_pixels: int | None = None) -> None:
    """The cheap header check of a DICOM file: readable header, an image size within ``max_pixels`` and, for an
    uncompressed transfer syntax, a file long enough to hold all its pixel bytes (a truncated copy is caught).

    Raises:
        BadImageError: naming the file and what is wrong.
    """
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for files that are not DICOM
        raise _bad(f"cannot decode DICOM {path}: {exc}") from exc
    rows, cols = _check_size(path, ds, max_pixels)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        needed = rows * cols * int(getattr(ds, "SamplesPerPixel", 1)) * int(getattr(ds, "BitsAllocated", 16)) // 8
        size = Path(path).stat().st_size
        if size < needed * frames:
            raise _bad(f"cannot decode DICOM {path}: truncated ({size:,} bytes, the pixel data alone needs "
                       f"{needed * frames:,})")


def read_dicom(path: str | Path, voi_lut: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """Decode a DICOM file into a uint8 (rows, columns) array, white = dense.

    Args:
        path: The ``.dicom`` / ``.dcm`` file.
        voi_lut: Apply the file's VOI LUT or window (if it has one) after the modality LUT.
        max_pixels: Refuse images with more pixels than this (checked from the header, before decoding).

    Raises:
        ValueError: If the file cannot be decoded or holds no 2-D grey image (a ``BadImageError`` naming the file).
    """
    pydicom = _pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises many types for broken files
        raise _bad(f"cannot decode DICOM {path}: {exc}") from exc
    _check_size(path, ds, max_pixels)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # truncated pixel data, or compressed without a decoder
        raise _bad(f"cannot decode DICOM {path}: {exc}") from exc
    if arr.ndim != 2:
        raise _bad(f"{path}: expected one grey frame, got pixel data of shape {arr.shape}")
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

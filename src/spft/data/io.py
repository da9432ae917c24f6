"""Image IO: decode image files from disk into PIL images of a fixed colour mode.

This module owns the mapping from whatever is stored on disk (8/16-bit grey PNG, RGB(A), palette, JPEG, TIFF)
to exactly one of two in-memory forms: mode "L" for grey models and mode "RGB" for colour models.
16-bit data is scaled linearly over its full range (never clipped), and decoding failures become ``ValueError``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
COLOR_MODES = ("grey", "rgb")

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def load_image(path: str | os.PathLike, color: str = "grey") -> Image.Image:
    """Load an image file as an 8-bit grey ("L") or RGB ("RGB") PIL image.

    Args:
        path: File to read (PNG, JPEG, BMP or TIFF; anything Pillow decodes).
        color: ``"grey"`` for a mode "L" result, ``"rgb"`` for a mode "RGB" result.

    Returns:
        A fully loaded PIL image (the file is closed) in the requested mode.

    Raises:
        ValueError: If ``color`` is not one of ``"grey"``/``"rgb"``, or the file cannot be decoded.
        FileNotFoundError: If ``path`` does not exist or is not a file.
    """
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {COLOR_MODES}, got {color!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return _to_mode(image, color)
    except (OSError, SyntaxError, ValueError, TypeError) as exc:  # PIL reports corrupt data through all of these
        raise ValueError(f"cannot decode image {path}: {exc}") from exc


def _to_mode(image: Image.Image, color: str) -> Image.Image:
    """Convert a decoded image of any Pillow mode to "L" (grey) or "RGB" (rgb)."""
    grey = _to_grey_if_deep(image)
    if grey is not None:
        return grey if color == "grey" else grey.convert("RGB")
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("L", "1", "LA", "La"):
        grey_image = image.convert("L")
        return grey_image if color == "grey" else grey_image.convert("RGB")
    rgb = image.convert("RGB")  # drops alpha of RGBA/RGBa; handles CMYK, YCbCr, LAB, HSV
    return rgb.convert("L") if color == "grey" else rgb


def _to_grey_if_deep(image: Image.Image) -> Image.Image | None:
    """Scale 16-bit/32-bit integer and float grey images to 8-bit "L"; ``None`` for other modes.

    16-bit modes map 0..65535 linearly onto 0..255. Mode "I" uses that same 16-bit range when the file is a PNG
    (Pillow only yields "I" for 16-bit PNGs) or when any value exceeds 255, else it is already 0..255.
    Mode "F" is taken as 0..1 when its maximum is <= 1, as 0..255 when <= 255, and as 16-bit otherwise.
    """
    mode = image.mode
    if mode not in _SIXTEEN_BIT_MODES and mode not in ("I", "F"):
        return None
    values = np.asarray(image).astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and (image.format == "PNG" or peak > 255)):
        scale = 255.0 / 65535.0
    elif mode == "F" and peak <= 1.0:
        scale = 255.0
    elif peak <= 255:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    scaled = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)

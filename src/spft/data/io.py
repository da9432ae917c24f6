"""Image IO: decode image files from disk into PIL images of a fixed colour mode.

This module owns the mapping from whatever is stored on disk (8/16-bit grey PNG, RGB(A), palette, JPEG, TIFF, and
rows of the ``npy`` image cache) to exactly one of two in-memory forms: mode "L" for grey models and mode "RGB" for
colour models. 16-bit data is scaled linearly over its full range (never clipped), and decoding failures become
``ValueError``. A path of the form ``"<array.npy>::<row>"`` (what :meth:`spft.data.cache.ImageCache.redirect` hands
to the datasets for the ``npy`` cache format) is one row of a uint8 ``.npy`` array, memory-mapped once per process.

Decoding stays with Pillow: ``torchvision.io.decode_png`` gives the same pixels but was within a few per cent of
Pillow's speed on 1024 px grey PNGs (zlib dominates both) and is deprecated since torchvision 0.29, so it would add
a second failure mode for no gain. What is sped up instead: 16-bit data goes through a lookup table (same bytes).

DICOM files (``.dcm``/``.dicom``, or any file with the ``DICM`` preamble that Pillow cannot open) go through
:func:`spft.data.dicom.read_dicom`, the one DICOM decoder of spft (the same as VinDr-CXR preparation): modality LUT,
VOI LUT or window, MONOCHROME1 inversion, min-max to 8 bit.

Unreadable files raise :class:`BadImageError` (a ``DataError``) naming the file, also from a DataLoader worker
(its message is reduced to that one line when torch re-raises it in the main process). Images larger than
``max_pixels`` (``data.max_image_pixels``; Pillow's decompression-bomb limit by default) are refused the same way.
:func:`check_image` is the cheap check that ``spft train`` runs over every image before training starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from spft.errors import BadImageError, DataError, MissingFileError

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_SUFFIXES)
PIL_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)  # Pillow's own decompression-bomb limit (warns above)
DEFAULT_PIXELS = "pillow"  # max_pixels default: Pillow's limit
COLOR_MODES = ("grey", "rgb")

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")

ROW_SEPARATOR = "::"  # "<array.npy>::<row>" names one row of an npy image-cache array
# 16-bit -> 8-bit as round(v * 255 / 65535): exactly (v + 128) // 257 for every v (v / 257 is never a tie); a table
# lookup is ~20x faster than the float computation and gives the same bytes (tests/test_io.py checks all 65536).
_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)
_ARRAYS: dict[str, tuple[tuple, np.ndarray]] = {}  # array path -> (file identity, read-only memmap), per process




_CONFIGURED: dict[str, int | None] = {"max_pixels": PIL_MAX_PIXELS}  # this process's data.max_image_pixels


def set_max_pixels(limit: int | None) -> None:
    """Make ``limit`` (``data.max_image_pixels``; ``None`` = no limit) what :data:`DEFAULT_PIXELS` stands for in
    this process (and in DataLoader workers forked from it); datasets also capture it when they are built."""
    _CONFIGURED["max_pixels"] = None if limit is None else int(limit)


def pixel_limit(max_pixels=DEFAULT_PIXELS) -> int | None:
    """The pixel limit ``max_pixels`` stands for: the configured one (Pillow's unless :func:`set_max_pixels` said
    otherwise) for :data:`DEFAULT_PIXELS`, ``None`` for no limit."""
    if isinstance(max_pixels, str) and max_pixels == DEFAULT_PIXELS:
        return _CONFIGURED["max_pixels"]
    return None if max_pixels is None else int(max_pixels)


def _lift_pillow_limit(limit: int | None) -> None:
    """spft enforces ``limit`` itself, from the image size in the header (:func:`_too_large`), so Pillow's own check
    is lifted in this process: it refuses more than *twice* its limit in ``Image.open`` with a message quoting that
    doubled number (178,956,970), not ``data.max_image_pixels``, and warns between once and twice its limit."""
    if Image.MAX_IMAGE_PIXELS is not None:
        Image.MAX_IMAGE_PIXELS = None


def _too_large(path, width: int, height: int, limit: int | None) -> None:
    if limit is not None and width * height > limit:
        raise BadImageError(f"image {path}: {width}x{height} = {width * height:,} pixels is more than "
                            f"data.max_image_pixels = {limit:,} (a decompression bomb, or a huge scan: raise the "
                            f"key, or null for no limit)")


def is_dicom(path: str | os.PathLike) -> bool:
    """A ``.dcm``/``.dicom`` file, or one with the DICOM preamble (``DICM`` at byte 128) whatever its name."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def load_image(path: str | os.PathLike, color: str = "grey", max_pixels=DEFAULT_PIXELS) -> Image.Image:
    """Load an image file as an 8-bit grey ("L") or RGB ("RGB") PIL image.

    Args:
        path: File to read (PNG, JPEG, BMP, TIFF, DICOM; anything Pillow decodes), or ``"<array.npy>::<row>"``.
        color: ``"grey"`` for a mode "L" result, ``"rgb"`` for a mode "RGB" result.
        max_pixels: Refuse images with more pixels (``data.max_image_pixels``); default Pillow's limit, ``None``
            for no limit.

    Returns:
        A fully loaded PIL image (the file is closed) in the requested mode.

    Raises:
        ValueError: If ``color`` is not one of ``"grey"``/``"rgb"``.
        BadImageError: The file cannot be decoded or has too many pixels (a ``DataError``, naming the file).
        FileNotFoundError: If ``path`` does not exist or is not a file.
    """
    if color not in COLOR_MODES:
        raise DataError(f"color must be one of {COLOR_MODES}, got {color!r}")
    path = Path(path)
    if not path.is_file():
        row_ref = parse_row_ref(path)
        if row_ref is not None:
            return load_array_row(*row_ref, color)
        raise MissingFileError(f"image file not found: {path}")
    limit = pixel_limit(max_pixels)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _load_dicom(path, color, limit)
    _lift_pillow_limit(limit)
    try:
        with Image.open(path) as image:
            _too_large(path, *image.size, limit)
            image.load()
            return _to_mode(image, color)
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image {path}: {exc} (data.max_image_pixels sets the limit; null = none)") from exc
    except (OSError, SyntaxError, ValueError, TypeError) as exc:  # PIL reports corrupt data through all of these
        if is_dicom(path):
            return _load_dicom(path, color, limit)
        if path.stat().st_size == 0:
            raise BadImageError(f"cannot decode image {path}: the file is empty (0 bytes)") from exc
        raise BadImageError(f"cannot decode image {path}: {exc}") from exc


def _load_dicom(path: Path, color: str, limit: int | None) -> Image.Image:
    from spft.data.dicom import read_dicom

    try:
        pixels = read_dicom(path, max_pixels=limit)
    except BadImageError:
        raise
    except DataError as exc:
        raise BadImageError(str(exc)) from exc
    image = Image.fromarray(pixels)
    return image if color == "grey" else image.convert("RGB")


def check_image(path: str | os.PathLike, max_pixels=DEFAULT_PIXELS, decode: bool = False) -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` when it looks fine.

    The default check is cheap and reads only the header and the last bytes: the file exists and is not empty,
    Pillow (or pydicom, for DICOM) recognises it and reads its size, the size is within ``max_pixels``, and a PNG
    ends with its IEND chunk / a JPEG with its end-of-image marker / an uncompressed DICOM holds all its pixel bytes
    (so a truncated copy is caught without decoding it). ``decode=True`` decodes the whole image instead
    (:func:`load_image`; what ``spft data check --scan`` does).
    """
    try:
        if decode:
            load_image(path, "grey", max_pixels)
            return None
        _check_header(Path(path), pixel_limit(max_pixels))
    except (ValueError, OSError) as exc:  # SpftErrors derive from these built-ins
        return str(exc)
    return None


def _check_header(path: Path, limit: int | None) -> None:
    if not path.is_file():
        if parse_row_ref(path) is not None:
            return
        raise MissingFileError(f"image file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise BadImageError(f"cannot decode image {path}: the file is empty (0 bytes)")
    if path.suffix.lower() in DICOM_SUFFIXES:
        from spft.data.dicom import check_dicom

        check_dicom(path, limit)
        return
    _lift_pillow_limit(limit)
    try:
        with Image.open(path) as image:
            fmt = image.format
            _too_large(path, *image.size, limit)
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image {path}: {exc} (data.max_image_pixels sets the limit; null = none)") from exc
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        if is_dicom(path):
            from spft.data.dicom import check_dicom

            check_dicom(path, limit)
            return
        raise BadImageError(f"cannot decode image {path}: {exc}") from exc
    tail = _tail(path, 4096)  # tolerates padding after the end marker, as Pillow does
    if fmt == "PNG" and b"IEND" not in tail:
        raise BadImageError(f"cannot decode image {path}: truncated PNG (no IEND chunk at the end of its "
                            f"{size:,} bytes)")
    if fmt in ("JPEG", "MPO") and b"\xff\xd9" not in tail:
        raise BadImageError(f"cannot decode image {path}: truncated JPEG (no end-of-image marker at the end of its "
                            f"{size:,} bytes)")


def _tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - n))
        return fh.read()


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
    if mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(_SIXTEEN_TO_EIGHT[np.asarray(image).astype(np.uint16, copy=False)])
    values = np.asarray(image).astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if mode == "I" and (image.format == "PNG" or peak > 255):
        scale = 255.0 / 65535.0
    elif mode == "F" and peak <= 1.0:
        scale = 255.0
    elif peak <= 255:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    scaled = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


def row_ref(array: str | os.PathLike, row: int) -> str:
    """The path string naming row ``row`` of the npy image-cache array ``array`` (see :func:`load_image`)."""
    return f"{os.fspath(array)}{ROW_SEPARATOR}{int(row)}"


def parse_row_ref(path: str | os.PathLike) -> tuple[Path, int] | None:
    """``(array, row)`` when ``path`` is ``"<something>.npy::<row>"``, else ``None``."""
    text = os.fspath(path)
    array, sep, row = text.rpartition(ROW_SEPARATOR)
    if not sep or not array.endswith(".npy") or not row.isdigit():
        return None
    return Path(array), int(row)


def open_array(array: str | os.PathLike) -> np.ndarray:
    """The read-only memmap of an npy image-cache array, opened once per process (and again if the file changed).

    Raises:
        FileNotFoundError: The array does not exist.
        ValueError: It is not a uint8 ``[N, H, W]`` or ``[N, H, W, 3]`` ``.npy`` array, or it is truncated.
    """
    key = os.fspath(array)
    try:
        st = os.stat(key)
    except FileNotFoundError:
        raise MissingFileError(f"image cache array not found: {key} (run `spft prepare cache` again)") from None
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _ARRAYS.get(key)
    if cached is not None and cached[0] == identity:
        return cached[1]
    try:
        rows = np.lib.format.open_memmap(key, mode="r")
    except (OSError, ValueError, EOFError) as exc:  # bad magic/header, or shorter than its header says
        raise DataError(f"image cache array {key} is corrupt or truncated ({exc}): delete it and run "
                         f"`spft prepare cache` again") from exc
    if rows.dtype != np.uint8 or rows.ndim not in (3, 4) or (rows.ndim == 4 and rows.shape[3] != 3):
        raise DataError(f"image cache array {key} is not uint8 [N, H, W] or [N, H, W, 3]: got {rows.dtype} "
                         f"{list(rows.shape)}")
    _ARRAYS[key] = (identity, rows)
    return rows


def load_array_row(array: str | os.PathLike, row: int, color: str = "grey") -> Image.Image:
    """Row ``row`` of an npy image-cache array as a mode "L" or "RGB" PIL image (a copy: the memmap stays shared).

    Raises:
        FileNotFoundError: The array does not exist.
        ValueError: The array is corrupt or truncated, or ``row`` is out of range (both name the file).
    """
    rows = open_array(array)
    if not 0 <= row < rows.shape[0]:
        raise DataError(f"row {row} out of range for image cache array {os.fspath(array)} with {rows.shape[0]} "
                         f"rows (run `spft prepare cache` again)")
    try:
        pixels = np.array(rows[row])
    except OSError as exc:  # the file shrank under the mapping (SIGBUS is not catchable; a short read is)
        raise DataError(f"cannot read row {row} of image cache array {os.fspath(array)}: {exc}") from exc
    image = Image.fromarray(pixels)
    if (image.mode == "L") == (color == "grey"):
        return image
    return image.convert("L" if color == "grey" else "RGB")


def array_to_image(array, color: str):
    """A numpy array (HxW, HxWx1, HxWx3, HxWx4; uint8, uint16 or float) or PIL image as the PIL image spft's loader
    would hand over for a file holding the same pixels: uint16 is scaled 0..65535 -> 0..255 as a 16-bit PNG is,
    float is taken as 0..1 when its maximum is <= 1 (else 0..255), alpha is dropped (as for RGBA files)."""
    from PIL import Image

    if isinstance(array, Image.Image):
        array.load()
        return _to_mode(array, color)
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise DataError(f"array of shape {arr.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")
    if arr.dtype == np.uint16:
        arr = _SIXTEEN_TO_EIGHT[arr] if arr.ndim == 3 else arr
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError("array holds NaN or infinite values")
        scale = 255.0 if float(arr.max()) <= 1.0 else 1.0
        arr = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 65535:
            raise DataError(f"array of dtype {arr.dtype} with values outside 0..65535: give uint8, uint16 or float")
        arr = arr.astype(np.uint16 if arr.max() > 255 else np.uint8)
        arr = _SIXTEEN_TO_EIGHT[arr] if arr.dtype == np.uint16 and arr.ndim == 3 else arr
    image = Image.fromarray(np.ascontiguousarray(arr))  # uint16 HxW -> mode I;16, scaled by _to_mode as files are
    return _to_mode(image, color)

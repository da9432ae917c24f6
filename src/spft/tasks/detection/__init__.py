"""Detection with SPFT on Ultralytics (YOLOv8, RT-DETR); needs the optional `detect` extra (AGPL-3.0).

Importing Ultralytics replaces ``PIL.Image.open`` process-wide with a wrapper that pip-installs ``pi-heif`` the
first time any unreadable image is opened (``ultralytics/utils/patches.py``); that turns spft's "cannot decode
image" errors into install attempts. Every module here that imports Ultralytics calls :func:`restore_pil_open`.
"""

from __future__ import annotations

import sys


def restore_pil_open() -> None:
    """Put Pillow's own ``Image.open`` back if Ultralytics has patched it (HEIC files then stay unsupported)."""
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is None:
        return
    from PIL import Image

    if Image.open is getattr(patches, "image_open", None):
        Image.open = patches._image_open

"""spft — Stabilized Progressive Fine-Tuning of medical-imaging foundation models.

The recipe math lives in :mod:`spft.recipe` (torch only); engines (Lightning for classification and segmentation,
Ultralytics for detection) adapt it. See README.md for the commands and docs/ for the design.
"""

from spft._version import __version__

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    """``spft.load`` is imported on first use, so ``import spft`` stays light (no torch, no Lightning)."""
    if name == "load":
        from spft.api import load

        return load
    raise AttributeError(f"module 'spft' has no attribute {name!r}")

"""spft — Stabilized Progressive Fine-Tuning of medical-imaging foundation models.

The recipe math lives in :mod:`spft.recipe` (torch only); engines (Lightning for classification and segmentation,
Ultralytics for detection) adapt it. See README.md for the commands and docs/ for the design.
"""

__version__ = "0.1.0"

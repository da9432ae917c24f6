"""Dice (and HD95) for segmentation: per image and structure, then averaged over images
(docs/design.md#segmentation).

A structure absent from an image's ground truth is excluded from that structure's average (it has no Dice to
speak of); a structure absent from every image has a Dice of None, listed rather than scored 0 or 1.
"""

from __future__ import annotations

import numpy as np

from spft.errors import DataError


def dice_score(pred: np.ndarray, target: np.ndarray) -> float | None:
    """Dice ``2|P∩T| / (|P| + |T|)`` of two boolean masks; None when the target is empty.

    >>> dice_score(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
    0.6666666666666666
    """
    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    if p.shape != t.shape:
        raise DataError(f"prediction {p.shape} and target {t.shape} differ in shape")
    n_t = int(t.sum())
    if n_t == 0:
        return None
    return 2.0 * int((p & t).sum()) / (int(p.sum()) + n_t)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, target: np.ndarray) -> float | None:
    """95th-percentile Hausdorff distance in pixels between the boundaries of two boolean masks (MONAI's definition:
    the larger of the two directed 95th percentiles); None when either mask is empty.

    >>> a = np.zeros((9, 9), bool); a[2:5, 2:5] = True
    >>> hd95(a, a), hd95(a, np.roll(a, 3, axis=1))
    (0.0, 3.0)
    """
    from scipy.ndimage import distance_transform_edt

    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    if p.shape != t.shape:
        raise DataError(f"prediction {p.shape} and target {t.shape} differ in shape")
    if not p.any() or not t.any():
        return None
    sp, st = _surface(p), _surface(t)
    to_t = distance_transform_edt(~st)[sp]
    to_p = distance_transform_edt(~sp)[st]
    return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))


def mean_dice(per_image: list[list[float | None]], structures: list[str]) -> tuple[float | None, dict]:
    """``(mean over structures, {structure: mean over images})`` from a ``[n_images][n_structures]`` table."""
    per_structure: dict[str, float | None] = {}
    for j, name in enumerate(structures):
        values = [row[j] for row in per_image if row[j] is not None]
        per_structure[name] = float(np.mean(values)) if values else None
    defined = [v for v in per_structure.values() if v is not None]
    return (float(np.mean(defined)) if defined else None), per_structure

"""Seeded splits grouped by patient (or lesion): every group lands in exactly one split.

Groups are shuffled with the seed and filled into train/val/test until each split holds its fraction of the
*images* (not of the groups), so a few patients with many follow-ups do not skew the sizes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from spft.data.contract import SPLITS


def grouped_split(groups: list[str], fractions: list[float], seed: int) -> list[str]:
    """Assign ``train``/``val``/``test`` per row so that rows of one group share a split.

    >>> grouped_split(["a", "a", "b", "c", "d"], [0.6, 0.2, 0.2], seed=0).count("train") >= 2
    True
    """
    counts = Counter(groups)
    order = sorted(counts)  # sorted first: the result must not depend on row order
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    total = len(groups)
    bounds = np.cumsum(fractions) * total
    assigned: dict[str, str] = {}
    filled = 0
    for group in order:
        # put the group in the first split whose quota is not yet reached
        mid = filled + counts[group] / 2.0
        index = int(np.searchsorted(bounds, mid, side="right"))
        assigned[group] = SPLITS[min(index, len(SPLITS) - 1)]
        filled += counts[group]
    return [assigned[g] for g in groups]


def stratified_grouped_split(groups: list[str], strata: list[str], fractions: list[float], seed: int) -> list[str]:
    """:func:`grouped_split` within each stratum (e.g. the diagnosis), so every split keeps the class mix.

    A group belongs to the stratum of its first row; a group never spans two splits.

    >>> s = stratified_grouped_split(["a", "a", "b", "c"], ["x", "x", "y", "y"], [0.5, 0.5, 0.0], seed=0)
    >>> s[0] == s[1]
    True
    """
    stratum_of: dict[str, str] = {}
    for group, stratum in zip(groups, strata):
        stratum_of.setdefault(group, stratum)
    assigned: dict[str, str] = {}
    for stratum in sorted(set(stratum_of.values())):
        rows = [g for g in groups if stratum_of[g] == stratum]
        assigned.update(zip(rows, grouped_split(rows, fractions, seed)))
    return [assigned[g] for g in groups]

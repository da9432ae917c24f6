"""Seeded splits grouped by patient (or lesion): every group lands in exactly one split.

:func:`grouped_split`: groups are shuffled with the seed and filled into train/val/test until each split holds its
fraction of the *images* (not of the groups), so a few patients with many follow-ups do not skew the sizes.

:func:`multilabel_grouped_split` (what the CSV dataset uses when it makes the split): the same, stratified on a
multi-label matrix by iterative stratification (Sechidis, Tsoumakas & Vlahavas, ECML PKDD 2011) applied to whole
groups: the label with the fewest remaining positive groups is distributed first, each of its groups going to the
split that still lacks most positives of it, so a finding with 6 positive patients out of 200 reaches train, val and
test. Deterministic in the seed, independent of row order; a split with fraction 0 receives nothing.
"""

from __future__ import annotations

import re
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


METHOD_GROUPED = "grouped"
METHOD_STRATIFIED = "iterative-stratified-grouped"


def multilabel_grouped_split(groups: list[str], labels: np.ndarray, fractions: list[float], seed: int
                             ) -> tuple[list[str], str]:
    """Assign ``train``/``val``/``test`` per row, grouped by ``groups`` and stratified on ``labels`` ``[N, C]``
    (1 = positive; 0 and NaN are not). Returns the splits and the method used: :data:`METHOD_STRATIFIED`, or
    :data:`METHOD_GROUPED` (plain :func:`grouped_split`) when no row has a positive label.

    >>> rows = ["a", "b", "c", "d", "e", "f"]
    >>> y = np.array([[1], [1], [1], [0], [0], [0]], dtype=float)
    >>> splits, method = multilabel_grouped_split(rows, y, [0.34, 0.33, 0.33], seed=0)
    >>> sorted(s for s, lab in zip(splits, y[:, 0]) if lab == 1), method
    (['test', 'train', 'val'], 'iterative-stratified-grouped')
    """
    positive = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0) > 0.5
    if positive.ndim != 2 or positive.shape[0] != len(groups):
        raise ValueError(f"labels must be [{len(groups)}, C], got {positive.shape}")
    if not positive.any():
        return grouped_split(groups, fractions, seed), METHOD_GROUPED
    names = sorted(set(groups))  # sorted first: the result must not depend on row order
    where = {g: i for i, g in enumerate(names)}
    row_group = np.fromiter((where[g] for g in groups), dtype=np.int64, count=len(groups))
    counts = np.zeros((len(names), positive.shape[1]), dtype=np.float64)  # positive images per group and class
    np.add.at(counts, row_group, positive.astype(np.float64))
    sizes = np.bincount(row_group, minlength=len(names)).astype(np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    frac = np.asarray(fractions, dtype=np.float64)
    open_splits = np.flatnonzero(frac > 0)
    want_rows = frac * len(groups)
    want_pos = frac[:, None] * counts.sum(0)[None, :]
    assigned = np.full(len(names), -1)

    def pick(need: np.ndarray | None) -> int:
        cands = open_splits
        for score in ((need,) if need is not None else ()) + (want_rows,):
            best = score[cands].max()
            cands = cands[np.isclose(score[cands], best)]
        return int(cands[0] if len(cands) == 1 else rng.choice(cands))

    def put(g: int, split: int) -> None:
        assigned[g] = split
        want_pos[split] -= counts[g]
        want_rows[split] -= sizes[g]

    while True:
        left = assigned < 0
        carriers = (counts[left] > 0).sum(0)  # unassigned groups with a positive, per class
        active = np.flatnonzero(carriers > 0)
        if not active.size:
            break
        j = int(active[np.argmin(carriers[active])])  # the rarest label first
        for g in order:
            if assigned[g] < 0 and counts[g, j] > 0:
                put(g, pick(want_pos[:, j]))
    for g in order:  # groups without any positive: wherever images are still wanted
        if assigned[g] < 0:
            put(g, pick(None))
    return [SPLITS[assigned[i]] for i in row_group], METHOD_STRATIFIED


def split_method(policy: str) -> str:
    """The short name of the method behind a table's split policy (recorded as ``split_method`` in data.json):
    ``column`` (the CSV's split column), ``folders`` (``data.name: folder``'s split folders),
    ``iterative-stratified-grouped`` / ``grouped`` (made by spft), ``official`` (a real dataset's official split,
    validation carved from its train part) or ``other``."""
    lowered = policy.lower()
    if lowered.startswith("split from the folders"):
        return "folders"
    found = re.search(r"method ([\w-]+)", policy)
    if found:
        return found.group(1)
    if lowered.startswith("split from column"):
        return "column"
    if "official" in lowered:
        return "official"
    if "grouped" in lowered:
        return METHOD_GROUPED
    return "other"


def stratification_labels(labels, classes: list[str], data_cfg):
    """The columns of ``labels`` a real-dataset adapter stratifies its split on: the classes that will be trained
    (``data.label_columns`` when set, in the dataset's order), else all of them. Unknown names are left to
    :func:`spft.data.registry.select_classes`, which refuses them once the table is read."""
    chosen = [j for j, c in enumerate(classes) if c in set(getattr(data_cfg, "label_columns", None) or ())]
    return labels[:, chosen] if chosen else labels

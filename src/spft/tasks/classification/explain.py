"""Heatmap files for ``spft predict --heatmaps DIR`` (the pointing game on phantoms that scores them:
:mod:`spft.tasks.classification.pointing`).

:func:`write_heatmaps` saves, for each predicted image and each chosen class (default: the classes predicted
positive at the run's thresholds), the map on the image's own pixels as ``DIR/<name>__<class>.npy`` (float32,
``H x W``, non-negative, higher = more evidence), an overlay ``DIR/<name>__<class>.png`` (the image's own size) and
a figure to read ``DIR/figures/<name>__<class>.png`` (the image, the overlay, a colour bar, the class and its
predicted probability in the title: :func:`spft.reporting.figures.heatmap_figure`), and lists them in
``DIR/heatmaps.csv`` (``id, class, prob, npy, png, figure``; file names relative to ``DIR``). ``<name>`` is the image's
stem, sanitised to ``[A-Za-z0-9._-]``; images whose stems collide (same name in different folders, or ``a.png`` and
``a.jpg``) are named by their path below the folder they share, and anything still equal (the same file given twice)
gets ``_2``, ``_3`` ... Methods (:mod:`spft.models.heatmaps`): ``gradcam`` (ViT: the tokens entering the last block;
CNN: the last stage) per class, or ``rollout`` (attention rollout, ViT only, class-agnostic: one map per image,
class ``rollout``, whatever the classes).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from spft.data.inputs import Failure, InputImage
from spft.errors import ConfigError, DataError, SpftError

log = logging.getLogger(__name__)

METHODS = ("gradcam", "rollout")
LISTING = "heatmaps.csv"
FIGURES = "figures"  # DIR/figures/<name>__<class>.png: image, overlay, colour bar, class and probability
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 100) -> str:
    """``text`` as a file-name part: runs of anything but ``[A-Za-z0-9._-]`` become ``_``; no leading dot or dash."""
    name = _UNSAFE.sub("_", str(text)).lstrip(".-_")[:limit].rstrip("._")
    return name or "image"


def _dedupe(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 2
        while candidate.lower() in seen:  # case-insensitive: macOS / Windows file systems
            candidate, k = f"{name}_{k}", k + 1
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def unique_names(ids: list[str]) -> list[str]:
    """One file-name stem per image id (see the module docstring), unique ignoring case."""
    names = [safe_name(PurePath(i).stem) for i in ids]
    groups: dict[str, list[int]] = defaultdict(list)
    for k, name in enumerate(names):
        groups[name.lower()].append(k)
    for members in groups.values():
        distinct = list(dict.fromkeys(ids[k] for k in members))  # the same id twice: _2 from _dedupe below
        if len(distinct) < 2:
            continue
        paths = [PurePath(i) for i in distinct]
        parents = [p.parent.parts for p in paths]
        shared = 0
        while all(len(pp) > shared for pp in parents) and len({pp[shared] for pp in parents}) == 1:
            shared += 1
        below = [PurePath(*p.parts[shared:]) for p in paths]
        without = [safe_name(str(b.with_suffix("")) if b.suffix else str(b), 150) for b in below]
        with_suffix = [safe_name(str(b), 150) for b in below]
        chosen = without if len({n.lower() for n in without}) == len(without) else with_suffix
        by_id = dict(zip(distinct, chosen))
        for k in members:
            names[k] = by_id[ids[k]]
    return _dedupe(names)


def check_request(model, classes, method: str) -> list[str] | None:
    """Validate ``classes`` (None: the predicted positives; ``"all"``; a list or comma-separated names) and
    ``method`` against ``model`` before anything runs; the class list, or None for the predicted positives."""
    from spft.models import heatmaps as hm

    if method not in METHODS:
        raise ConfigError(f"heatmap method: expected {' or '.join(METHODS)}, got {method!r}")
    if method == "rollout" and not hm.is_vit(model.model):
        raise ConfigError(f"heatmap method rollout needs a ViT encoder (attention weights); "
                          f"{type(model.model.encoder).__name__} is a CNN: use gradcam")
    if classes is None:
        return None
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    names = [c for c in names if c]
    if names == ["all"]:
        return list(model.classes)
    if method == "rollout":
        raise ConfigError("heatmap classes: attention rollout is class-agnostic (one map per image); "
                          "give classes with the gradcam method")
    unknown = [c for c in names if c not in model.classes]
    if unknown or not names:
        raise ConfigError(f"heatmap classes: unknown class(es) {unknown or classes!r} "
                          f"(classes: {', '.join(model.classes)}, or all)")
    return list(dict.fromkeys(names))


def _picture(model, item):
    from spft.data.io import array_to_image, load_image

    if isinstance(item, InputImage):
        return load_image(item.path, color=model.color)
    if isinstance(item, (str, Path)):
        return load_image(item, color=model.color)
    return array_to_image(item, model.color)


def iter_maps(model, jobs: list[tuple[object, list[int | None]]], method: str = "gradcam", batch_size: int = 8,
              on_error=None, progress=None) -> Iterator[tuple[int, object, dict]]:
    """For each ``(image, class indices)`` of ``jobs``: ``(job index, PIL picture, {class index: map})`` with the
    maps on the picture's own pixels (:func:`spft.models.heatmaps.to_original`). Grad-CAM runs ``batch_size``
    (image, class) pairs per forward/backward pass; rollout one map per image under the key None. Images that
    cannot be read go to ``on_error(job index, message)``; ``progress(n)`` is told of every pair done."""
    import torch

    from spft.models import heatmaps as hm

    pending: list[tuple[int, object, torch.Tensor, int | None]] = []
    done: dict[int, dict] = {}
    need: dict[int, int] = {}
    pictures: dict[int, object] = {}

    def flush() -> Iterator[tuple[int, object, dict]]:
        if not pending:
            return
        pixels = torch.stack([p for _, _, p, _ in pending]).to(model.device)
        if method == "rollout":
            maps = hm.attention_rollout(model.model, pixels)
        else:
            maps = hm.gradcam(model.model, pixels, [c for *_, c in pending])
        for (k, picture, _, c), heat in zip(pending, maps):
            done.setdefault(k, {})[c] = hm.to_original(heat, model.preprocessing, *picture.size)
            if len(done[k]) == need[k]:
                yield k, pictures.pop(k), done.pop(k)
        if progress:
            progress(len(pending))
        pending.clear()

    for k, (item, class_indices) in enumerate(jobs):
        wanted = [None] if method == "rollout" else list(dict.fromkeys(class_indices))
        if not wanted:
            continue
        try:
            picture = _picture(model, item)
            pixels = model.transform(picture)
        except (SpftError, OSError, ValueError) as exc:
            if on_error is None:
                raise
            on_error(k, str(exc) if isinstance(exc, SpftError) else f"{type(exc).__name__}: {exc}")
            continue
        need[k], pictures[k] = len(wanted), picture
        for c in wanted:
            pending.append((k, picture, pixels, c))
            if len(pending) >= batch_size:
                yield from flush()
    yield from flush()


def write_heatmaps(model, items: list, item_ids: list[str], table: pd.DataFrame, out_dir: str | Path, classes=None,
                   method: str = "gradcam", batch_size: int = 8,
                   progress: bool = False) -> tuple[pd.DataFrame, list[Failure], Path]:
    """Heatmap files for the rows of ``table`` (a :meth:`Classifier.run` table) into ``out_dir``: ``(listing,
    failures, listing file)``. ``items`` / ``item_ids``: the inputs the table was made from (paths,
    :class:`InputImage`, arrays, PIL images) and their ids, in the same order, failed ones included."""
    from matplotlib.pyplot import close
    from tqdm.auto import tqdm

    from spft.models.heatmaps import overlay
    from spft.reporting.figures import heatmap_figure

    chosen = check_request(model, classes, method)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--heatmaps {out}: exists and is not a folder")
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in table["id"]]
    rows = _align(items, [str(i) for i in item_ids], ids)
    jobs = []
    for r, item in enumerate(rows):
        if method == "rollout":
            names = ["rollout"]
        elif chosen is not None:
            names = chosen
        else:
            names = [c for c in model.classes if int(table[f"pred_{c}"].iloc[r]) == 1]
        jobs.append((item, [None] if method == "rollout" else [model.classes.index(c) for c in names]))
    stems = unique_names(ids)
    class_files = dict(zip(model.classes, _dedupe([safe_name(c) for c in model.classes])))
    failures: list[Failure] = []
    listing = []
    total = sum(len(c) for _, c in jobs)
    bar = tqdm(total=total, unit="map", desc="heatmaps", disable=not progress, dynamic_ncols=True)
    try:
        for r, picture, maps in iter_maps(model, jobs, method, batch_size, progress=bar.update,
                                          on_error=lambda k, e: failures.append(Failure(ids[k], f"heatmap: {e}"))):
            for c, heat in maps.items():
                name = "rollout" if c is None else model.classes[c]
                base = f"{stems[r]}__{'rollout' if c is None else class_files[name]}"
                np.save(out / f"{base}.npy", heat.astype(np.float32, copy=False))
                overlay(picture, heat).save(out / f"{base}.png", optimize=True)
                prob = float(table[f"prob_{name}"].iloc[r]) if c is not None else float("nan")
                shown = PurePath(ids[r]).name or ids[r]  # a long folder path would run off the figure
                title = (f"{shown} — attention rollout (class-agnostic)" if c is None
                         else f"{shown} — {name}: predicted probability {prob:.3f}")
                fig = heatmap_figure(picture, heat, title, "rollout" if c is None else "Grad-CAM")
                fig.savefig(out / FIGURES / f"{base}.png", dpi=100)  # not figures.save: a stem may hold dots
                close(fig)
                listing.append({"id": ids[r], "class": name, "prob": prob, "npy": f"{base}.npy",
                                "png": f"{base}.png", "figure": f"{FIGURES}/{base}.png"})
    finally:
        bar.close()
    frame = pd.DataFrame(listing, columns=["id", "class", "prob", "npy", "png", "figure"])
    listing_file = out / LISTING
    from spft.atomic import atomic_write_text
    from spft.csvsafe import frame_to_csv

    atomic_write_text(listing_file, frame_to_csv(frame))  # class names / ids as text, never formulas
    log.info("%d heatmap(s) (%s) of %d image(s) -> %s", len(frame), method, frame["id"].nunique(), out)
    return frame, failures, listing_file


def _align(items: list, item_ids: list[str], ids: list[str]) -> list:
    """The items behind the table's rows: the table keeps the inputs' order and leaves failed ones out."""
    out, k = [], 0
    for id_ in ids:
        while k < len(items) and item_ids[k] != id_:
            k += 1
        if k == len(items):
            raise DataError(f"heatmaps: table row {id_!r} is not among the inputs")
        out.append(items[k])
        k += 1
    return out


# --- pointing game on phantoms ----------------------------------------------------------------------------------

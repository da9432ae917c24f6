"""Deterministic synthetic phantoms: grey chest radiographs (multi-label) and RGB skin lesions (multi-class).

This module owns the phantom renderers (numpy + PIL only), their label vocabularies and default prevalences,
and the writers that lay them out on disk (``images/``, ``masks/``, ``boxes.csv``, ``labels.csv``) with a
grouped train/val/test split. Every image is drawn from its own child seed, so output is byte-identical for a
seed whatever the generation order; ``labels.csv`` is written last and atomically (absent = incomplete).
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from spft.atomic import atomic_write_text
from spft.errors import DataError

logger = logging.getLogger(__name__)

# Bump whenever rendering changes: the cache folder name includes it, so a stale cached set is never reused.
GENERATOR_VERSION = 1

CXR_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax", "Consolidation",
)
CXR_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.12, "Cardiomegaly": 0.06, "Effusion": 0.14, "Infiltration": 0.18,
    "Mass": 0.06, "Nodule": 0.07, "Pneumothorax": 0.05, "Consolidation": 0.05,
}
LESION_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
_LESION_WEIGHTS = {"akiec": 0.08, "bcc": 0.08, "bkl": 0.12, "df": 0.08, "mel": 0.12, "nv": 0.45, "vasc": 0.07}
LESION_PREVALENCE: dict[str, float] = {k: v / sum(_LESION_WEIGHTS.values()) for k, v in _LESION_WEIGHTS.items()}

SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
MASK_NAMES = ("heart", "left_lung", "right_lung")
BOX_COLUMNS = ("image", "finding", "x_min", "y_min", "x_max", "y_max")
Box = tuple[str, int, int, int, int]

_CXR_TAG, _LESION_TAG = 1, 2  # seed-sequence tags so the two generators never share child streams
_PNG_LEVEL = 1  # fast zlib level: phantom PNGs are small and written by the thousand

# ----------------------------------------------------------------------------------------------------------------
# small vectorised drawing helpers (coordinates are fractions of the image side; u = x, v = y)
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] as read-only (u, v) float32 arrays of shape (size, size)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    v, u = np.meshgrid(axis, axis, indexing="ij")
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside the ellipse centred (cx, cy) with semi-axes (a, b)."""
    du, dv = u - cx, v - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    return np.sqrt((du / a) ** 2 + (dv / b) ** 2)


def _soft(radius: np.ndarray, scale: float, size: int, edge_px: float = 1.0) -> np.ndarray:
    """Soft inside-indicator of ``radius < 1`` with an edge roughly ``edge_px`` pixels wide."""
    return _sigmoid((1.0 - radius) * scale * size / edge_px)


def _mix(img: np.ndarray, value: np.ndarray | float, alpha: np.ndarray) -> np.ndarray:
    return img + alpha * (value - img)


def _smooth_noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Unit-variance-ish low-frequency noise: a (rows, cols) Gaussian grid upsampled bicubically to size x size."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Pixel box (x_min, y_min, x_max, y_max) of a boolean mask, max exclusive (continuous coords); None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _add_box(boxes: list[Box], finding: str, mask: np.ndarray) -> None:
    box = _bbox(mask)
    if box is not None:
        boxes.append((finding, *box))


# ----------------------------------------------------------------------------------------------------------------
# chest radiograph phantom
# ----------------------------------------------------------------------------------------------------------------


def _draw_anatomy(rng: np.random.Generator) -> dict[str, float]:
    """Patient-level geometry (shared by a patient's follow-ups): scale, offsets and organ proportions."""
    return {
        "scale": rng.uniform(0.94, 1.05), "dx": rng.uniform(-0.025, 0.025), "dy": rng.uniform(-0.025, 0.025),
        "lung_a": rng.uniform(0.125, 0.14), "lung_b": rng.uniform(0.28, 0.31), "lung_dx": rng.uniform(0.175, 0.19),
        "ctr": rng.uniform(0.36, 0.44), "rib_freq": rng.uniform(8.0, 10.0), "rib_phase": rng.uniform(0, 2 * math.pi),
    }


def _cxr_geometry(rng: np.random.Generator, anatomy: dict[str, float], findings: set[str]) -> dict:
    """Per-image organ placement (with small jitter), modified by the geometric findings."""
    s = anatomy["scale"] * rng.uniform(0.98, 1.02)
    cx = 0.5 + anatomy["dx"] + rng.uniform(-0.012, 0.012)
    cy = 0.5 + anatomy["dy"] + rng.uniform(-0.012, 0.012)
    a, b, off = anatomy["lung_a"] * s, anatomy["lung_b"] * s, anatomy["lung_dx"] * s
    lungs = {  # patient's right lung is on the image's left
        "right_lung": {"cx": cx - off, "cy": cy - 0.02 * s, "a": a, "b": b, "side": -1.0},
        "left_lung": {"cx": cx + off, "cy": cy - 0.02 * s, "a": a, "b": b, "side": 1.0},
    }
    thorax_w = 2 * (off + a)
    ctr = rng.uniform(0.56, 0.66) if "Cardiomegaly" in findings else anatomy["ctr"] + rng.uniform(-0.02, 0.02)
    heart_b = (0.135 if "Cardiomegaly" in findings else 0.11) * s
    heart = {"cx": cx + 0.035 * s, "cy": cy + 0.27 * s - heart_b, "a": ctr * thorax_w / 2, "b": heart_b}
    geo = {"s": s, "cx": cx, "cy": cy, "lungs": lungs, "heart": heart}
    geo["sides"] = {f: ("left_lung" if rng.random() < 0.5 else "right_lung") for f in CXR_FINDINGS}
    if "Atelectasis" in findings:
        lung = lungs[geo["sides"]["Atelectasis"]]
        lung["b_full"], lung["cy_full"] = lung["b"], lung["cy"]
        new_b = lung["b"] * rng.uniform(0.62, 0.74)
        lung["cy"] -= lung["b"] - new_b  # keep the apex, raise the hemidiaphragm
        lung["b"] = new_b
    return geo


def _rib_texture(u: np.ndarray, v: np.ndarray, lung: dict, anatomy: dict[str, float]) -> np.ndarray:
    """Faint curved rib bands (posterior ribs sag laterally)."""
    lateral = (u - lung["cx"]) * lung["side"]
    phase = 2 * math.pi * anatomy["rib_freq"] * (v + 1.2 * lateral**2 - 0.25 * lateral) + anatomy["rib_phase"]
    return 0.08 * (0.5 + 0.5 * np.sin(phase)) ** 3


def _render_lungs(img, u, v, size, geo, anatomy, rng, findings, boxes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw both lung fields (with pneumothorax/atelectasis variants); return the image and lung fields (f < 1)."""
    fields = {}
    for name, lung in geo["lungs"].items():
        f = _ellipse(u, v, lung["cx"], lung["cy"], lung["a"], lung["b"])
        fields[name] = f
        tissue = 0.17 + _rib_texture(u, v, lung, anatomy) + 0.02 * _smooth_noise(rng, size, (12, 12))
        inside = _soft(f, lung["a"], size, 1.2)
        if "Pneumothorax" in findings and geo["sides"]["Pneumothorax"] == name:
            k = rng.uniform(0.5, 0.66)  # collapsed lung anchored medially and inferiorly
            ccx = lung["cx"] - lung["side"] * lung["a"] * (1 - k) * 0.9
            ccy = lung["cy"] + lung["b"] * (1 - k) * 0.85
            fc = _ellipse(u, v, ccx, ccy, lung["a"] * k, lung["b"] * k)
            img = _mix(img, 0.02, inside)  # lucent pleural space, no lung texture
            img = _mix(img, tissue + 0.14, _soft(fc, lung["a"] * k, size, 1.0))  # denser collapsed lung
            line = np.exp(-(((fc - 1.0) * lung["a"] * k * size / 1.2) ** 2))  # visible visceral pleural line
            img = img + 0.5 * line * inside
            _add_box(boxes, "Pneumothorax", (f < 1) & (fc > 1))
        else:
            img = _mix(img, tissue, inside)
        if "b_full" in lung:  # atelectasis: bright plate-like band just above the raised hemidiaphragm
            _atelectasis_band(img, u, v, size, lung, rng, boxes)
    return img, fields


def _atelectasis_band(img, u, v, size, lung, rng, boxes) -> None:
    """In-place: add a thick bright oblique band in the lower lung; box covers band and the lost lung volume."""
    level = lung["cy"] + lung["b"] * rng.uniform(0.35, 0.55)
    tilt = rng.uniform(-0.25, 0.25)
    f = _ellipse(u, v, lung["cx"], lung["cy"], lung["a"], lung["b"])
    band = np.exp(-(((v - level - tilt * (u - lung["cx"])) / 0.022) ** 2)) * _soft(f, lung["a"], size, 1.0)
    img += 0.38 * band
    lost = (_ellipse(u, v, lung["cx"], lung["cy_full"], lung["a"], lung["b_full"]) < 1) & (f >= 1)
    _add_box(boxes, "Atelectasis", lost | (band > 0.5))


def _render_base(rng, size, geo, anatomy, findings, boxes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Background, soft-tissue body, lungs, spine/mediastinum and heart; returns image and anatomical masks."""
    u, v = _grid(size)
    s, cx, cy = geo["s"], geo["cx"], geo["cy"]
    img = np.full((size, size), 0.04, dtype=np.float32)
    body = _ellipse(u, v, cx, cy + 0.06 * s, 0.45 * s, 0.52 * s)
    img = _mix(img, 0.42 + 0.03 * _smooth_noise(rng, size, (6, 6)), _soft(body, 0.45 * s, size, 3.0))
    img, lung_fields = _render_lungs(img, u, v, size, geo, anatomy, rng, findings, boxes)
    spine = _sigmoid((0.03 * s - np.abs(u - cx)) * size / 1.0) * _sigmoid((v - 0.08) * size / 2.0)
    img = _mix(img, 0.5 + 0.06 * np.sin(v * 2 * math.pi * 14), 0.8 * spine)
    h = geo["heart"]
    heart_f = _ellipse(u, v, h["cx"], h["cy"], h["a"], h["b"], angle=-0.12)
    img = _mix(img, 0.6, _soft(heart_f, h["b"], size, 1.2))
    heart = heart_f < 1
    masks = {"heart": heart}
    masks.update({name: (f < 1) & ~heart for name, f in lung_fields.items()})
    if "Cardiomegaly" in findings:
        _add_box(boxes, "Cardiomegaly", heart)
    return img, masks


def _sample_in_lung(rng, geo, lung_name: str, inner: float, avoid_heart: bool = True) -> tuple[float, float]:
    """A point inside the inner ``inner`` fraction of a lung ellipse, preferably outside the heart."""
    lung, h = geo["lungs"][lung_name], geo["heart"]
    ang = rng.uniform(0, 2 * math.pi, 32)
    rad = inner * np.sqrt(rng.uniform(0, 1, 32))
    px, py = lung["cx"] + rad * lung["a"] * np.cos(ang), lung["cy"] + rad * lung["b"] * np.sin(ang)
    ok = ((px - h["cx"]) / h["a"]) ** 2 + ((py - h["cy"]) / h["b"]) ** 2 > 1.4 if avoid_heart else np.ones(32, bool)
    i = int(np.argmax(ok)) if ok.any() else 0
    return float(px[i]), float(py[i])


def _render_disc(img, u, v, size, center, radius, value, rng, lobulated: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bright disc (optionally lobulated); returns the image and the disc's hard mask."""
    du, dv = u - center[0], v - center[1]
    r = np.sqrt(du**2 + dv**2)
    edge = radius
    if lobulated:
        theta = np.arctan2(dv, du)
        edge = radius * (1 + 0.08 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.05 * np.sin(5 * theta))
    alpha = _sigmoid((edge - r) * size / 0.7)
    return _mix(img, value, 0.95 * alpha), r < edge


def _render_focal(img, rng, size, geo, findings, boxes) -> np.ndarray:
    """Nodules (1-3 small discs) and Mass (one large lobulated disc), inside the lungs."""
    u, v = _grid(size)
    if "Nodule" in findings:
        for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))):
            center = _sample_in_lung(rng, geo, "left_lung" if rng.random() < 0.5 else "right_lung", 0.75)
            img, mask = _render_disc(img, u, v, size, center, rng.uniform(0.032, 0.042), rng.uniform(0.8, 0.88),
                                     rng, False)
            _add_box(boxes, "Nodule", mask)
    if "Mass" in findings:
        center = _sample_in_lung(rng, geo, geo["sides"]["Mass"], 0.45)
        img, mask = _render_disc(img, u, v, size, center, rng.uniform(0.09, 0.12), rng.uniform(0.68, 0.76), rng, True)
        _add_box(boxes, "Mass", mask)
    return img


def _render_diffuse(img, rng, size, geo, masks, findings, boxes) -> np.ndarray:
    """Infiltration (streaky patchy texture), Consolidation (dense soft blotch), Effusion (fluid level)."""
    u, v = _grid(size)
    if "Infiltration" in findings:
        names = ["left_lung", "right_lung"] if rng.random() < 0.4 else [geo["sides"]["Infiltration"]]
        top = rng.uniform(0.0, 0.35)  # fraction of the lung height left clear at the top
        region = np.zeros_like(img, dtype=bool)
        for name in names:  # one box per involved lung
            lung = geo["lungs"][name]
            part = masks[name] & (v > lung["cy"] - lung["b"] + top * 2 * lung["b"])
            _add_box(boxes, "Infiltration", part)
            region |= part
        fine = _smooth_noise(rng, size, (max(size // 5, 4),) * 2)
        streaks = _smooth_noise(rng, size, (max(size // 16, 3), max(size // 4, 6)))  # vertically elongated
        patchy = np.clip(fine + 0.8 * streaks - 0.2, 0.0, 1.8) * region
        img = img + 0.16 * patchy
    if "Consolidation" in findings:
        img = _consolidation(img, u, v, rng, size, geo, masks, boxes)
    if "Effusion" in findings:
        lung = geo["lungs"][geo["sides"]["Effusion"]]
        field = _ellipse(u, v, lung["cx"], lung["cy"], lung["a"], lung["b"]) < 1.04
        level = lung["cy"] + lung["b"] * rng.uniform(0.2, 0.45)
        lateral = np.clip((u - lung["cx"]) * lung["side"] / lung["a"], 0, None)
        meniscus = level - 0.045 * lateral**2  # flat level curving up laterally
        fluid = _sigmoid((v - meniscus) * size / 0.8) * field
        img = _mix(img, 0.62, fluid)
        _add_box(boxes, "Effusion", fluid > 0.5)
    return img


def _consolidation(img, u, v, rng, size, geo, masks, boxes) -> np.ndarray:
    """Dense, soft-edged blotch (a few merged Gaussians) in the lower zone of one lung."""
    name = geo["sides"]["Consolidation"]
    lung = geo["lungs"][name]
    cx0 = lung["cx"] + lung["side"] * rng.uniform(-0.1, 0.4) * lung["a"]
    cy0 = lung["cy"] + rng.uniform(0.05, 0.35) * lung["b"]
    blob = 0.25 * _smooth_noise(rng, size, (max(size // 10, 4),) * 2)
    for _ in range(6):
        gx, gy = cx0 + rng.normal(0, 0.035), cy0 + rng.normal(0, 0.05)
        sig = rng.uniform(0.04, 0.06)
        blob += np.exp(-((u - gx) ** 2 + (v - gy) ** 2) / (2 * sig**2))
    field = _ellipse(u, v, lung["cx"], lung["cy"], lung["a"], lung["b"])
    dense = _sigmoid((blob - 0.6) * 4.0) * _soft(field, lung["a"], size, 1.5) * ~masks["heart"]
    img = _mix(img, 0.64, 0.92 * dense)
    _add_box(boxes, "Consolidation", dense > 0.5)
    return img


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global contrast/brightness jitter plus noise, quantised to uint8."""
    contrast, brightness = rng.uniform(0.88, 1.12), rng.uniform(-0.04, 0.04)
    img = (img - 0.4) * contrast + 0.4 + brightness
    img = img + 0.025 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_cxr(
    rng: np.random.Generator, image_size: int, findings: set[str], *, anatomy_rng: np.random.Generator | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Box]]:
    """Render one chest radiograph phantom.

    Args:
        rng: Generator for this image (jitter, finding placement, noise).
        image_size: Side of the square output image in pixels.
        findings: Subset of :data:`CXR_FINDINGS` to draw.
        anatomy_rng: Generator for the patient's anatomy, so follow-ups of a patient share it; defaults to ``rng``.

    Returns:
        ``(image, masks, boxes)``: a uint8 (H, W) image; boolean masks ``heart``, ``left_lung``, ``right_lung``
        (the patient's left lung is on the image's right); and ``(finding, x_min, y_min, x_max, y_max)`` pixel
        boxes, one per finding instance (max exclusive: a box covering pixel columns 3..5 has x_min=3, x_max=6).

    Raises:
        ValueError: On an unknown finding or an image_size below 16.
    """
    unknown = set(findings) - set(CXR_FINDINGS)
    if unknown:
        raise DataError(f"unknown findings {sorted(unknown)}; allowed: {CXR_FINDINGS}")
    if image_size < 16:
        raise DataError(f"image_size must be >= 16, got {image_size}")
    anatomy = _draw_anatomy(anatomy_rng if anatomy_rng is not None else rng)
    geo = _cxr_geometry(rng, anatomy, set(findings))
    boxes: list[Box] = []
    img, masks = _render_base(rng, image_size, geo, anatomy, findings, boxes)
    img = _render_diffuse(img, rng, image_size, geo, masks, findings, boxes)
    img = _render_focal(img, rng, image_size, geo, findings, boxes)
    order = {f: i for i, f in enumerate(CXR_FINDINGS)}
    boxes.sort(key=lambda b: order[b[0]])  # stable: instances keep their drawing order
    return _finish(img, rng), masks, boxes


# ----------------------------------------------------------------------------------------------------------------
# skin lesion phantom
# ----------------------------------------------------------------------------------------------------------------

_LESION_STYLE = {  # base colour (RGB 0..1), radius range (fraction of side), outline irregularity
    "akiec": ((0.80, 0.42, 0.38), (0.20, 0.28), 0.06),
    "bcc": ((0.93, 0.72, 0.72), (0.18, 0.25), 0.04),
    "bkl": ((0.72, 0.56, 0.40), (0.20, 0.28), 0.05),
    "df": ((0.50, 0.32, 0.24), (0.12, 0.16), 0.02),
    "mel": ((0.28, 0.16, 0.12), (0.24, 0.32), 0.09),
    "nv": ((0.50, 0.32, 0.22), (0.18, 0.27), 0.02),
    "vasc": ((0.60, 0.10, 0.28), (0.11, 0.19), 0.03),
}


def draw_lesion(rng: np.random.Generator, cls: str) -> dict:
    """Draw a lesion's fixed appearance (shared by all its images) for class ``cls`` of :data:`LESION_CLASSES`.

    Args:
        rng: Generator for the lesion.
        cls: Lesion class name.

    Returns:
        Parameters consumed by :func:`render_lesion`.
    """
    colour, (r_lo, r_hi), irregular = _LESION_STYLE[cls]
    return {
        "cls": cls, "radius": rng.uniform(r_lo, r_hi), "aspect": rng.uniform(0.75, 1.0),
        "colour": np.clip(np.array(colour) * rng.uniform(0.92, 1.08) + rng.normal(0, 0.012, 3), 0, 1),
        "harm": rng.normal(0, irregular, 5) * np.array([1.0, 0.8, 0.6, 0.45, 0.35]),  # outline harmonics k = 2..6
        "harm_phase": rng.uniform(0, 2 * math.pi, 5),
        "skin": np.array([0.88, 0.70, 0.58]) + rng.normal(0, 0.03, 3), "seed": int(rng.integers(2**31)),
    }


def _lesion_shape(u, v, size, lesion, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft lesion mask, normalised radius (0 centre .. 1 border) and angle, with per-image pose jitter."""
    cx, cy = 0.5 + rng.normal(0, 0.04), 0.5 + rng.normal(0, 0.04)
    rot = rng.uniform(0, 2 * math.pi)
    du, dv = u - cx, v - cy
    c, s = math.cos(rot), math.sin(rot)
    du, dv = c * du + s * dv, (-s * du + c * dv) / lesion["aspect"]
    r, theta = np.sqrt(du**2 + dv**2), np.arctan2(dv, du)
    wobble = np.zeros_like(r)
    for k, (amp, phase) in enumerate(zip(lesion["harm"], lesion["harm_phase"]), start=2):
        wobble += np.float32(amp) * np.cos(np.float32(k) * theta + np.float32(phase))
    edge = lesion["radius"] * rng.uniform(0.92, 1.08) * (1 + wobble)
    soft_px = 2.5 if lesion["cls"] in ("akiec", "df") else 1.0
    return _sigmoid((edge - r) * size / soft_px), r / np.maximum(edge, 1e-3), theta


def _lesion_colour(size, lesion, rnorm, theta, rng) -> np.ndarray:
    """Class-specific colour/texture field (H, W, 3) inside the lesion."""
    cls, base = lesion["cls"], lesion["colour"]
    tex = np.random.default_rng(lesion["seed"])  # lesion-fixed texture pattern
    col = np.broadcast_to(base, rnorm.shape + (3,)).astype(np.float32)
    n1 = _smooth_noise(tex, size, (10, 10))[..., None]
    n2 = _smooth_noise(rng, size, (32, 32))[..., None]
    if cls == "mel":
        black, blue = np.array([0.10, 0.07, 0.08]), np.array([0.36, 0.38, 0.46])
        col = np.where(n1 > 0.5, black, np.where(n1 < -0.6, blue, col + 0.12 * n1))
    elif cls == "nv":
        col = col * (1.0 - 0.12 * rnorm[..., None]) + 0.02 * n2
    elif cls == "bkl":
        col = col + 0.07 * np.sign(n2) * (np.abs(n2) > 0.6) + 0.04 * n1
    elif cls == "bcc":
        ring = np.exp(-(((rnorm - 0.85) / 0.1) ** 2))[..., None]
        spokes = np.abs(np.sin(6 * theta + 3 * rnorm + tex.uniform(0, 6)) * rnorm)  # arborising vessels
        vessels = ((spokes < 0.06) & (rnorm < 0.8))[..., None]
        col = np.where(vessels, np.array([0.75, 0.12, 0.15]), col + 0.06 * ring)
    elif cls == "akiec":
        scale = (n2 > 1.0)
        col = np.where(scale, np.array([0.95, 0.93, 0.88]), col + 0.05 * n1)
    elif cls == "df":
        centre = _sigmoid((0.38 - rnorm) * 14.0)[..., None]
        col = col + centre * (np.array([0.92, 0.86, 0.80]) - col)
    elif cls == "vasc":
        lobules = (n2 > 0.8)
        col = np.where(lobules, col * 0.55, col)
    return col


def render_lesion(rng: np.random.Generator, image_size: int, lesion: dict) -> np.ndarray:
    """Render one view of a lesion: new pose, size jitter, lighting and noise on a skin background.

    Args:
        rng: Generator for this image.
        image_size: Side of the square output in pixels.
        lesion: Appearance from :func:`draw_lesion`.

    Returns:
        A uint8 (H, W, 3) RGB image.
    """
    u, v = _grid(image_size)
    alpha, rnorm, theta = _lesion_shape(u, v, image_size, lesion, rng)
    skin = (lesion["skin"] * rng.uniform(0.95, 1.05)).astype(np.float32)
    shade = 1.0 + 0.04 * _smooth_noise(rng, image_size, (4, 4))
    bg = skin * shade[..., None] + 0.02 * _smooth_noise(rng, image_size, (24, 24))[..., None]
    col = _lesion_colour(image_size, lesion, rnorm, theta, rng)
    img = bg + alpha[..., None] * (col - bg)
    img = img * _vignette(image_size)[..., None] + 0.015 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _vignette(size: int) -> np.ndarray:
    """Dermoscope-style darkening towards the corners (read-only, float32)."""
    u, v = _grid(size)
    out = (1.0 - 0.35 * np.clip((np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2) - 0.45) / 0.25, 0, 1)).astype(np.float32)
    out.setflags(write=False)
    return out


# ----------------------------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------------------------


def _resolve_prevalence(prevalence: Mapping[str, float] | None, defaults: Mapping[str, float]) -> dict[str, float]:
    merged = dict(defaults)
    if prevalence is not None:
        unknown = set(prevalence) - set(defaults)
        if unknown:
            raise DataError(f"unknown prevalence keys {sorted(unknown)}; allowed: {tuple(defaults)}")
        merged.update({k: float(p) for k, p in prevalence.items()})
    bad = {k: p for k, p in merged.items() if not 0.0 <= p <= 1.0}
    if bad:
        raise DataError(f"prevalences must lie in [0, 1], got {bad}")
    return merged


def _group_sizes(rng: np.random.Generator, n_images: int, n_groups: int, max_per_group: int) -> np.ndarray:
    """Images per group: each group gets 1..max_per_group, summing to n_images."""
    if not 1 <= n_groups <= n_images <= n_groups * max_per_group:
        raise DataError(
            f"cannot spread {n_images} images over {n_groups} groups with 1..{max_per_group} images each"
        )
    extra_slots = np.repeat(np.arange(n_groups), max_per_group - 1)
    chosen = rng.choice(extra_slots.size, size=n_images - n_groups, replace=False)
    return 1 + np.bincount(extra_slots[chosen], minlength=n_groups)


def _assign_splits(rng: np.random.Generator, n_groups: int) -> list[str]:
    """Random 70/15/15 split of groups; val and test are non-empty whenever n_groups >= 3."""
    n_val = max(round(SPLIT_FRACTIONS[1][1] * n_groups), 1 if n_groups >= 3 else 0)
    n_test = max(round(SPLIT_FRACTIONS[2][1] * n_groups), 1 if n_groups >= 3 else 0)
    n_train = n_groups - n_val - n_test
    names = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    return [str(x) for x in names[rng.permutation(n_groups)]]


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """The CSV at ``path``, atomically (``labels.csv`` is written last: absent = an incomplete dataset)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue(), injectable=False)


def _prepare_dir(out_dir: str | os.PathLike, subdirs: Sequence[str]) -> Path:
    out = Path(out_dir)
    for sub in subdirs:
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "labels.csv").unlink(missing_ok=True)  # an interrupted regeneration must not look complete
    return out


def _check_args(n_images: int, image_size: int) -> None:
    if int(n_images) < 1:
        raise DataError(f"n_images must be >= 1, got {n_images}")
    if int(image_size) < 16:
        raise DataError(f"image_size must be >= 16, got {image_size}")


def _write_cxr_image(
    out: Path, seed: int, patient: int, visit: int, image_size: int, probs: np.ndarray
) -> tuple[str, list[int], list[Box]]:
    """Draw labels, render and write one CXR phantom with its masks; return (relative path, labels, boxes)."""
    image_id = f"p{patient:05d}_{visit:03d}"
    rng = np.random.default_rng([_CXR_TAG, seed, patient, visit])  # child seed: independent of generation order
    labels = (rng.random(len(CXR_FINDINGS)) < probs).astype(int).tolist()
    findings = {f for f, y in zip(CXR_FINDINGS, labels) if y}
    anatomy_rng = np.random.default_rng([_CXR_TAG, seed, patient])  # same anatomy for all of a patient's visits
    img, masks, boxes = render_cxr(rng, image_size, findings, anatomy_rng=anatomy_rng)
    Image.fromarray(img).save(out / "images" / f"{image_id}.png", compress_level=_PNG_LEVEL)
    for name in MASK_NAMES:
        mask_img = Image.fromarray(masks[name].astype(np.uint8) * 255)
        mask_img.save(out / "masks" / f"{image_id}_{name}.png", compress_level=_PNG_LEVEL)
    return f"images/{image_id}.png", labels, boxes


def generate_cxr(
    out_dir: str | os.PathLike,
    n_images: int = 600,
    image_size: int = 128,
    seed: int = 0,
    prevalence: Mapping[str, float] | None = None,
    n_patients: int | None = None,
) -> Path:
    """Write a multi-label chest radiograph phantom dataset.

    Layout: ``images/<id>.png`` (8-bit grey), ``masks/<id>_{heart,left_lung,right_lung}.png`` (0/255),
    ``boxes.csv`` (image, finding, x_min, y_min, x_max, y_max; pixels, max exclusive) and, last and atomically,
    ``labels.csv`` (image, patient_id, split, then one 0/1 column per finding in :data:`CXR_FINDINGS` order).
    Each patient has 1-3 images; the 70/15/15 split is drawn per patient.

    Args:
        out_dir: Output directory (created if needed).
        n_images: Number of images.
        image_size: Side of the square images in pixels.
        seed: Seed; the same arguments give byte-identical files.
        prevalence: Per-finding probabilities overriding :data:`CXR_PREVALENCE` (findings drawn independently).
        n_patients: Number of patients, ``ceil(n_images / 3) <= n_patients <= n_images``; default ``ceil(n/2)``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: On invalid sizes, prevalences or patient counts.
    """
    _check_args(n_images, image_size)
    prev = _resolve_prevalence(prevalence, CXR_PREVALENCE)
    probs = np.array([prev[f] for f in CXR_FINDINGS])
    n_patients = math.ceil(n_images / 2) if n_patients is None else int(n_patients)
    master = np.random.default_rng([_CXR_TAG, seed])
    sizes = _group_sizes(master, n_images, n_patients, 3)
    splits = _assign_splits(master, n_patients)
    out = _prepare_dir(out_dir, ("images", "masks"))
    label_rows, box_rows = [], []
    for patient, count in enumerate(sizes):
        for visit in range(int(count)):
            rel, labels, boxes = _write_cxr_image(out, seed, patient, visit, image_size, probs)
            box_rows.extend([rel, *box] for box in boxes)
            label_rows.append([rel, f"p{patient:05d}", splits[patient], *labels])
    _write_csv(out / "boxes.csv", BOX_COLUMNS, box_rows)
    _write_csv(out / "labels.csv", ("image", "patient_id", "split", *CXR_FINDINGS), label_rows)
    logger.info("wrote %d CXR phantoms (%d patients, %d px) to %s", n_images, n_patients, image_size, out)
    return out


def generate_lesions(
    out_dir: str | os.PathLike,
    n_images: int = 700,
    image_size: int = 128,
    seed: int = 0,
    prevalence: Mapping[str, float] | None = None,
) -> Path:
    """Write a multi-class (one-hot) RGB skin-lesion phantom dataset.

    Layout: ``images/<id>.jpg`` (JPEG quality 95) and, last and atomically, ``labels.csv`` (image, lesion_id,
    split, then one 0/1 column per class in :data:`LESION_CLASSES` order, exactly one 1 per row). Each lesion
    has 1-2 images (different pose, lighting and noise); the 70/15/15 split is drawn per lesion.

    Args:
        out_dir: Output directory (created if needed).
        n_images: Number of images.
        image_size: Side of the square images in pixels.
        seed: Seed; the same arguments give byte-identical files.
        prevalence: Class weights overriding :data:`LESION_PREVALENCE` entries; renormalised to sum to 1.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: On invalid sizes or prevalences.
    """
    _check_args(n_images, image_size)
    prev = _resolve_prevalence(prevalence, LESION_PREVALENCE)
    probs = np.array([prev[c] for c in LESION_CLASSES])
    if probs.sum() <= 0:
        raise DataError("lesion prevalences must not all be zero")
    probs = probs / probs.sum()
    n_lesions = math.ceil(n_images / 1.4)
    master = np.random.default_rng([_LESION_TAG, seed])
    sizes = _group_sizes(master, n_images, n_lesions, 2)
    splits = _assign_splits(master, n_lesions)
    out = _prepare_dir(out_dir, ("images",))
    rows = []
    for idx, count in enumerate(sizes):
        lesion_rng = np.random.default_rng([_LESION_TAG, seed, idx])
        cls_idx = int(lesion_rng.choice(len(LESION_CLASSES), p=probs))
        lesion = draw_lesion(lesion_rng, LESION_CLASSES[cls_idx])
        for view in range(int(count)):
            image_id = f"L{idx:05d}_{view:03d}"
            img = render_lesion(np.random.default_rng([_LESION_TAG, seed, idx, view]), image_size, lesion)
            Image.fromarray(img).save(out / "images" / f"{image_id}.jpg", quality=95)
            onehot = [int(i == cls_idx) for i in range(len(LESION_CLASSES))]
            rows.append([f"images/{image_id}.jpg", f"L{idx:05d}", splits[idx], *onehot])
    _write_csv(out / "labels.csv", ("image", "lesion_id", "split", *LESION_CLASSES), rows)
    logger.info("wrote %d lesion phantoms (%d lesions, %d px) to %s", n_images, n_lesions, image_size, out)
    return out

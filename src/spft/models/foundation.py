"""The built-in miniature foundation model: source phantoms, their pretraining, the cache folder, ``spft:`` names.

Owns everything that makes ``model.name: spft:phantom-dinov2`` (the demo's encoder) a model folder: the *source*
phantoms (:func:`render_source`, :func:`generate_source`), the supervised pretraining of a small Dinov2 on them
(:func:`pretrain`), the cache folder named by a hash of every parameter (:func:`foundation_dir`,
:func:`ensure_foundation`) and the resolution of the built-in names (:data:`BUILTIN_MODELS`,
:func:`resolve_model_name`). ``benchmarks/foundation.py`` is the command line over it (presets, linear probe).

**Built-in names.** ``spft:NAME`` (a prefix no hub id — ``org/name`` — or path uses) is resolved where a model name
becomes a folder (:func:`spft.models.encoders.build_encoder`, the image-processor and config readers): the cached
folder ``$SPFT_CACHE/foundation/<name>-<key>`` (``~/.cache/spft`` when unset), pretrained on first use with progress
on stderr (the ``quick`` preset: about 1 minute on 2 CPU cores). A run's ``config.yaml`` keeps the name: loading the
run resolves it again (rebuilt identically for the seed if the cache was wiped), and reading a run back for
prediction or export needs no folder at all when ``data.json`` holds the preprocessing (the checkpoint has every
weight; :func:`builtin_architecture` builds the encoder shape).

**Source set.** Grey chest phantoms of 64 px: the normal thorax of :func:`spft.data.phantoms.render_cxr` (rendered at
128 px with *no* target finding, then bicubic-downsampled to 64 px as spft downsamples the 128 px target phantoms),
carrying ten *source* findings that are none of the targets' eight (:data:`SOURCE_FINDINGS`: ring cavities, clusters
of tiny calcifications, a catheter line, a pacemaker-like device, a reticular grid, Kerley lines, dextrocardia
(mirrored thorax), sternal wire loops, sub-diaphragmatic free air, miliary dots), each drawn independently with
probability 0.25. Every image has its own child seed (``[SOURCE_TAG, seed, i]``, a tag the phantom module does not
use), so the set is the same for a seed whatever the order, and no target image (nor target finding) is ever seen.
Generated in memory: about 2 ms an image.

**Objective.** Supervised multi-label BCE on the ten source findings from the mean of the patch tokens (spft's
pooling) through a linear layer, plus a dense auxiliary BCE: each patch token predicts, through a linear layer, how
much of its patch is heart, left lung and right lung (from the renderer's masks). AdamW (weight decay 0.05 except on
norms, biases, position embeddings and tokens), linear warm-up then cosine, batch 64, gradient clipping at 1.0.
Progress (loss, images/s, time left; held-out source macro AUC after each epoch) goes to stderr. Deterministic for a
seed on a given machine and thread count (``torch.manual_seed``; a seeded shuffle).

**Output.** A folder in the Hugging Face layout — ``config.json`` + ``model.safetensors`` (``Dinov2Model
.save_pretrained``) and ``preprocessor_config.json`` (``BitImageProcessor.save_pretrained``: shortest edge 64,
centre crop 64, bicubic, 1/255, the source set's grey mean/std replicated to three channels, ``do_convert_rgb``) —
so that ``model.name=<folder>`` loads it as it loads ``microsoft/rad-dino``; plus ``foundation.json`` (parameters,
source findings, held-out AUC, timings). ``key`` hashes every generation and training parameter: a second call with
the same parameters returns the cached folder at once. Trained into a temporary sibling folder and renamed when
complete (an interrupted run leaves no folder that looks finished); a file lock makes concurrent callers train it
once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from spft.errors import ConfigError

# Bump when the source renderer or the objective changes: the cache key includes it.
FOUNDATION_VERSION = 1
SOURCE_TAG = 7  # seed-sequence tag of the source set (the phantom module uses 1 and 2)
SOURCE_FINDINGS: tuple[str, ...] = (
    "Cavity", "Calcification", "Catheter", "Device", "Reticulation",
    "KerleyLines", "Dextrocardia", "SternalWires", "FreeAir", "Miliary",
)
SOURCE_PREVALENCE = 0.25
DENSE_TARGETS = ("heart", "left_lung", "right_lung")


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything that decides the model (the cache key hashes all of it)."""

    images: int = 30_000
    epochs: int = 6
    hidden: int = 96
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    patch: int = 8
    image_size: int = 64
    render_size: int = 128
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of the steps
    dense_weight: float = 0.5
    val_fraction: float = 0.05
    seed: int = 0

    def key(self) -> str:
        from spft.data.phantoms import GENERATOR_VERSION

        blob = json.dumps({"params": dataclasses.asdict(self), "version": FOUNDATION_VERSION,
                           "phantoms": GENERATOR_VERSION, "findings": SOURCE_FINDINGS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def name(self) -> str:
        return f"dinov2-h{self.hidden}-l{self.layers}-p{self.patch}-s{self.image_size}-{self.key()}"

    def dinov2_config(self) -> dict:
        """The transformers Dinov2Config fields of the encoder (as ``model.config`` would spell them)."""
        return {"model_type": "dinov2", "hidden_size": self.hidden, "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads, "mlp_ratio": self.mlp_ratio, "patch_size": self.patch,
                "image_size": self.image_size}


PRESETS = {
    "default": Params(),
    "quick": Params(images=6_000, epochs=2),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------------
# source phantoms
# ------------------------------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    v, u = np.meshgrid(axis, axis, indexing="ij")
    return u, v


def _point_in(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A random pixel centre of ``mask`` as (u, v) fractions; the image centre when the mask is empty."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return 0.5, 0.5
    i = int(idx[rng.integers(idx.size)])
    size = mask.shape[0]
    return (i % size + 0.5) / size, (i // size + 0.5) / size


def _extent(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(u_min, v_min, u_max, v_max) of a mask as fractions (the whole image when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0.0, 0.0, 1.0, 1.0
    n = mask.shape[0]
    return cols[0] / n, rows[0] / n, (cols[-1] + 1) / n, (rows[-1] + 1) / n


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _disc(u, v, cx, cy, r, px):
    return _sigmoid((r - np.sqrt((u - cx) ** 2 + (v - cy) ** 2)) / px)


def _ring(u, v, cx, cy, r, width):
    return np.exp(-(((np.sqrt((u - cx) ** 2 + (v - cy) ** 2) - r) / width) ** 2))


def _curve(u, v, points: np.ndarray, width: float) -> np.ndarray:
    """A soft line of half-width ~``width`` along the polyline ``points`` [K, 2] (distance to its samples)."""
    d2 = np.min((u[None] - points[:, 0, None, None]) ** 2 + (v[None] - points[:, 1, None, None]) ** 2, axis=0)
    return np.exp(-d2 / width**2)


def render_source(rng: np.random.Generator, findings: set[str], render_size: int = 128, image_size: int = 64,
                  patch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """One source phantom: a uint8 (image_size, image_size) grey image and its dense target.

    The dense target is [3, image_size/patch, image_size/patch]: the fraction of each patch that is heart, left lung,
    right lung (the renderer's masks, mirrored with the image for Dextrocardia).
    """
    from spft.data.phantoms import render_cxr

    unknown = set(findings) - set(SOURCE_FINDINGS)
    if unknown:
        raise ValueError(f"unknown source findings {sorted(unknown)}; allowed: {SOURCE_FINDINGS}")
    base, masks, _ = render_cxr(rng, render_size, set())  # a normal thorax: none of the target findings
    img = base.astype(np.float32) / 255.0
    masks = {k: masks[k] for k in DENSE_TARGETS}
    if "Dextrocardia" in findings:  # mirrored thorax: heart on the image's right
        img = img[:, ::-1].copy()
        masks = {k: m[:, ::-1] for k, m in masks.items()}
    n = render_size
    px = 1.0 / n
    u, v = _grid(n)
    lungs = masks["left_lung"] | masks["right_lung"]
    lung_names = ("left_lung", "right_lung")

    def mix(value, alpha):
        nonlocal img
        img = img + alpha * (value - img)

    if "Cavity" in findings:  # bright ring, dark centre
        cx, cy = _point_in(lungs, rng)
        r = rng.uniform(0.035, 0.06)
        mix(0.06, 0.7 * _disc(u, v, cx, cy, r - 0.012, 0.6 * px))
        img += 0.38 * _ring(u, v, cx, cy, r, 0.009)
    if "Calcification" in findings:  # a cluster of tiny very bright dots
        cx, cy = _point_in(lungs, rng)
        for _ in range(int(rng.integers(4, 10))):
            mix(0.97, 0.95 * _disc(u, v, cx + rng.normal(0, 0.028), cy + rng.normal(0, 0.028),
                                   rng.uniform(0.007, 0.012), 0.4 * px))
    if "Catheter" in findings:  # thin bright curve from the neck into the chest
        p0 = np.array([rng.uniform(0.3, 0.7), 0.0])
        p2 = np.array(_point_in(lungs | masks["heart"], rng))
        p1 = np.array([rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.4)])
        t = np.linspace(0, 1, 48)[:, None]
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)
        mix(0.92, 0.85 * _curve(u, v, pts, 0.006))
    if "Device" in findings:  # pacemaker-like box below a clavicle, with a dark window
        cx = rng.uniform(0.15, 0.32) if rng.random() < 0.5 else rng.uniform(0.68, 0.85)
        cy = rng.uniform(0.1, 0.22)
        hw, hh, ang = rng.uniform(0.045, 0.06), rng.uniform(0.03, 0.04), rng.uniform(-0.4, 0.4)
        du, dv = u - cx, v - cy
        c, s = math.cos(ang), math.sin(ang)
        du, dv = c * du + s * dv, -s * du + c * dv
        box = _sigmoid(np.minimum(hw - np.abs(du), hh - np.abs(dv)) / (0.6 * px))
        mix(0.95, 0.95 * box)
        win = (np.abs(du) < hw * 0.45) & (np.abs(dv) < hh * 0.35)
        mix(0.55, 0.8 * win)
    if "Reticulation" in findings:  # fine net of lines in the lower lung zones
        _, top, _, bottom = _extent(lungs)
        region = lungs & (v > top + rng.uniform(0.4, 0.6) * (bottom - top))
        f, ang = rng.uniform(12, 18), rng.uniform(0, math.pi)
        a, b = math.cos(ang) * u + math.sin(ang) * v, -math.sin(ang) * u + math.cos(ang) * v
        net = np.maximum(np.abs(np.sin(math.pi * f * a)), np.abs(np.sin(math.pi * f * b))) ** 8
        img += 0.16 * net * region
    if "KerleyLines" in findings:  # short horizontal lines at the lateral edge of a lower lung
        name = lung_names[int(rng.integers(2))]
        u0, top, u1, bottom = _extent(masks[name])
        lateral_left = (u0 + u1) / 2 < 0.5
        for _ in range(int(rng.integers(3, 7))):
            y = rng.uniform(top + 0.55 * (bottom - top), bottom - 0.05 * (bottom - top))
            length = rng.uniform(0.04, 0.07)
            x0 = u0 + 0.01 if lateral_left else u1 - 0.01 - length
            line = np.exp(-(((v - y) / 0.0045) ** 2)) * ((u > x0) & (u < x0 + length))
            img += 0.3 * line * masks[name]
    if "SternalWires" in findings:  # small loops stacked on the midline
        cx = rng.uniform(0.47, 0.53)
        for y in np.linspace(rng.uniform(0.25, 0.32), rng.uniform(0.52, 0.6), int(rng.integers(3, 6))):
            mix(0.95, 0.9 * _ring(u, v, cx, y, rng.uniform(0.012, 0.018), 0.005))
    if "FreeAir" in findings:  # dark crescent under a hemidiaphragm
        name = lung_names[int(rng.integers(2))]
        u0, _, u1, bottom = _extent(masks[name])
        cx, half = (u0 + u1) / 2, (u1 - u0) * rng.uniform(0.3, 0.45)
        upper = ((u - cx) / half) ** 2 + ((v - bottom - 0.01) / 0.045) ** 2 < 1
        lower = ((u - cx) / half) ** 2 + ((v - bottom - 0.032) / 0.045) ** 2 < 1
        mix(0.03, 0.85 * (upper & ~lower))
    if "Miliary" in findings:  # many tiny faint dots over both lungs
        pts = np.array([_point_in(lungs, rng) for _ in range(int(rng.integers(40, 80)))], np.float32)
        d2 = np.min((u[None] - pts[:, 0, None, None]) ** 2 + (v[None] - pts[:, 1, None, None]) ** 2, axis=0)
        img += 0.22 * _sigmoid((0.006 - np.sqrt(d2)) / (0.5 * px))
    img = img + 0.015 * rng.standard_normal(img.shape, dtype=np.float32)
    big = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    small = np.asarray(Image.fromarray(big).resize((image_size, image_size), Image.Resampling.BICUBIC))
    g = image_size // patch
    dense = np.stack([m.reshape(g, n // g, g, n // g).mean(axis=(1, 3)) for m in masks.values()]).astype(np.float32)
    return small, dense


def generate_source(n: int, seed: int = 0, render_size: int = 128, image_size: int = 64, patch: int = 8,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` source phantoms in memory: images uint8 [n, S, S], labels float32 [n, 10], dense float32 [n, 3, g, g].

    Image ``i`` depends only on ``(seed, i)``: its labels (independent draws with :data:`SOURCE_PREVALENCE`) and its
    rendering come from the child generator ``[SOURCE_TAG, seed, i]``.
    """
    if render_size % (image_size // patch):
        raise ValueError("render_size must be a multiple of the patch grid side")
    g = image_size // patch
    images = np.empty((n, image_size, image_size), np.uint8)
    labels = np.empty((n, len(SOURCE_FINDINGS)), np.float32)
    dense = np.empty((n, len(DENSE_TARGETS), g, g), np.float32)
    start = time.time()
    for i in range(n):
        rng = np.random.default_rng([SOURCE_TAG, seed, i])
        y = rng.random(len(SOURCE_FINDINGS)) < SOURCE_PREVALENCE
        findings = {f for f, on in zip(SOURCE_FINDINGS, y) if on}
        images[i], dense[i] = render_source(rng, findings, render_size, image_size, patch)
        labels[i] = y
        if progress and (i + 1) % 2000 == 0:
            rate = (i + 1) / (time.time() - start)
            log(f"source phantoms {i + 1}/{n} ({rate:.0f}/s, {(n - i - 1) / rate:.0f} s left)")
    return images, labels, dense


# ------------------------------------------------------------------------------------------------------------------
# pretraining
# ------------------------------------------------------------------------------------------------------------------


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "position_embeddings" in name or "cls_token" in name or "mask_token" in name \
                or "register" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain(p: Params, out: Path) -> dict:
    """Generate the source set, pretrain the encoder and save the folder ``out``; returns the record."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModel, BitImageProcessor

    from spft.metrics.auc import multilabel_auc

    t0 = time.time()
    torch.manual_seed(p.seed)
    log(f"generating {p.images} source phantoms ({p.image_size} px from {p.render_size} px, seed {p.seed})")
    images, labels, dense = generate_source(p.images, p.seed, p.render_size, p.image_size, p.patch)
    t_gen = time.time() - t0
    n_val = max(int(round(p.val_fraction * p.images)), min(200, p.images // 5))
    n_train = p.images - n_val
    mean = float(images[:n_train].mean() / 255.0)
    std = float(images[:n_train].std() / 255.0)
    x_all = torch.from_numpy(images)
    y_all, d_all = torch.from_numpy(labels), torch.from_numpy(dense)

    def batch_x(idx):  # as spft feeds the model: x/255, (x - mean)/std, grey replicated to 3 channels
        x = (x_all[idx].float() / 255.0 - mean) / std
        return x.unsqueeze(1).expand(-1, 3, -1, -1)

    arch = p.dinov2_config()  # as spft's build_encoder builds model.config encoders (sdpa attention)
    encoder = AutoModel.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch), attn_implementation="sdpa")
    cls_head = nn.Linear(p.hidden, len(SOURCE_FINDINGS))
    dense_head = nn.Linear(p.hidden, len(DENSE_TARGETS))
    modules = nn.ModuleList([encoder, cls_head, dense_head])
    opt = torch.optim.AdamW(_param_groups(modules, p.weight_decay), lr=p.lr, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(n_train / p.batch)
    total = steps_per_epoch * p.epochs
    warm = max(1, int(p.warmup * total))

    def lr_factor(s: int) -> float:  # linear warm-up, then cosine to 0
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    bce = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(p.seed)

    def forward(idx):
        h = encoder(pixel_values=batch_x(idx)).last_hidden_state[:, 1:]  # patch tokens (spft's pooling drops CLS)
        return cls_head(h.mean(1)), dense_head(h)

    def evaluate() -> float | None:
        modules.eval()
        outs = []
        with torch.no_grad():
            for s in range(n_train, p.images, 256):
                outs.append(torch.sigmoid(forward(torch.arange(s, min(s + 256, p.images)))[0]))
        modules.train()
        return multilabel_auc(torch.cat(outs).numpy(), labels[n_train:], list(SOURCE_FINDINGS)).macro

    history, step, t_train = [], 0, time.time()
    log(f"pretraining Dinov2 (hidden {p.hidden}, {p.layers} blocks, {p.heads} heads, patch {p.patch}) on {n_train} "
        f"images, {p.epochs} epochs x {steps_per_epoch} steps, {n_val} held out; source set took {t_gen:.0f} s")
    modules.train()
    for epoch in range(p.epochs):
        order = torch.randperm(n_train, generator=gen)
        run_loss, seen = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * p.batch:(b + 1) * p.batch]
            logits, dense_logits = forward(idx)
            d = d_all[idx].flatten(2).transpose(1, 2)  # [B, g*g, 3], patch order = token order
            loss = bce(logits, y_all[idx]) + p.dense_weight * bce(dense_logits, d)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            run_loss += loss.item() * len(idx)
            seen += len(idx)
            if step % 20 == 0 or b == steps_per_epoch - 1:
                el = time.time() - t_train
                log(f"epoch {epoch + 1}/{p.epochs} step {b + 1}/{steps_per_epoch} loss {run_loss / seen:.4f} "
                    f"({step * p.batch / el:.0f} img/s, {el / step * (total - step):.0f} s left)")
        auc = evaluate()
        history.append({"epoch": epoch + 1, "train_loss": run_loss / seen, "source_val_macro_auc": auc})
        log(f"epoch {epoch + 1}: train loss {run_loss / seen:.4f}, held-out source macro AUC {auc:.4f}")
    t_all = time.time() - t0

    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out, safe_serialization=True)
    BitImageProcessor(do_resize=True, size={"shortest_edge": p.image_size}, resample=3, do_center_crop=True,
                      crop_size={"height": p.image_size, "width": p.image_size}, do_rescale=True,
                      rescale_factor=1 / 255, do_normalize=True, image_mean=[mean] * 3, image_std=[std] * 3,
                      do_convert_rgb=True).save_pretrained(out)
    record = {"params": dataclasses.asdict(p), "version": FOUNDATION_VERSION, "key": p.key(),
              "source_findings": list(SOURCE_FINDINGS), "source_prevalence": SOURCE_PREVALENCE,
              "dense_targets": list(DENSE_TARGETS), "mean": mean, "std": std, "n_train": n_train, "n_val": n_val,
              "history": history, "source_val_macro_auc": history[-1]["source_val_macro_auc"] if history else None,
              "seconds": {"generate": round(t_gen, 1), "total": round(t_all, 1)},
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    (out / "foundation.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


@contextlib.contextmanager
def random_state_kept():
    """Python's, NumPy's and torch's global random states as they were before the block (pretraining seeds torch
    itself): the run that asked for the encoder continues from the state it had, so its head, its data order and
    its numbers are the same whether the encoder was pretrained in this process or read from the cache."""
    import random

    import torch

    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


def foundation_dir(p: Params, cache_dir: str | None = None) -> Path:
    from spft.data.registry import cache_root

    return cache_root(cache_dir) / "foundation" / p.name()


def ensure_foundation(p: Params = PRESETS["default"], cache_dir: str | None = None, force: bool = False) -> Path:
    """The cached model folder for ``p``, pretraining it first when absent (or when ``force``)."""
    from spft.filelock import exclusive

    folder = foundation_dir(p, cache_dir)
    done = folder / "foundation.json"
    if done.is_file() and not force:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(folder.with_name(folder.name + ".lock"), f"pretraining {folder.name}"):
        if done.is_file() and not force:
            return folder
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with random_state_kept():  # a run that builds its encoder first trains as one that found it cached
                pretrain(p, tmp)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------------------------------------------
# built-in model names
# ------------------------------------------------------------------------------------------------------------------

BUILTIN_PREFIX = "spft:"
# name -> the parameters of its pretraining (the cache key hashes them)
BUILTIN_MODELS: dict[str, Params] = {
    "spft:phantom-dinov2": PRESETS["quick"],
}


def is_builtin(name: str | None) -> bool:
    """True for a ``spft:`` name (known or not: an unknown one is an error, never a hub id or path)."""
    return isinstance(name, str) and name.startswith(BUILTIN_PREFIX)


def builtin_params(name: str) -> Params:
    """The pretraining parameters of a built-in name; an unknown ``spft:`` name is one line listing the known."""
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise ConfigError(f"model.name: unknown built-in model {name!r}; known: {', '.join(BUILTIN_MODELS)} "
                          "(or a hub id / local directory)") from None


def builtin_architecture(name: str) -> dict:
    """The ``model.config`` mapping of a built-in name's encoder (random weights of the right shape)."""
    return builtin_params(name).dinov2_config()


def builtin_folder(name: str) -> Path | None:
    """The cached folder of a built-in name when it is complete, else ``None`` (nothing is built)."""
    folder = foundation_dir(builtin_params(name))
    return folder if (folder / "foundation.json").is_file() else None


def resolve_model_name(name: str | None) -> str | None:
    """``name`` itself, or for a built-in ``spft:`` name its cached folder (pretrained first when absent)."""
    if not is_builtin(name):
        return name
    params = builtin_params(name)
    if builtin_folder(name) is None:
        log(f"model.name {name}: pretraining the built-in encoder once (about 1 minute on 2 CPU cores; then cached "
            f"under {foundation_dir(params).parent})")
    return str(ensure_foundation(params))

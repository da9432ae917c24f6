"""Random training augmentation for classification (``data.augment``), reproducible per (seed, epoch, image).

Geometric steps act on the decoded image before the model's resize (random resized crop, small rotation, optional
horizontal flip — off by default because chest X-ray laterality matters); photometric steps (brightness, contrast)
act on the [0, 1] pixels before normalisation. Randomness comes from ``numpy.random.default_rng([seed, epoch,
index])``, not from the worker's global RNG, so an epoch's augmentations do not depend on the number of DataLoader
workers or on whether the run was resumed. Augmentation makes the stage-1 feature cache inexact, so it is bypassed
then (``spft.tasks.classification.feature_cache.cache_blocker``).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


class Augment:
    """Callable ``(PIL image, epoch, index) -> (PIL image, photometric(tensor))`` built from ``data.augment``."""

    def __init__(self, cfg, seed: int):
        cfg.check()  # spft.config.schema.AugmentConfig: the loader ran it already; a config built in code
        lo, hi = (list(cfg.scale) + [1.0, 1.0])[:2]
        self.scale = (lo, hi)
        self.rotate = float(cfg.rotate)
        self.brightness = float(cfg.brightness)
        self.contrast = float(cfg.contrast)
        self.hflip = float(cfg.hflip)
        self.seed = int(seed)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def geometric(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = image.size
        area = rng.uniform(*self.scale) * w * h
        aspect = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
        cw = min(w, max(1, round(math.sqrt(area * aspect))))
        ch = min(h, max(1, round(math.sqrt(area / aspect))))
        left = int(rng.integers(0, w - cw + 1))
        top = int(rng.integers(0, h - ch + 1))
        image = image.crop((left, top, left + cw, top + ch))
        if self.rotate:
            image = image.rotate(float(rng.uniform(-self.rotate, self.rotate)), resample=Image.BILINEAR)
        if self.hflip and rng.uniform() < self.hflip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image

    def photometric(self, pixels, rng: np.random.Generator):
        """``pixels`` in [0, 1] (numpy or torch): contrast around the mean, then brightness, clipped to [0, 1]."""
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        mean = pixels.mean()
        out = (pixels - mean) * c + mean
        return (out * b).clip(0, 1)

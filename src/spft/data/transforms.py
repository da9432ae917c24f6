"""Image → ``pixel_values`` tensor, following the encoder's :class:`~spft.models.encoders.Preprocessing`.

Shortest-edge bicubic resize, centre crop, scale to [0, 1], grey replicated to 3 channels, normalise — the same
steps as RAD-DINO's image processor, done with PIL + torch directly because calling a transformers processor per
sample is several times slower in a DataLoader worker.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class ImageTransform:
    """Callable ``PIL.Image -> FloatTensor[3, size, size]``; picklable so DataLoader workers can use it."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        scale = self.size / min(w, h)
        if (w, h) != (self.size, self.size):
            new = (max(self.size, round(w * scale)), max(self.size, round(h * scale)))
            image = image.resize(new, Image.BICUBIC)
            left = (new[0] - self.size) // 2
            top = (new[1] - self.size) // 2
            image = image.crop((left, top, left + self.size, top + self.size))
        return image

    def __call__(self, image: Image.Image, augment=None, rng=None) -> torch.Tensor:
        """``augment`` (:class:`spft.data.augment.Augment`) with its ``rng``: random crop/rotation before the
        resize, brightness/contrast before normalising."""
        if augment is not None:
            image = augment.geometric(image, rng)
        image = self.resize_crop(image)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        if augment is not None:
            arr = augment.photometric(arr, rng).astype(np.float32)
        tensor = torch.from_numpy(arr)
        tensor = tensor.unsqueeze(0).expand(3, -1, -1) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return (tensor - self.mean) / self.std

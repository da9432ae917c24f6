"""Image → ``pixel_values`` tensor, following the encoder's :class:`~spft.models.encoders.Preprocessing`.

The steps and their rounding are those of transformers' PIL image processors (``BitImageProcessorPil``, what
``AutoImageProcessor.from_pretrained(name, backend="pil")`` gives for RAD-DINO and DINOv2), done with PIL + numpy
directly because calling a transformers processor per sample is several times slower in a DataLoader worker:

- colour: grey ("L") stays one channel and is replicated to three at the end (the processor's ``convert_rgb``
  replicates it first: same numbers); an image with transparency (RGBA, LA, P with a transparent colour) is
  composited onto white, as ``transformers.image_transforms.convert_to_rgb`` does; other modes ``convert("RGB")``.
  16-/32-bit grey is scaled to 8 bits as :mod:`spft.data.io` does (transformers would clip it at 255 — for a
  16-bit radiograph almost everything becomes white — so the fair reference for a 16-bit file is the processor
  applied to the 8-bit image spft's loader makes of it).
- resize with the processor's PIL filter: ``shortest_edge`` gives the short side that edge and the long side
  ``int(edge * long / short)`` (truncated, as ``get_resize_output_image_size``); ``exact`` to (height, width).
- centre crop as ``transformers.image_transforms.center_crop``: the window starts at ``(H - h) // 2``,
  ``(W - w) // 2``; where the image is smaller than the crop the outside is zeros (zero padding before rescale).
- rescale in float64, cast to float32, then ``(x - mean) / std`` in float32.

What spft's loader hands over is already "L" or "RGB": it drops alpha instead of compositing it
(:func:`spft.data.io.load_image`), which differs from the processor only for pixels that are not fully opaque.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class ImageTransform:
    """Callable ``PIL.Image -> FloatTensor[3, size, size]``; picklable so DataLoader workers can use it.

    ``ImageTransform(prep)`` with a :class:`~spft.models.encoders.Preprocessing`; ``ImageTransform(size, mean, std)``
    is RAD-DINO's rule at ``size`` (shortest edge to ``size``, centre crop ``size x size``, bicubic, 1/255).
    """

    def __init__(self, prep, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        if isinstance(prep, (int, np.integer)):
            from spft.models.encoders import Preprocessing

            prep = Preprocessing(int(prep), tuple(mean), tuple(std), "ImageTransform")
        self.size = int(prep.size)
        self.resize = prep.resize
        self.resize_size = None if prep.resize_size is None else tuple(int(v) for v in prep.resize_size)
        self.crop = None if prep.crop is None else tuple(int(v) for v in prep.crop)
        self.interpolation = int(prep.interpolation)
        self.rescale = None if prep.rescale is None else float(prep.rescale)
        self.cache_side = prep.cache_side
        self._geometry = prep.geometry()
        self.mean = torch.tensor(prep.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(prep.std, dtype=torch.float32).view(3, 1, 1)

    def describe(self) -> dict:
        """Everything but mean/std that decides the output (for cache keys)."""
        return {"resize": self.resize, "resize_size": self.resize_size, "crop": self.crop,
                "interpolation": self.interpolation, "rescale": self.rescale}

    def geometry(self) -> str:
        return self._geometry

    # -- steps ---------------------------------------------------------------------------------------------------

    @staticmethod
    def to_model_mode(image: Image.Image) -> Image.Image:
        """"L" or "RGB": transparency composited onto white (transformers' ``convert_to_rgb``), deep grey scaled
        to 8 bits (spft's loader), anything else converted to RGB."""
        if image.mode in ("L", "RGB"):
            return image
        from spft.data.io import _to_grey_if_deep

        grey = _to_grey_if_deep(image)
        if grey is not None:
            return grey
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")

    def resized_size(self, width: int, height: int) -> tuple[int, int] | None:
        """``(width, height)`` after the resize step; ``None`` when nothing is resized."""
        if self.resize == "shortest_edge":
            edge = self.resize_size[0]
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(edge * long / short)  # transformers' get_resize_output_image_size (truncation)
            return (edge, new_long) if width <= height else (new_long, edge)
        if self.resize == "exact":
            return self.resize_size[1], self.resize_size[0]
        return None

    def _resize(self, image: Image.Image) -> Image.Image:
        new = self.resized_size(*image.size)
        if new is None or new == image.size:
            return image  # PIL's resize to the same size is a copy
        return image.resize(new, Image.Resampling(self.interpolation))

    @staticmethod
    def _window(image: Image.Image, height: int, width: int, top: int, left: int) -> Image.Image:
        """``height x width`` pixels from (top, left); outside the image: zeros (PIL's crop fills with 0)."""
        if (top, left) == (0, 0) and image.size == (width, height):
            return image
        return image.crop((left, top, left + width, top + height))

    def _crop(self, image: Image.Image) -> Image.Image:
        if self.crop is None:
            return image
        h, w = self.crop
        return self._window(image, h, w, (image.size[1] - h) // 2, (image.size[0] - w) // 2)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """What the image cache stores: the resize, then the ``cache_side`` square that contains the final crop,
        placed so that the full transform of it gives the same pixels as that of ``image`` (resizing it again is
        the identity, and its centre crop is the original's crop window). Equal to resize + crop when the crop is
        the resize size (RAD-DINO: 518 / 518).

        Raises:
            ConfigError: The preprocessing has no such square (see ``Preprocessing.cache_side``).
        """
        side = self.cache_side
        if side is None:
            from spft.errors import ConfigError

            raise ConfigError(f"the image cache cannot store this preprocessing ({self._geometry}): the crop pads "
                              "the resized image or the output is not square; train without data.image_cache")
        image = self._resize(self.to_model_mode(image))
        if self.crop is None:
            return image
        h, w = self.crop
        top = (image.size[1] - h) // 2 - (side - h) // 2
        left = (image.size[0] - w) // 2 - (side - w) // 2
        return self._window(image, side, side, top, left)

    def __call__(self, image: Image.Image, augment=None, rng=None) -> torch.Tensor:
        """``augment`` (:class:`spft.data.augment.Augment`) with its ``rng``: random crop/rotation before the
        resize, brightness/contrast before normalising."""
        image = self.to_model_mode(image)
        if augment is not None:
            image = augment.geometric(image, rng)
        image = self._crop(self._resize(image))
        arr = np.asarray(image)
        if self.rescale is not None:  # as transformers' rescale: float64 product, then float32
            arr = (arr.astype(np.float64) * self.rescale).astype(np.float32)
        else:
            arr = arr.astype(np.float32)
        if augment is not None:
            arr = augment.photometric(arr, rng).astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
        tensor = tensor.unsqueeze(0).expand(3, -1, -1) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return (tensor - self.mean) / self.std

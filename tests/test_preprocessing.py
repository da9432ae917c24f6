"""spft's preprocessing is the model's image processor: the recipe read from it (SizeDict, dict or int sizes) and
the pixels ImageTransform makes, compared with transformers' own PIL processor (``BitImageProcessorPil``, what
``AutoImageProcessor.from_pretrained(name, backend="pil")`` returns in transformers 5; the default
``BitImageProcessor`` is the torchvision backend, whose bicubic kernel differs by a few grey levels).

Processors: RAD-DINO's real values (shortest edge 518, crop 518), dinov2-base's (shortest edge 256, crop 224,
ImageNet statistics) and one whose crop is larger than the resize (zero padding). Images: grey, RGBA with partial
transparency, 16-bit grey, non-square RGB, odd sizes. Tolerance 1e-5 after normalisation: spft does the same PIL
resize, the same crop window and the same float64 rescale + float32 normalisation, so the values are expected equal.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_folders import bit_processor, raddino_folder
from PIL import Image

from spft.data.io import load_image
from spft.data.transforms import ImageTransform
from spft.errors import ConfigError
from spft.models.encoders import Preprocessing, preprocessing_for, preprocessing_from_processor, size_fields

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PROCESSORS = {
    "rad-dino": dict(shortest_edge=518, crop=518),
    "dinov2-base": dict(shortest_edge=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "padding": dict(shortest_edge=28, crop=32, mean=IMAGENET_MEAN, std=IMAGENET_STD),
}
TOL = 1e-5


def _rng_image(shape, dtype=np.uint8, high=256, seed=0):
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, high, size=shape).astype(np.float64)
    return np.clip(smooth, 0, high - 1).astype(dtype)


def _images(tmp_path) -> dict[str, Image.Image]:
    """Test images as the model sees them: grey, RGB, RGBA (as is), and the 8-bit image spft makes of a 16-bit file."""
    rgba = _rng_image((45, 70, 4), seed=1)
    rgba[..., 3] = np.linspace(0, 255, 70, dtype=np.uint8)[None, :]  # from transparent to opaque
    deep = tmp_path / "deep.png"
    Image.fromarray(_rng_image((61, 40), np.uint16, 65536, seed=2)).save(deep)
    return {
        "grey_wide": Image.fromarray(_rng_image((43, 57), seed=3), "L"),
        "grey_tall_odd": Image.fromarray(_rng_image((301, 211), seed=4), "L"),
        "rgb_wide": Image.fromarray(_rng_image((120, 333, 3), seed=5), "RGB"),
        "rgba": Image.fromarray(rgba, "RGBA"),
        "sixteen_bit": load_image(deep, "grey"),
        "tiny": Image.fromarray(_rng_image((9, 13), seed=6), "L"),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _images(tmp_path_factory.mktemp("img"))


def _reference(proc, image: Image.Image) -> torch.Tensor:
    return torch.as_tensor(np.asarray(proc(image, return_tensors="np")["pixel_values"][0]))


@pytest.mark.parametrize("kind", list(PROCESSORS))
def test_pixels_match_the_transformers_processor(kind, images):
    proc = bit_processor(**PROCESSORS[kind])
    assert type(proc).__name__ == "BitImageProcessorPil"
    prep = preprocessing_from_processor(proc, kind)
    transform = ImageTransform(prep)
    for name, image in images.items():
        ours = transform(image)
        ref = _reference(proc, image)
        assert ours.shape == ref.shape == (3, prep.size, prep.size), name
        assert float((ours - ref).abs().max()) <= TOL, (kind, name)


def test_sixteen_bit_files_go_through_the_loader_first(tmp_path):
    """transformers converts a 16-bit "I;16" image with PIL's convert("RGB"), which clips at 255 (a radiograph
    becomes white); spft scales 0..65535 to 0..255 (spft.data.io), so the processor is compared on that 8-bit image
    (test above) and ImageTransform given the 16-bit image directly scales it the same way."""
    path = tmp_path / "deep.png"
    Image.fromarray(_rng_image((50, 64), np.uint16, 65536)).save(path)
    proc = bit_processor(**PROCESSORS["dinov2-base"])
    transform = ImageTransform(preprocessing_from_processor(proc, "dinov2-base"))
    with Image.open(path) as raw:
        raw.load()
        assert raw.mode.startswith("I")
        assert torch.equal(transform(raw), transform(load_image(path, "grey")))
        clipped = _reference(proc, raw)
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    near_white = (clipped - white.view(3, 1, 1)).abs() < 0.05
    assert float(near_white.float().mean()) > 0.9  # transformers' own result: nearly uniform white


def test_opaque_rgba_file_through_the_loader_matches_the_processor(tmp_path):
    """spft's loader drops alpha (spft.data.io); for an opaque RGBA file that is what the processor's white
    compositing gives, so the whole path file -> load_image -> ImageTransform equals the processor on the file."""
    path = tmp_path / "opaque.png"
    arr = _rng_image((40, 52, 4), seed=7)
    arr[..., 3] = 255
    Image.fromarray(arr, "RGBA").save(path)
    proc = bit_processor(**PROCESSORS["dinov2-base"])
    ours = ImageTransform(preprocessing_from_processor(proc, "x"))(load_image(path, "rgb"))
    with Image.open(path) as raw:
        assert float((ours - _reference(proc, raw)).abs().max()) <= TOL


@pytest.mark.parametrize("kind", ["rad-dino", "dinov2-base"])
def test_cache_entry_gives_the_same_pixels(kind, images):
    """What `spft prepare cache` stores (resize_crop) goes through the full transform to the same pixels."""
    transform = ImageTransform(preprocessing_from_processor(bit_processor(**PROCESSORS[kind]), kind))
    for name, image in images.items():
        entry = transform.resize_crop(image.convert("RGB") if image.mode == "RGBA" else image)
        assert entry.size == (transform.cache_side,) * 2, name
        source = image.convert("RGB") if image.mode == "RGBA" else image
        assert torch.equal(transform(entry), transform(source)), (kind, name)


def test_cache_refuses_a_padding_crop():
    transform = ImageTransform(preprocessing_from_processor(bit_processor(**PROCESSORS["padding"]), "padding"))
    assert transform.cache_side is None
    with pytest.raises(ConfigError, match="image cache cannot store"):
        transform.resize_crop(Image.new("L", (40, 30)))


def test_recipe_read_from_every_size_form():
    from transformers.image_utils import SizeDict

    assert size_fields(SizeDict(shortest_edge=518)) == {"shortest_edge": 518}
    assert size_fields({"height": 518, "width": 518, "shortest_edge": None}) == {"height": 518, "width": 518}
    assert size_fields(224) == {"height": 224, "width": 224}
    assert size_fields(256, default_to_square=False) == {"shortest_edge": 256}
    assert size_fields([30, 40]) == {"height": 30, "width": 40}
    prep = preprocessing_from_processor(bit_processor(**PROCESSORS["dinov2-base"]), "dinov2-base")
    assert (prep.size, prep.resize, prep.resize_size, prep.crop, prep.interpolation) == (
        224, "shortest_edge", (256,), (224, 224), 3)
    assert prep.mean == tuple(IMAGENET_MEAN) and prep.rescale == pytest.approx(1 / 255)
    assert prep.record()["resize"] == {"shortest_edge": 256} and prep.record()["crop"] == {"height": 224, "width": 224}
    assert prep.record()["interpolation"] == "bicubic"


def test_data_image_size_overrides_resize_and_crop():
    prep = preprocessing_from_processor(bit_processor(**PROCESSORS["dinov2-base"]), "dinov2-base", image_size=64)
    assert (prep.size, prep.resize_size, prep.crop, prep.mean) == (64, (64,), (64, 64), tuple(IMAGENET_MEAN))
    assert "data.image_size=64" in prep.source


def test_processors_spft_cannot_follow_are_refused():
    from transformers import BitImageProcessorPil, ViTImageProcessorPil

    no_crop = BitImageProcessorPil(size={"shortest_edge": 40}, do_center_crop=False)
    with pytest.raises(ConfigError, match="variable size.*data.image_size"):
        preprocessing_from_processor(no_crop, "x")
    with pytest.raises(ConfigError, match="not supported"):
        preprocessing_from_processor(BitImageProcessorPil(size={"longest_edge": 40}), "x")
    vit = preprocessing_from_processor(ViTImageProcessorPil(size={"height": 48, "width": 48}), "vit")
    assert (vit.size, vit.resize, vit.resize_size, vit.crop, vit.interpolation) == (48, "exact", (48, 48), None, 2)


def test_folder_with_rad_dino_processor(tmp_path):
    """A folder laid out like microsoft/rad-dino (transformers 5 hands the sizes over as SizeDict)."""
    folder = raddino_folder(tmp_path / "rad-dino")
    saved = json.loads((folder / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": 40} and saved["crop_size"] == {"height": 32, "width": 32}
    prep = preprocessing_for(str(folder), None, None)
    assert (prep.size, prep.resize_size, prep.crop, prep.interpolation) == (32, (40,), (32, 32), 3)
    assert prep.mean == (0.5307,) * 3 and prep.std == (0.2583,) * 3 and prep.source.startswith("image_processor:")


def test_without_processor_rad_dino_defaults(tmp_path):
    prep = preprocessing_for(None, None, 64)
    assert prep == Preprocessing(64, (0.5307,) * 3, (0.2583,) * 3, "rad-dino defaults")
    assert (prep.resize_size, prep.crop, prep.interpolation) == ((64,), (64, 64), 3)
    assert preprocessing_for(str(tmp_path), None, None).size == 518  # a folder without preprocessor_config.json

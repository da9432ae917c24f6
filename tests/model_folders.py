"""Model folders laid out like a hub download (``hf download ID --local-dir DIR``), built offline and tiny.

``raddino_folder``: a ``Dinov2Model`` (hidden 32, 2 layers, patch 8, 32 px) saved as config.json +
model.safetensors, with the preprocessor_config.json that ``BitImageProcessor.save_pretrained`` writes, in RAD-DINO's
format (size {shortest_edge}, crop_size {height, width}, resample 3, RAD-DINO's mean/std, do_convert_rgb) with the
sizes scaled down (shortest edge 40, crop 32 by default: resize differs from crop, as for dinov2-base).

``seed_builtin_encoder``: a folder of the built-in ``spft:phantom-dinov2``'s architecture (hidden 96, 4 blocks, patch
8, 64 px) with random weights and a 64 px processor, placed in a cache where that name resolves (so that the demo
config resolves in a second instead of pretraining for a minute).

``sam2_folder``: the tiny SAM2 of ``segmentation_fixtures.TINY_SAM2`` saved the same way with a
``Sam2ImageProcessor`` preprocessor_config.json (size {height, width} = the model's 64, ImageNet statistics).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from segmentation_fixtures import TINY_SAM2

RAD_DINO_MEAN = [0.5307] * 3
RAD_DINO_STD = [0.2583] * 3
DINO_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2, "patch_size": 8,
               "image_size": 32}


def bit_processor(shortest_edge: int = 40, crop: int = 32, mean=RAD_DINO_MEAN, std=RAD_DINO_STD, pil: bool = True):
    """A BitImageProcessor as RAD-DINO's preprocessor_config.json describes it (PIL backend unless ``pil=False``)."""
    from transformers import BitImageProcessor, BitImageProcessorPil

    cls = BitImageProcessorPil if pil else BitImageProcessor
    return cls(do_resize=True, size={"shortest_edge": shortest_edge}, resample=3, do_center_crop=True,
               crop_size={"height": crop, "width": crop}, do_rescale=True, rescale_factor=1 / 255,
               do_normalize=True, image_mean=list(mean), image_std=list(std), do_convert_rgb=True)


def raddino_folder(path: Path, shortest_edge: int = 40, crop: int = 32) -> Path:
    """A RAD-DINO-shaped model folder (random weights) at ``path``."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = dict(DINO_CONFIG, layer_norm_eps=1e-6, layerscale_value=1.0)
    Dinov2Model(Dinov2Config(**config)).save_pretrained(path, safe_serialization=True)
    bit_processor(shortest_edge, crop, pil=False).save_pretrained(path)
    return path


def seed_builtin_encoder(cache: Path, name: str = "spft:phantom-dinov2") -> Path:
    """The cached folder of the built-in ``name`` under the cache root ``cache``, with its architecture and random
    weights (and the ``foundation.json`` that marks a finished folder); returns the folder."""
    import json

    import torch
    from transformers import AutoConfig, AutoModel

    from spft.models.foundation import BUILTIN_MODELS, builtin_architecture, foundation_dir

    folder = foundation_dir(BUILTIN_MODELS[name], str(cache))
    folder.mkdir(parents=True, exist_ok=True)
    arch = builtin_architecture(name)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch)).save_pretrained(folder)
    bit_processor(arch["image_size"], arch["image_size"], pil=False).save_pretrained(folder)
    (folder / "foundation.json").write_text(json.dumps({"seeded_by": "tests/model_folders.py"}) + "\n")
    return folder


def tiny_sam2_config() -> dict:
    return yaml.safe_load(TINY_SAM2.split("=", 1)[1])


def sam2_folder(path: Path, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> Path:
    """A SAM2-shaped model folder (random weights, 64 px) at ``path``."""
    import torch
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = tiny_sam2_config()
    config.pop("model_type")
    Sam2Model(Sam2Config(**config)).save_pretrained(path, safe_serialization=True)
    Sam2ImageProcessor(size={"height": 64, "width": 64}, mask_size={"height": 16, "width": 16},
                       image_mean=list(mean), image_std=list(std)).save_pretrained(path)
    return path

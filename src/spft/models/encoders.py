"""Vision encoders through transformers: load by hub id / local directory or build from a config with random weights.

Also owns the two facts about an encoder the recipe needs: its layer groups (embeddings, blocks bottom→top, final
norm) and its preprocessing (from the model's own image processor when it has one, else RAD-DINO's values —
never ImageNet statistics for RAD-DINO).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# RAD-DINO's preprocessor_config.json (microsoft/rad-dino): bicubic resize of the shortest edge to 518, centre crop.
RAD_DINO_MEAN = (0.5307, 0.5307, 0.5307)
RAD_DINO_STD = (0.2583, 0.2583, 0.2583)
RAD_DINO_SIZE = 518


@dataclass(frozen=True)
class Preprocessing:
    """How images become ``pixel_values``: shortest-edge resize (bicubic) to ``size``, centre crop, scale, normalise."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "image_processor:<name>" or "rad-dino defaults"


def build_encoder(name: str | None = None, config: dict | None = None) -> nn.Module:
    """The encoder as a transformers model.

    Args:
        name: hub id (``microsoft/rad-dino``) or a local directory; loaded with pretrained weights.
        config: a transformers config mapping with ``model_type`` (e.g. ``{"model_type": "dinov2",
            "hidden_size": 64, "num_hidden_layers": 4, ...}``): random weights, no network. When both are given
            the mapping overrides fields of the named model's config and weights are still loaded.
    """
    from transformers import AutoConfig, AutoModel

    if name is None:
        cfg = dict(config or {})
        model_type = cfg.pop("model_type")
        try:
            hf_config = AutoConfig.for_model(model_type, **cfg)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"model.config: cannot build a '{model_type}' config: {exc}") from exc
        return AutoModel.from_config(hf_config)
    try:
        return AutoModel.from_pretrained(name, **(config or {}))
    except OSError as exc:
        where = "local directory" if Path(name).exists() else "hub id"
        raise OSError(
            f"model.name: could not load {where} '{name}': {exc}\n"
            "Without network, download the model once (huggingface-cli download) and set model.name to that "
            "directory, or build a random-weight encoder with model.config."
        ) from exc


def n_prefix_tokens(encoder: nn.Module) -> int:
    """CLS plus register tokens that precede the patch tokens in ``last_hidden_state``."""
    cfg = getattr(encoder, "config", None)
    return 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)


def hidden_size(encoder: nn.Module) -> int:
    cfg = encoder.config
    if getattr(cfg, "hidden_size", None):
        return int(cfg.hidden_size)
    sizes = getattr(cfg, "hidden_sizes", None)  # CNN-style configs (ConvNeXt, ResNet)
    if sizes:
        return int(sizes[-1])
    raise ValueError(f"cannot tell the feature size of encoder {type(encoder).__name__}")


def _find_blocks(encoder: nn.Module) -> nn.ModuleList:
    for path in ("encoder.layer", "encoder.layers", "blocks", "layers", "encoder.stages"):
        node = encoder
        try:
            for part in path.split("."):
                node = getattr(node, part)
        except AttributeError:
            continue
        if isinstance(node, nn.ModuleList) and len(node) > 0:
            return node
    raise ValueError(f"cannot find the block list of encoder {type(encoder).__name__} "
                     "(looked for encoder.layer, encoder.layers, blocks, layers, encoder.stages)")


def encoder_layer_groups(encoder: nn.Module) -> tuple[nn.Module | None, list[nn.Module], nn.Module | None]:
    """(embeddings, blocks bottom→top, final norm) of a transformers encoder (Dinov2, ViT, ... ) or a timm ViT."""
    blocks = list(_find_blocks(encoder))
    embeddings = getattr(encoder, "embeddings", None) or getattr(encoder, "patch_embed", None)
    final_norm = getattr(encoder, "layernorm", None) or getattr(encoder, "norm", None)
    return embeddings, blocks, final_norm


def preprocessing_for(name: str | None, encoder: nn.Module, image_size: int | None) -> Preprocessing:
    """Preprocessing from the model's own image processor when it has one, else RAD-DINO's values.

    ``image_size`` (``data.image_size``) overrides the size; otherwise the processor's crop size, else the
    config's ``image_size``, else 518.
    """
    if name is not None:
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(name)
            mean = tuple(float(v) for v in _three(proc.image_mean))
            std = tuple(float(v) for v in _three(proc.image_std))
            crop = getattr(proc, "crop_size", None) or getattr(proc, "size", None) or {}
            size = crop.get("height") or crop.get("shortest_edge") if isinstance(crop, dict) else crop
            return Preprocessing(int(image_size or size or RAD_DINO_SIZE), mean, std, f"image_processor:{name}")
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("no image processor for %s (%s); using RAD-DINO preprocessing values", name, exc)
    size = image_size or getattr(getattr(encoder, "config", None), "image_size", None) or RAD_DINO_SIZE
    return Preprocessing(int(size), RAD_DINO_MEAN, RAD_DINO_STD, "rad-dino defaults")


def _three(values) -> list[float]:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    return values * 3 if len(values) == 1 else values


def pool_features(hidden: torch.Tensor, n_prefix: int, pooling: str) -> torch.Tensor:
    """Pool encoder output to one vector per image.

    ``mean``: mean of the patch tokens, CLS and register tokens excluded (SPEC.md §1: z = mean(H[n_prefix:])).
    ``cls``: the CLS token. A 4-D CNN feature map [B, C, H, W] is averaged over space.
    """
    if hidden.ndim == 4:
        return hidden.mean(dim=(2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        return hidden[:, n_prefix:].mean(dim=1)
    raise ValueError(f"model.pooling: expected 'mean' or 'cls', got {pooling!r}")

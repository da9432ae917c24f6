"""SAM2 for SPFT segmentation: transformers ``Sam2Model`` with one box prompt per structure, and its layer groups.

Loads by hub id (``facebook/sam2.1-hiera-tiny``) or local directory, or builds from ``model.config`` with random
weights (offline), with ``model.attn_implementation`` (fallback logged). The recipe sees it as: blocks = the Hiera
blocks of the image encoder (bottom -> top), final norm = the FPN neck (opens with the top block), embeddings = patch
embedding + position embeddings, head = the mask decoder. The prompt encoder stays frozen throughout
(docs/design.md#segmentation, docs/decisions.md#sam2).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spft.errors import ConfigError, MissingFileError
from spft.models.encoders import (
    Preprocessing,
    attention_kwargs,
    build_with_attention,
    load_image_processor,
    preprocessing_from_processor,
)
from spft.recipe import LayerGroups

log = logging.getLogger(__name__)

# Sam2ImageProcessor defaults: square resize (no crop), 1/255, ImageNet statistics.
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


class _Params(nn.Module):
    """Groups loose parameters (Hiera's position embeddings) with the patch embedding as one recipe part."""

    def __init__(self, module: nn.Module, **params: nn.Parameter):
        super().__init__()
        self.module = module
        for name, p in params.items():
            self.register_parameter(name, p)


class SpftSam2(nn.Module):
    """``Sam2Model`` called with box prompts; returns mask logits ``[B, P, S, S]`` at the model's input size."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam
        self.size = int(sam.config.prompt_encoder_config.image_size)
        # Never trained: prompts come from the ground truth; the memory token is for video.
        for p in (*sam.prompt_encoder.parameters(), sam.no_memory_embedding):
            p.requires_grad_(False)
        # In eval mode SAM2 may swap the single-mask output for the best multimask one when it looks unstable; we
        # fine-tune the single-mask token only, so evaluation must read that same token.
        sam.mask_decoder.dynamic_multimask_via_stability = False
        sam.config.mask_decoder_config.dynamic_multimask_via_stability = False

    def forward(self, pixel_values: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Mask logits for one box per structure.

        Args:
            pixel_values: ``[B, 3, S, S]`` normalised images.
            boxes: ``[B, P, 4]`` boxes ``x_min, y_min, x_max, y_max`` in input pixels.
        """
        out = self.sam(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)
        low = out.pred_masks[:, :, 0]  # [B, P, h, w]
        return F.interpolate(low.float(), size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)

    def layer_groups(self) -> LayerGroups:
        backbone = self.sam.vision_encoder.backbone
        embeddings = _Params(backbone.patch_embed, pos_embed=backbone.pos_embed,
                             pos_embed_window=backbone.pos_embed_window)
        # Not registered as a submodule of self: it only groups parameters that the model already owns.
        return LayerGroups(blocks=list(backbone.blocks), head=self.sam.mask_decoder, embeddings=embeddings,
                           final_norm=self.sam.vision_encoder.neck)


def _preprocessing(name: str | None, size: int) -> Preprocessing:
    """The square resize to the model's ``size`` with the statistics, filter and rescale of the folder's or hub
    model's ``Sam2ImageProcessor`` (its ``size {height, width}``, ``resample``, ``image_mean``/``image_std``, read
    as :func:`~spft.models.encoders.preprocessing_from_processor` reads any processor), else its class defaults
    (1024-px models: bilinear, 1/255, ImageNet statistics). The resize itself is PIL's (``spft.data.masks``):
    transformers' Sam2ImageProcessor resizes with torchvision, whose antialiased bilinear differs by a grey level.

    The model decides the size (its prompt encoder's ``image_size``: boxes are in those pixels); a processor whose
    size differs is reported and only its other values are used.
    """
    default = Preprocessing(size, SAM2_MEAN, SAM2_STD, "Sam2ImageProcessor defaults (square resize, ImageNet stats)",
                            resize="exact", crop=None, interpolation=2)
    if name is None:
        return default
    proc = load_image_processor(name, backend=None)  # Sam2ImageProcessor has no PIL backend
    if proc is None:
        return default
    source = f"image_processor:{name}"
    if getattr(proc, "do_center_crop", False):
        log.warning("%s: the image processor's centre crop is not used for SAM2 (square resize only)", source)
        proc.do_center_crop = False
    prep = preprocessing_from_processor(proc, source)
    if prep.resize != "exact" or prep.resize_size != (size, size):
        log.warning("%s resizes to %s, the model takes %d x %d images: resizing to %d x %d", source, prep.record()[
            "resize"], size, size, size, size)
    return dataclasses.replace(prep, size=size, resize="exact", resize_size=(size, size), crop=None,
                               source=f"{source} (square resize to {size})")


def build_sam2(model_cfg) -> tuple[SpftSam2, Preprocessing]:
    """The SAM2 model and its preprocessing from ``model.name`` and/or ``model.config`` (a ``Sam2Config`` mapping)."""
    from transformers import AutoModel, Sam2Config, Sam2Model

    name, config = model_cfg.name, dict(model_cfg.config or {})
    config.pop("model_type", None)
    attn = getattr(model_cfg, "attn_implementation", None)
    if name is None:
        if not config:
            raise ConfigError("model: give model.name (e.g. facebook/sam2.1-hiera-tiny) or model.config (Sam2Config)")
        try:
            sam_config = Sam2Config(**config)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"model.config: cannot build a Sam2Config: {exc}") from exc

        def make(impl: str | None) -> nn.Module:
            return AutoModel.from_config(sam_config, **attention_kwargs(impl))  # a Sam2Model
    else:
        def make(impl: str | None) -> nn.Module:
            try:
                return Sam2Model.from_pretrained(name, **attention_kwargs(impl), **config)
            except OSError as exc:
                where = "local directory" if Path(name).exists() else "hub id"
                raise MissingFileError(f"model.name: could not load {where} '{name}': {exc}\nWithout network, "
                                       f"download it once (hf download {name} --local-dir DIR) and set "
                                       "model.name=DIR.") from exc
    model = SpftSam2(build_with_attention(make, attn))  # model.attn_implementation, fallback logged
    return model, _preprocessing(name, model.size)

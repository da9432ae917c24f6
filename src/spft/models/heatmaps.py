"""Where a :class:`~spft.models.classifier.SpftClassifier` looks: Grad-CAM (ViT and CNN encoders), attention rollout,
mapping a crop-sized map back onto the original image, overlays and the pointing game.

Every map is a float32 array ``[B, H, W]`` (``H, W``: ``size``, default the input's), non-negative, higher = more
evidence, bilinearly upsampled from the encoder's token / feature grid. Raw scale (not normalised per image), so
maps of one image for different classes are comparable; :func:`overlay` normalises for display.

* :func:`vit_gradcam` (Dinov2, ViT): the patch tokens ``A`` [N, D] entering the last block (CLS and register tokens,
  :func:`~spft.models.encoders.n_prefix_tokens`, excluded) and the gradient ``G`` of the class logit w.r.t. them;
  channel weights ``w = mean over tokens of G``, map ``ReLU(A @ w)`` on the patch grid. ``A`` is the block's
  *input*, the residual stream before any normalisation (a forward pre-hook on the block). This is not
  pytorch-grad-cam's ViT recipe: that one targets ``blocks[-1].norm1`` and so takes norm1's *output* — the per-token
  LayerNorm of these tokens, scaled by its affine weights — whose gradient is only the attention branch's, where the
  gradient spft uses also carries the residual path and the MLP branch; and it does not subtract the mean (below).
  The two give different maps. Why the input and not the block's output: with ``pooling: cls`` the output patch
  tokens do not reach the logit at all, and with ``pooling: mean`` they reach it only through the final LayerNorm
  and the mean, so ``G`` is nearly the same for every token and the map has no spatial selectivity — measured on the
  phantom pointing game (``benchmarks/pointing_game.py``, 8-epoch demo config): 0.10 hit rate from the output tokens
  (chance 0.10), 0.54 from the input tokens. The token scores ``A @ w`` have their mean over the image subtracted
  before the ReLU: the tokens share a large common component that shifts every score alike (on small models often
  below zero everywhere, an all-zero map: 77% of maps on a 4-block width-64 model); the peak is unchanged wherever
  the plain map had a positive one.
* :func:`cnn_gradcam` (ResNet, ConvNeXt ...): the same on the last stage's 4-D feature map ``[C, h, w]``.
* :func:`attention_rollout` (Abnar & Zuidema 2020): per layer the head-averaged attention plus the identity (the
  residual), rows renormalised, multiplied from the first layer to the last; the map is the row of the pooled
  token(s) — the CLS token with ``pooling: cls``, else the mean of the patch-token rows (spft pools patch tokens) —
  over the patch tokens. Needs attention weights: the encoder is switched to ``eager`` attention for the call
  (``set_attn_implementation``) and back.

The maps are in the geometry of ``pixel_values`` (the crop). :func:`to_original` puts one back onto the original
image given the model's :class:`~spft.models.encoders.Preprocessing` (resize, then centre crop), zero outside the
crop window. :func:`pointing_game` scores maps against boxes (``x_min, y_min, x_max, y_max``, pixels, max
exclusive, as the phantom generator's ``boxes.csv``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spft.compat import attn_implementation
from spft.errors import ConfigError, DataError
from spft.models.encoders import encoder_layer_groups, n_prefix_tokens


def _class_indices(class_index, batch: int, device) -> torch.Tensor:
    idx = torch.as_tensor(class_index, dtype=torch.long, device=device).reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(batch)
    if idx.numel() != batch:
        raise DataError(f"class_index: one class or one per image ({batch}), got {idx.numel()}")
    return idx


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


class _Capture:
    """Forward (pre-)hook keeping a block's output (or input) hidden state as a tensor gradients can reach."""

    def __init__(self, module: nn.Module, use_input: bool):
        self.value: torch.Tensor | None = None
        if use_input:
            self.handle = module.register_forward_pre_hook(self._pre, with_kwargs=True)
        else:
            self.handle = module.register_forward_hook(self._post)

    def _track(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:  # a frozen encoder: start the graph here
            x = x.detach().requires_grad_(True)
        self.value = x
        return x

    def _pre(self, module, args, kwargs):
        if args:
            return (self._track(args[0]), *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
        return args, {**kwargs, key: self._track(kwargs[key])}

    def _post(self, module, args, output):
        if isinstance(output, torch.Tensor):
            return self._track(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (self._track(output[0]), *output[1:])
        if hasattr(output, "last_hidden_state"):  # ModelOutput-like
            output.last_hidden_state = self._track(output.last_hidden_state)
            return output
        raise ConfigError(f"cannot read the hidden state of {type(module).__name__} for Grad-CAM")

    def remove(self) -> None:
        self.handle.remove()


def _last_block(model) -> nn.Module:
    return encoder_layer_groups(model.encoder)[1][-1]


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    out = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return out.clamp_min(0).detach().cpu().numpy().astype(np.float32)


def _enable_grad_from_here(module, args) -> None:
    """Forward pre-hook on the last block: autograd records from this block on (the forward below it ran under
    ``no_grad``)."""
    torch.set_grad_enabled(True)


def _grad_of_logit(model, pixel_values: torch.Tensor, class_index, use_input: bool) -> tuple[torch.Tensor, ...]:
    """The last block's input (ViT) or output (CNN) hidden state and the gradient of each image's class logit
    w.r.t. it. Grad-CAM needs no gradient below that block, so the blocks below run without autograd: no
    activation of theirs is kept for a backward pass (at RAD-DINO size, 518 px, the eager-attention maps alone are
    ~90 MB per image and block), and memory is that of one block's backward per image — bounded by the batch the
    caller passes, not by the encoder's depth."""
    last = _last_block(model)
    gate = last.register_forward_pre_hook(_enable_grad_from_here)  # registered first: runs before the capture
    capture = _Capture(last, use_input)
    try:
        with _eval_mode(model), torch.no_grad():  # restores the caller's grad mode on exit
            logits = model(pixel_values)
            idx = _class_indices(class_index, len(logits), logits.device)
            if capture.value is None:
                raise ConfigError("the encoder's last block did not run: cannot compute Grad-CAM")
            score = logits.gather(1, idx[:, None]).sum()  # each image's own class logit (images are independent)
            (grad,) = torch.autograd.grad(score, capture.value)
    finally:
        capture.remove()
        gate.remove()
    return capture.value.detach(), grad.detach()


def patch_grid(model, pixel_values: torch.Tensor) -> tuple[int, int]:
    """``(rows, cols)`` of the ViT patch grid for ``pixel_values`` ([B, 3, H, W])."""
    patch = getattr(model.encoder.config, "patch_size", None)
    if not patch:
        raise ConfigError(f"encoder {type(model.encoder).__name__} has no patch_size: not a ViT")
    patch = patch if isinstance(patch, int) else int(patch[0])
    return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch


def _tokens_to_grid(tokens: torch.Tensor, model, pixel_values: torch.Tensor) -> torch.Tensor:
    rows, cols = patch_grid(model, pixel_values)
    if tokens.shape[1] != rows * cols:
        raise ConfigError(f"{tokens.shape[1]} patch tokens do not fill a {rows}x{cols} patch grid")
    return tokens.reshape(tokens.shape[0], rows, cols)


def vit_gradcam(model, pixel_values: torch.Tensor, class_index, size: tuple[int, int] | None = None) -> np.ndarray:
    """Grad-CAM on the patch tokens entering a ViT encoder's last block (module docstring): ``[B, H, W]``."""
    hidden, grad = _grad_of_logit(model, pixel_values, class_index, use_input=True)  # see the module docstring
    if hidden.ndim != 3:
        raise ConfigError("vit_gradcam needs a ViT encoder (3-D hidden states); use cnn_gradcam for a CNN")
    prefix = n_prefix_tokens(model.encoder)
    tokens, grads = hidden[:, prefix:].float(), grad[:, prefix:].float()
    weights = grads.mean(dim=1)  # [B, D]
    score = torch.einsum("bnd,bd->bn", tokens, weights)
    cam = F.relu(score - score.mean(dim=1, keepdim=True))  # see the module docstring: never an all-zero map
    return _upsample(_tokens_to_grid(cam, model, pixel_values), size or tuple(pixel_values.shape[-2:]))


def cnn_gradcam(model, pixel_values: torch.Tensor, class_index, size: tuple[int, int] | None = None) -> np.ndarray:
    """Grad-CAM on the last stage's feature map of a CNN encoder (ResNet, ConvNeXt ...): ``[B, H, W]``."""
    hidden, grad = _grad_of_logit(model, pixel_values, class_index, use_input=False)
    if hidden.ndim != 4:
        raise ConfigError("cnn_gradcam needs a CNN encoder (4-D feature maps); use vit_gradcam for a ViT")
    weights = grad.float().mean(dim=(2, 3))  # [B, C]
    cam = F.relu(torch.einsum("bchw,bc->bhw", hidden.float(), weights))
    return _upsample(cam, size or tuple(pixel_values.shape[-2:]))


def is_vit(model) -> bool:
    """Whether the encoder is a ViT (patch tokens) rather than a CNN (feature maps)."""
    return bool(getattr(model.encoder.config, "patch_size", None)) and not getattr(model.encoder.config,
                                                                                  "hidden_sizes", None)


def gradcam(model, pixel_values: torch.Tensor, class_index, size: tuple[int, int] | None = None) -> np.ndarray:
    """Grad-CAM for the model's encoder kind: :func:`vit_gradcam` or :func:`cnn_gradcam`."""
    return (vit_gradcam if is_vit(model) else cnn_gradcam)(model, pixel_values, class_index, size)


@contextlib.contextmanager
def eager_attention(encoder: nn.Module):
    """The encoder switched to eager attention (which returns attention weights) inside the block, then back."""
    cfg = getattr(encoder, "config", None)
    before = attn_implementation(cfg)
    setter = getattr(encoder, "set_attn_implementation", None)
    switch = before not in (None, "eager") and setter is not None
    if switch:
        setter("eager")
    try:
        yield
    finally:
        if switch:
            setter(before)


@torch.no_grad()
def rollout_matrix(attentions: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """``[B, T, T]`` attention rollout of per-layer attentions ``[B, heads, T, T]`` (first layer first): heads
    averaged, ``residual * I + (1 - residual) * A``, rows renormalised, multiplied top layer first. Rows sum to 1."""
    result = None
    for attn in attentions:
        a = attn.float().mean(dim=1)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype).expand_as(a)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ConfigError("attention rollout needs at least one attention layer")
    return result


@torch.no_grad()
def attention_rollout(model, pixel_values: torch.Tensor, size: tuple[int, int] | None = None,
                      source: str | None = None, residual: float = 0.5) -> np.ndarray:
    """Attention rollout of a ViT encoder (see the module docstring): ``[B, H, W]``; class-agnostic.

    ``source``: ``"cls"`` (the CLS token's row) or ``"patches"`` (the mean of the patch tokens' rows); default
    from the model's pooling. Before upsampling, the map over the patch grid sums to at most 1 (the rest of the
    row is the CLS and register tokens' share).
    """
    encoder = model.encoder
    source = source or ("cls" if getattr(model, "pooling", "mean") == "cls" else "patches")
    if source not in ("cls", "patches"):
        raise ConfigError(f"attention rollout source: expected 'cls' or 'patches', got {source!r}")
    with _eval_mode(model), eager_attention(encoder):
        out = encoder(pixel_values=pixel_values, output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions:
        raise ConfigError(f"encoder {type(encoder).__name__} returned no attention weights (a CNN has none)")
    roll = rollout_matrix(attentions, residual)
    prefix = n_prefix_tokens(encoder)
    rows = roll[:, 0] if source == "cls" else roll[:, prefix:].mean(dim=1)
    grid = _tokens_to_grid(rows[:, prefix:], model, pixel_values)
    return _upsample(grid, size or tuple(pixel_values.shape[-2:]))


# --- geometry, display, scoring ------------------------------------------------------------------------------------


def crop_window(prep, width: int, height: int) -> tuple[float, float, float, float, int, int]:
    """Where the model's crop lies on an original ``width x height`` image: ``(left, top, right, bottom)`` in
    original pixels (may extend past the image where the crop pads), and the crop's ``(crop_w, crop_h)``.

    The same geometry as :class:`spft.data.transforms.ImageTransform`: resize (``shortest_edge``: the short side to
    ``resize_size[0]``, the long one ``int(edge * long / short)``; ``exact``; ``none``), then a centre crop starting
    at ``((H - h) // 2, (W - w) // 2)`` of the resized image.
    """
    from spft.data.transforms import ImageTransform

    rw, rh = ImageTransform(prep).resized_size(width, height) or (width, height)
    crop = getattr(prep, "crop", None)
    ch, cw = (rh, rw) if crop is None else (int(crop[0]), int(crop[1]))
    top, left = (rh - ch) // 2, (rw - cw) // 2
    sx, sy = width / rw, height / rh  # resized -> original pixels
    return left * sx, top * sy, (left + cw) * sx, (top + ch) * sy, cw, ch


def to_original(heatmap: np.ndarray, prep, width: int, height: int) -> np.ndarray:
    """A crop-sized map (``[h, w]``, any resolution covering the crop) put back onto the original ``width x height``
    image: bilinear resampling inside the crop window, zero outside it. float32 ``[height, width]``."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise DataError(f"to_original: expected one [h, w] map, got shape {heatmap.shape}")
    left, top, right, bottom, _, _ = crop_window(prep, width, height)
    # original pixel centres in the map's coordinates (align_corners=False convention)
    xs = ((np.arange(width) + 0.5) - left) / (right - left) * heatmap.shape[1] - 0.5
    ys = ((np.arange(height) + 0.5) - top) / (bottom - top) * heatmap.shape[0] - 0.5
    inside_x = ((np.arange(width) + 0.5) >= left) & ((np.arange(width) + 0.5) < right)
    inside_y = ((np.arange(height) + 0.5) >= top) & ((np.arange(height) + 0.5) < bottom)
    x0 = np.clip(np.floor(xs).astype(int), 0, heatmap.shape[1] - 1)
    y0 = np.clip(np.floor(ys).astype(int), 0, heatmap.shape[0] - 1)
    x1, y1 = np.minimum(x0 + 1, heatmap.shape[1] - 1), np.minimum(y0 + 1, heatmap.shape[0] - 1)
    fx = np.clip(xs - np.floor(xs), 0, 1)[None, :]
    fy = np.clip(ys - np.floor(ys), 0, 1)[:, None]
    fx = np.where((xs < 0)[None, :] | (xs > heatmap.shape[1] - 1)[None, :], 0.0, fx)  # clamp at the borders
    fy = np.where((ys < 0)[:, None] | (ys > heatmap.shape[0] - 1)[:, None], 0.0, fy)
    top_row = heatmap[y0][:, x0] * (1 - fx) + heatmap[y0][:, x1] * fx
    bottom_row = heatmap[y1][:, x0] * (1 - fx) + heatmap[y1][:, x1] * fx
    out = top_row * (1 - fy) + bottom_row * fy
    out[~inside_y, :] = 0.0
    out[:, ~inside_x] = 0.0
    return out.astype(np.float32)


def overlay(image, heatmap: np.ndarray, alpha: float = 0.45, cmap: str = "jet"):
    """The image (PIL or array) with ``heatmap`` (``[H, W]``, resized to the image when needed) blended on top as
    a colour map, normalised to its own maximum; returns an RGB ``PIL.Image``."""
    from matplotlib import colormaps
    from PIL import Image

    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    base = base.convert("RGB")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != (base.height, base.width):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(base.size, Image.Resampling.BILINEAR))
    peak = float(heat.max()) if heat.size else 0.0
    norm = np.clip(heat / peak, 0, 1) if peak > 0 else np.zeros_like(heat)
    colour = (colormaps[cmap](norm)[..., :3] * 255).astype(np.float32)
    weight = (alpha * norm)[..., None]  # no evidence: the image shows through unchanged
    mixed = np.asarray(base, dtype=np.float32) * (1 - weight) + colour * weight
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def pointing_game(maps, boxes) -> list[bool | None]:
    """Per map: whether its peak lies inside any of its boxes (a *hit*); None for a map without boxes or without a
    positive value. ``maps``: ``[B, H, W]`` (or a list of ``[H, W]``); ``boxes``: per map a list of ``(x_min, y_min,
    x_max, y_max)`` in that map's pixels, max exclusive (a single box per map is accepted too). Ties at the peak:
    a hit when any peak pixel is inside."""
    out: list[bool | None] = []
    maps = list(maps)
    if len(boxes) != len(maps):
        raise DataError(f"pointing_game: {len(maps)} maps but {len(boxes)} box lists")
    for heat, bxs in zip(maps, boxes, strict=True):
        heat = np.asarray(heat, dtype=np.float64)
        if bxs is not None and len(bxs) == 4 and np.isscalar(bxs[0]):
            bxs = [bxs]
        if not bxs or heat.size == 0 or not np.nanmax(heat) > 0:
            out.append(None)
            continue
        ys, xs = np.nonzero(heat == np.nanmax(heat))
        hit = any(((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).any() for x0, y0, x1, y1 in bxs)
        out.append(bool(hit))
    return out

"""Vision encoders through transformers: load by hub id / local directory or build from a config with random weights.

Also owns the two facts about an encoder the recipe needs: its layer groups (embeddings, blocks bottom→top, final
norm) and its preprocessing (from the model's own image processor when it has one, else RAD-DINO's values —
never ImageNet statistics for RAD-DINO); and the two transformers-level speed switches of an encoder: its attention
implementation (``model.attn_implementation``: requested at build time, verified, fallback logged) and gradient
checkpointing (``model.gradient_checkpointing``, non-reentrant so it works when only the top blocks train).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spft.errors import ConfigError, MissingFileError

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


def build_encoder(name: str | None = None, config: dict | None = None,
                  attn_implementation: str | None = "sdpa") -> nn.Module:
    """The encoder as a transformers model.

    Args:
        name: hub id (``microsoft/rad-dino``) or a local directory; loaded with pretrained weights.
        config: a transformers config mapping with ``model_type`` (e.g. ``{"model_type": "dinov2",
            "hidden_size": 64, "num_hidden_layers": 4, ...}``): random weights, no network. When both are given
            the mapping overrides fields of the named model's config and weights are still loaded.
        attn_implementation: ``model.attn_implementation`` (``sdpa`` | ``eager`` | ``flash_attention_2`` |
            ``flex_attention`` ...; ``None``: transformers' default). When the model or this environment cannot use
            it, the encoder is built with the next of sdpa → eager and a warning says so (see
            :func:`build_with_attention`); :func:`attention_implementation` tells which one is in effect.
    """
    from transformers import AutoConfig, AutoModel

    if name is None:
        cfg = dict(config or {})
        model_type = cfg.pop("model_type")
        try:
            hf_config = AutoConfig.for_model(model_type, **cfg)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"model.config: cannot build a '{model_type}' config: {exc}") from exc

        def make(impl: str | None) -> nn.Module:
            return AutoModel.from_config(hf_config, **attention_kwargs(impl))
    else:
        def make(impl: str | None) -> nn.Module:
            try:
                return AutoModel.from_pretrained(name, **attention_kwargs(impl), **(config or {}))
            except OSError as exc:
                where = "local directory" if Path(name).exists() else "hub id"
                raise MissingFileError(
                    f"model.name: could not load {where} '{name}': {exc}\n"
                    "Without network, download the model once (huggingface-cli download) and set model.name to that "
                    "directory, or build a random-weight encoder with model.config."
                ) from exc
    return build_with_attention(make, attn_implementation)


# --- attention implementation ------------------------------------------------------------------------------------

_FALLBACKS = ("sdpa", "eager")  # tried in this order after the requested implementation fails


def attention_kwargs(impl: str | None) -> dict:
    return {} if impl is None else {"attn_implementation": impl}


def check_attention_name(requested: str | None) -> None:
    """Refuse a misspelt ``model.attn_implementation`` (a typo must not silently become a fallback)."""
    if requested is None or "/" in requested:  # None: transformers' default; "org/repo": a hub kernel
        return
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    except ImportError:  # older transformers: let it judge
        return
    if requested not in known:
        raise ConfigError(f"model.attn_implementation: unknown attention implementation {requested!r}; "
                         f"expected one of {', '.join(known)} (or null for transformers' default)")


def has_attention(model: nn.Module) -> bool:
    """Whether ``model`` has attention layers at all (a ResNet or ConvNeXt has none)."""
    return any("attention" in type(m).__name__.lower() for m in model.modules())


def attention_implementation(model: nn.Module) -> str | None:
    """The attention implementation a transformers model actually runs (``config._attn_implementation``).

    ``None`` when the model has no attention layers (CNN encoders) or is not a transformers model.
    """
    cfg = getattr(model, "config", None)
    if cfg is None or not has_attention(model):
        return None
    return getattr(cfg, "_attn_implementation", None)


def _fallback_order(requested: str | None) -> list[str | None]:
    order = [requested] + [f for f in _FALLBACKS if f != requested]
    return order if requested is not None else [None]


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__


def _report_attention(model: nn.Module, requested: str | None, errors: list[str]) -> None:
    actual = getattr(getattr(model, "config", None), "_attn_implementation", None)
    model._spft_attn_requested = requested  # apply_speed_options reads it: the request was already handled
    if requested is None or actual == requested:
        return
    what = type(model).__name__
    if not has_attention(model):
        log.info("%s has no attention layers: model.attn_implementation=%r does not apply", what, requested)
        return
    why = f" ({'; '.join(errors)})" if errors else ""
    log.warning("model.attn_implementation=%r is not available for %s%s; using %r instead", requested, what, why,
                actual)


def build_with_attention(make: Callable[[str | None], nn.Module], requested: str | None) -> nn.Module:
    """``make(impl)`` with the requested attention implementation, else with sdpa, else eager — never silently.

    ``make`` builds the model with ``attn_implementation=impl`` (``None``: transformers' default). transformers
    raises ``ImportError`` (e.g. flash_attention_2 without the flash-attn package) or ``ValueError`` (the model does
    not support it) when it cannot honour a request; the next implementation is then tried and a warning names the
    requested one, the reason and the one in effect. A request transformers itself substitutes (e.g. a hub kernel for
    a missing flash-attn) is reported the same way, from ``model.config._attn_implementation``.
    """
    check_attention_name(requested)
    errors: list[str] = []
    order = _fallback_order(requested)
    for i, impl in enumerate(order):
        try:
            model = make(impl)
        except (ImportError, ValueError) as exc:
            if i == len(order) - 1 or not _attention_error(exc, impl):
                raise
            errors.append(f"{impl}: {_short(exc)}")
            continue
        _report_attention(model, requested, errors)
        return model
    raise AssertionError("unreachable")


def _attention_error(exc: BaseException, impl: str | None) -> bool:
    """Whether ``exc`` is transformers refusing the attention implementation (not some other config problem)."""
    if isinstance(exc, ImportError):
        return True
    text = str(exc).lower()
    return impl is not None and ("attention" in text or "attn" in text or "scaled_dot_product" in text)


def use_attention(model: nn.Module, requested: str | None) -> str | None:
    """Switch an already built transformers model to ``requested`` attention (sdpa → eager fallback, logged).

    For models built without going through :func:`build_encoder`'s request; returns the implementation in effect.
    A model built with the same request is left as it is (its fallback, if any, was already reported).
    """
    if getattr(model, "_spft_attn_requested", object()) == requested or requested is None:
        return attention_implementation(model)
    check_attention_name(requested)
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None or not has_attention(model):
        _report_attention(model, requested, [])
        return attention_implementation(model)
    errors: list[str] = []
    for impl in _fallback_order(requested):
        if impl == getattr(model.config, "_attn_implementation", None):
            break
        try:
            setter(impl)
            break
        except (ImportError, ValueError) as exc:
            errors.append(f"{impl}: {_short(exc)}")
    _report_attention(model, requested, errors)
    return attention_implementation(model)


# --- gradient checkpointing --------------------------------------------------------------------------------------


def checkpointed_layers(model: nn.Module) -> int:
    """How many layers of ``model`` recompute their activations in backward (transformers' per-layer flag)."""
    return sum(1 for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True)


def enable_gradient_checkpointing(encoder: nn.Module) -> int:
    """Turn on gradient checkpointing for every block of a transformers encoder; returns the number of blocks.

    Non-reentrant (``use_reentrant=False``): with the reentrant variant a block whose input does not require grad —
    every block above a frozen one while only the top blocks train — returns an output without ``grad_fn`` and its
    own parameters silently get no gradient. Models that declare ``supports_gradient_checkpointing`` (Dinov2, ViT)
    go through ``activation_checkpointing_enable`` (transformers ≥ 5; ``gradient_checkpointing_enable`` before).
    Models that do not declare it but are built from transformers' ``GradientCheckpointingLayer`` blocks (SAM2's
    Hiera image encoder) get the same per-layer switch set directly. Anything else (CNN encoders such as ResNet) is
    a ``ValueError`` naming ``model.gradient_checkpointing``.
    """
    from torch.utils.checkpoint import checkpoint

    kwargs = {"use_reentrant": False}
    what = type(encoder).__name__
    if getattr(encoder, "supports_gradient_checkpointing", False):
        if hasattr(encoder, "activation_checkpointing_enable"):
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        try:
            from transformers.modeling_layers import GradientCheckpointingLayer
        except ImportError:
            GradientCheckpointingLayer = ()  # noqa: N806 - older transformers: no per-layer mechanism
        layers = [m for m in encoder.modules() if isinstance(m, GradientCheckpointingLayer)]
        func = functools.partial(checkpoint, **kwargs)
        for layer in layers:
            layer.gradient_checkpointing = True
            layer._gradient_checkpointing_func = func
    n = checkpointed_layers(encoder)
    if n == 0:
        raise ConfigError(f"model.gradient_checkpointing: {what} does not support gradient checkpointing in "
                         "transformers (no checkpointable blocks); set model.gradient_checkpointing=false")
    return n


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
    raise ConfigError(f"cannot tell the feature size of encoder {type(encoder).__name__}")


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
    raise ConfigError(f"cannot find the block list of encoder {type(encoder).__name__} "
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
    raise ConfigError(f"model.pooling: expected 'mean' or 'cls', got {pooling!r}")

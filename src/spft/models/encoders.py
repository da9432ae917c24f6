"""Vision encoders through transformers: load by hub id / local directory or build from a config with random weights.

Also owns the two facts about an encoder the recipe needs: its layer groups (embeddings, blocks bottom→top, final
norm) and its preprocessing (:class:`Preprocessing`: the full recipe of the model's own image processor when it has
one — resize rule and size, centre crop, interpolation, rescale, mean, std — else RAD-DINO's values, never ImageNet
statistics for RAD-DINO); and the two transformers-level speed switches of an encoder: its attention
implementation (``model.attn_implementation``: requested at build time, verified, fallback logged) and gradient
checkpointing (``model.gradient_checkpointing``, non-reentrant so it works when only the top blocks train).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spft.compat import (
    attention_function_names,
    attn_implementation,
    enable_layer_checkpointing,
    gradient_checkpointing_layer_class,
)
from spft.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

# RAD-DINO's preprocessor_config.json (microsoft/rad-dino, BitImageProcessor): resize of the shortest edge to 518
# (bicubic), centre crop 518 x 518, rescale 1/255, these statistics, grey -> RGB.
RAD_DINO_MEAN = (0.5307, 0.5307, 0.5307)
RAD_DINO_STD = (0.2583, 0.2583, 0.2583)
RAD_DINO_SIZE = 518
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC

# PIL resample codes (what transformers' PILImageResampling holds) and their names.
INTERPOLATIONS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
RESIZE_RULES = ("shortest_edge", "exact", "none")


@dataclass(frozen=True)
class Preprocessing:
    """How images become ``pixel_values`` (applied by :class:`spft.data.transforms.ImageTransform`).

    Steps, in transformers' order: resize (``resize``: ``"shortest_edge"`` — the shorter side becomes
    ``resize_size[0]``, the other ``int(edge * long / short)``; ``"exact"`` — to ``resize_size = (height, width)``;
    ``"none"``), with PIL filter ``interpolation``; centre crop to ``crop = (height, width)`` (zero padding where the
    image is smaller; ``None``: no crop); multiply by ``rescale`` (``None``: not rescaled); ``(x - mean) / std``.

    ``size`` is the side of what reaches the model (every image becomes ``size x size``): the image cache, the
    feature-cache key and segmentation read it. Built with only the first four fields (``Preprocessing(size, mean,
    std, source)``) it is RAD-DINO's rule at that size: shortest edge to ``size``, crop ``size x size``, bicubic.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "image_processor:<name>", "rad-dino defaults", ...
    resize: str = "shortest_edge"
    resize_size: tuple[int, ...] | None = None  # (edge,) for shortest_edge, (height, width) for exact; None: size
    crop: tuple[int, int] | None | str = "size"  # (height, width); None: no crop; "size": (size, size)
    interpolation: int = BICUBIC  # PIL resample code
    rescale: float | None = 1 / 255

    def __post_init__(self):
        if self.resize not in RESIZE_RULES:
            raise ConfigError(f"preprocessing: resize rule must be one of {', '.join(RESIZE_RULES)}, got "
                              f"{self.resize!r}")
        if self.resize_size is None and self.resize != "none":
            default = (self.size,) if self.resize == "shortest_edge" else (self.size, self.size)
            object.__setattr__(self, "resize_size", default)
        if self.crop == "size":
            object.__setattr__(self, "crop", (self.size, self.size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def interpolation_name(self) -> str:
        return INTERPOLATIONS.get(self.interpolation, str(self.interpolation))

    @property
    def cache_side(self) -> int | None:
        """Side of the square ``spft prepare cache`` stores so that the full preprocessing of the stored image gives
        the very same pixels as that of the original (:meth:`ImageTransform.resize_crop`): the resize output's
        shortest edge for a shortest-edge resize (the crop then happens at load time, e.g. 256 for dinov2-base's
        224 crop), the exact resize size, or the crop when nothing is resized. ``None`` when no such square exists
        (the crop pads a resized image, or a non-square exact resize)."""
        if self.resize == "shortest_edge":
            edge = self.resize_size[0]
            return edge if self.crop is not None and max(self.crop) <= edge else None
        if self.resize == "exact":
            height, width = self.resize_size
            return height if height == width else None
        return self.crop[0] if self.crop is not None and self.crop[0] == self.crop[1] else None

    def geometry(self) -> str:
        """The steps that decide the pixels before rescaling (the image-cache key): resize, crop, filter."""
        resize = "no resize" if self.resize == "none" else f"resize {self.resize} {list(self.resize_size)}"
        crop = "no crop" if self.crop is None else f"centre crop {list(self.crop)}"
        return f"{resize}, {crop}, {self.interpolation_name}"

    def record(self) -> dict:
        """The full recipe as ``data.json`` records it."""
        if self.resize == "shortest_edge":
            resize = {"shortest_edge": self.resize_size[0]}
        elif self.resize == "exact":
            resize = {"height": self.resize_size[0], "width": self.resize_size[1]}
        else:
            resize = None
        return {"size": self.size, "resize": resize,
                "crop": None if self.crop is None else {"height": self.crop[0], "width": self.crop[1]},
                "interpolation": self.interpolation_name, "resample": self.interpolation, "rescale": self.rescale,
                "mean": list(self.mean), "std": list(self.std), "source": self.source}


def preprocessing_from_record(record: dict):
    """:class:`~spft.models.encoders.Preprocessing` from the record ``data.json`` keeps (``Preprocessing.record``).
    A record with only size/mean/std/source (older runs) is RAD-DINO's rule at that size."""
    kwargs = {}
    if "resize" in record:
        resize = record["resize"]
        if resize is None:
            kwargs.update(resize="none", resize_size=None)
        elif "shortest_edge" in resize:
            kwargs.update(resize="shortest_edge", resize_size=(int(resize["shortest_edge"]),))
        else:
            kwargs.update(resize="exact", resize_size=(int(resize["height"]), int(resize["width"])))
    if "crop" in record:
        crop = record["crop"]
        kwargs["crop"] = None if crop is None else (int(crop["height"]), int(crop["width"]))
    if "resample" in record:
        kwargs["interpolation"] = int(record.get("resample", BICUBIC))
    if "rescale" in record:
        kwargs["rescale"] = None if record["rescale"] is None else float(record["rescale"])
    return Preprocessing(int(record["size"]), tuple(record["mean"]), tuple(record["std"]),
                         str(record.get("source", "data.json")), **kwargs)


def build_encoder(name: str | None = None, config: dict | None = None,
                  attn_implementation: str | None = "sdpa") -> nn.Module:
    """The encoder as a transformers model.

    Args:
        name: hub id (``microsoft/rad-dino``), a local directory or a built-in ``spft:`` name
            (:mod:`spft.models.foundation`); loaded with pretrained weights.
        config: a transformers config mapping with ``model_type`` (e.g. ``{"model_type": "dinov2",
            "hidden_size": 64, "num_hidden_layers": 4, ...}``): random weights, no network. When both are given
            the named model fixes the architecture: keys that would change its weights' shapes
            (:data:`ARCHITECTURE_KEYS`, e.g. the demo config's tiny ``hidden_size``) are ignored with one warning
            line, and the other keys (e.g. ``drop_path_rate``) override the named model's config.
        attn_implementation: ``model.attn_implementation`` (``sdpa`` | ``eager`` | ``flash_attention_2`` |
            ``flex_attention`` ...; ``None``: transformers' default). When the model or this environment cannot use
            it, the encoder is built with the next of sdpa → eager and a warning says so (see
            :func:`build_with_attention`); :func:`attention_implementation` tells which one is in effect.
    """
    from transformers import AutoConfig, AutoModel

    from spft.models.foundation import resolve_model_name

    name = resolve_model_name(name)  # a built-in spft: name -> its cached folder (pretrained on first use)
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
        config = _without_architecture(name, config)

        def make(impl: str | None) -> nn.Module:
            try:
                return AutoModel.from_pretrained(name, **attention_kwargs(impl), **(config or {}))
            except OSError as exc:
                where = "local directory" if Path(name).exists() else "hub id"
                raise MissingFileError(
                    f"model.name: could not load {where} '{name}': {exc}\n"
                    f"Without network, download the model once (hf download {name} --local-dir DIR) and set "
                    "model.name=DIR, or build a random-weight encoder with model.config."
                ) from exc
    return build_with_attention(make, attn_implementation)


# Config fields that fix a transformers encoder's weight shapes: taken from the named model, never from model.config.
ARCHITECTURE_KEYS = frozenset({
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "intermediate_size",
    "patch_size", "image_size", "num_channels", "hidden_sizes", "depths", "embed_dim", "num_register_tokens",
    "use_swiglu_ffn", "layerscale_value", "qkv_bias",
})


def _without_architecture(name: str, config: dict | None) -> dict | None:
    """``config`` less the :data:`ARCHITECTURE_KEYS` that differ from the named model's own config, with one warning
    naming them: pointing the demo config (``model.config`` of a tiny random Dinov2) at RAD-DINO with
    ``model.name=DIR`` must load RAD-DINO, not fail on a size mismatch between the two."""
    if not config:
        return config
    from transformers import AutoConfig

    try:
        own = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        own = None  # from_pretrained below reports the missing / offline model in one line
    ignored = {k: v for k, v in config.items() if k in ARCHITECTURE_KEYS
               and (own is None or getattr(own, k, None) != v)}
    if ignored:
        log.warning("warning: model.config %s ignored: model.name=%s fixes the architecture (its own %s)%s",
                    ", ".join(f"{k}={v}" for k, v in ignored.items()), name,
                    ", ".join(f"{k}={getattr(own, k, '?')}" for k in ignored if k != "model_type") or "config",
                    "; the other model.config keys apply" if len(ignored) < len(config) else "")
    return {k: v for k, v in config.items() if k not in ignored and k != "model_type"} or None


# --- attention implementation ------------------------------------------------------------------------------------

_FALLBACKS = ("sdpa", "eager")  # tried in this order after the requested implementation fails


def attention_kwargs(impl: str | None) -> dict:
    return {} if impl is None else {"attn_implementation": impl}


def check_attention_name(requested: str | None) -> None:
    """Refuse a misspelt ``model.attn_implementation`` (a typo must not silently become a fallback)."""
    if requested is None or "/" in requested:  # None: transformers' default; "org/repo": a hub kernel
        return
    names = attention_function_names()
    if names is None:  # older transformers: let it judge
        return
    known = ["eager", *names]
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
    return attn_implementation(cfg)


def _fallback_order(requested: str | None) -> list[str | None]:
    order = [requested] + [f for f in _FALLBACKS if f != requested]
    return order if requested is not None else [None]


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__


def _report_attention(model: nn.Module, requested: str | None, errors: list[str]) -> None:
    actual = attn_implementation(getattr(model, "config", None))
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
        if impl == attn_implementation(model.config):
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
        layer_class = gradient_checkpointing_layer_class() or ()  # older transformers: no per-layer mechanism
        layers = [m for m in encoder.modules() if isinstance(m, layer_class)]
        func = functools.partial(checkpoint, **kwargs)
        for layer in layers:
            enable_layer_checkpointing(layer, func)
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
    """The full preprocessing of the model's own image processor when it has one, else RAD-DINO's.

    ``image_size`` (``data.image_size``) overrides the geometry only: shortest edge resized to ``image_size`` and
    centre crop ``image_size x image_size`` (what the option has always meant); the processor's interpolation,
    rescale and statistics stay. Without a processor: RAD-DINO's recipe at ``image_size``, else the config's
    ``image_size``, else 518.
    """
    if name is not None:
        proc = load_image_processor(name)
        if proc is not None:
            return preprocessing_from_processor(proc, f"image_processor:{name}", image_size)
    size = image_size or getattr(getattr(encoder, "config", None), "image_size", None) or RAD_DINO_SIZE
    return Preprocessing(int(size), RAD_DINO_MEAN, RAD_DINO_STD, "rad-dino defaults")


def load_image_processor(name: str, backend: str | None = "pil"):
    """The image processor of a hub id or local folder, or ``None`` with a warning (``backend``: transformers 5's
    backend, the PIL one by default — only its attributes are read; ``None`` for processors that have no PIL one).
    A built-in ``spft:`` name reads its cached folder's processor."""
    from spft.models.foundation import resolve_model_name

    name = resolve_model_name(name)
    try:
        from transformers import AutoImageProcessor

        if backend is None:
            return AutoImageProcessor.from_pretrained(name)
        try:
            return AutoImageProcessor.from_pretrained(name, backend=backend)
        except TypeError:  # transformers < 5: no backend argument
            return AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        log.warning("no image processor for %s (%s); using default preprocessing values", name, exc)
        return None


def preprocessing_from_processor(proc, source: str, image_size: int | None = None) -> Preprocessing:
    """:class:`Preprocessing` from a transformers image processor's attributes (``do_resize``, ``size``,
    ``do_center_crop``, ``crop_size``, ``resample``, ``do_rescale``, ``rescale_factor``, ``do_normalize``,
    ``image_mean``, ``image_std``), whatever form the sizes take (transformers 5's ``SizeDict``, a dict, an int, a
    ``(height, width)`` pair). ``image_size``: see :func:`preprocessing_for`.

    Raises:
        ConfigError: The processor's output is not a fixed square, or it uses a resize rule spft does not implement
            (``longest_edge``, ``max_height`` ...); the message suggests ``data.image_size``.
    """
    interpolation = _resample_code(getattr(proc, "resample", None))
    rescale = float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else None
    if getattr(proc, "do_normalize", True):
        mean = tuple(float(v) for v in _three(proc.image_mean))
        std = tuple(float(v) for v in _three(proc.image_std))
    else:
        mean, std = (0.0,) * 3, (1.0,) * 3
    common = dict(mean=mean, std=std, interpolation=interpolation, rescale=rescale)
    if image_size:
        n = int(image_size)
        return Preprocessing(n, source=f"{source}, data.image_size={n} (shortest edge {n}, centre crop {n}x{n})",
                             resize="shortest_edge", resize_size=(n,), crop=(n, n), **common)
    hint = "set data.image_size=N to resize the shortest edge to N and centre-crop N x N"
    resize, resize_size = "none", None
    if getattr(proc, "do_resize", True):
        size = size_fields(getattr(proc, "size", None), getattr(proc, "default_to_square", True))
        if set(size) == {"shortest_edge"}:
            resize, resize_size = "shortest_edge", (size["shortest_edge"],)
        elif {"height", "width"} <= set(size) and not set(size) & {"shortest_edge", "longest_edge"}:
            resize, resize_size = "exact", (size["height"], size["width"])
        else:
            raise ConfigError(f"{source}: resize rule {size} is not supported by spft; {hint}")
    crop = None
    if getattr(proc, "do_center_crop", False):
        fields = size_fields(getattr(proc, "crop_size", None), True)
        if not {"height", "width"} <= set(fields):
            raise ConfigError(f"{source}: crop_size {fields} has no height and width; {hint}")
        crop = (fields["height"], fields["width"])
    out = crop or (resize_size if resize == "exact" else None)
    if out is None or out[0] != out[1]:
        what = "a variable size" if out is None else f"{out[0]}x{out[1]} images"
        raise ConfigError(f"{source}: the processor gives {what}, spft needs a fixed square input; {hint}")
    return Preprocessing(int(out[0]), source=source, resize=resize, resize_size=resize_size, crop=crop, **common)


def size_fields(value, default_to_square: bool = True) -> dict[str, int]:
    """The set entries of a processor size (``SizeDict``, dict, int, ``(height, width)``) as a plain dict.

    An int means ``height = width = n`` when ``default_to_square`` (transformers' rule), else ``shortest_edge = n``.
    """
    if value is None:
        return {}
    if isinstance(value, bool):
        raise ConfigError(f"image processor size: expected a size, got {value!r}")
    if isinstance(value, (int, float)):
        n = int(value)
        return {"height": n, "width": n} if default_to_square else {"shortest_edge": n}
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return size_fields(value[0], default_to_square)
        if len(value) == 2:
            return {"height": int(value[0]), "width": int(value[1])}
        raise ConfigError(f"image processor size: expected 1 or 2 numbers, got {value!r}")
    if isinstance(value, Mapping):
        items = value.items()
    elif dataclasses.is_dataclass(value):  # transformers 5's SizeDict
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    else:
        keys = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
        items = ((k, getattr(value, k, None)) for k in keys)
    return {str(k): int(v) for k, v in items if v is not None}


def _resample_code(value) -> int:
    """PIL resample code of a processor's ``resample`` (PILImageResampling, int, or torchvision InterpolationMode);
    ``None`` is transformers' default for its PIL resize, bilinear."""
    if value is None:
        return 2
    if isinstance(value, int):
        return int(value)
    name = str(getattr(value, "value", value)).lower().rsplit(".", 1)[-1]
    codes = {v: k for k, v in INTERPOLATIONS.items()}
    if name not in codes:
        raise ConfigError(f"image processor resample: unknown interpolation {value!r}")
    return codes[name]


def _three(values) -> list[float]:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    return values * 3 if len(values) == 1 else values


def pool_features(hidden: torch.Tensor, n_prefix: int, pooling: str) -> torch.Tensor:
    """Pool encoder output to one vector per image.

    ``mean``: mean of the patch tokens, CLS and register tokens excluded (z = mean(H[n_prefix:]),
    docs/design.md#pooling-and-head).
    ``cls``: the CLS token. A 4-D CNN feature map [B, C, H, W] is averaged over space.
    """
    if hidden.ndim == 4:
        return hidden.mean(dim=(2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        return hidden[:, n_prefix:].mean(dim=1)
    raise ConfigError(f"model.pooling: expected 'mean' or 'cls', got {pooling!r}")

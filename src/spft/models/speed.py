"""Speed options of a built model: attention, gradient checkpointing, channels-last, torch.compile.

Owns applying ``model.attn_implementation``, ``model.gradient_checkpointing``, ``model.channels_last`` and
``trainer.compile`` to an :class:`~spft.models.classifier.SpftClassifier` or :class:`~spft.models.sam2.SpftSam2`,
and the ``speed`` record of what is actually in effect that goes into ``env.json``. Precision (``bf16-mixed``) is the
trainer's business: the caller fills it in.

Every option acts on the encoder only and in place, so parameter names — and therefore checkpoints — are the same
with and without them: a checkpoint written by a compiled, checkpointed, channels-last model loads into a plain one.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from spft.compat import dynamo_recompile_limit, is_compiled_in_place, set_dynamo_recompile_limit
from spft.models.encoders import (
    attention_implementation,
    checkpointed_layers,
    enable_gradient_checkpointing,
    encoder_layer_groups,
    use_attention,
)

log = logging.getLogger(__name__)

# Progressive unfreezing changes which parameters require grad once per step, and each change (and train vs
# no-grad evaluation) is a new graph for torch.compile; dynamo's default of 8 graphs per function would be used up
# by a 12-block unfreeze schedule and the encoder would silently run uncompiled from then on.
COMPILE_RECOMPILE_LIMIT = 64


def encoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, list[nn.Module]]:
    """(encoder, transformers root, blocks) of an spft model.

    The encoder is what gets compiled and checkpointed (``SpftClassifier.encoder``; SAM2's image encoder
    ``sam.vision_encoder``); the root is the transformers model whose config holds the attention implementation
    (the encoder itself; the whole ``Sam2Model`` for SAM2, so its mask decoder follows). A bare transformers encoder
    is its own encoder and root.
    """
    if hasattr(model, "sam"):  # SpftSam2
        return model.sam.vision_encoder, model.sam, list(model.layer_groups().blocks)
    encoder = model.encoder if hasattr(model, "head") and isinstance(getattr(model, "encoder", None), nn.Module) \
        else model  # SpftClassifier, else a bare encoder (a Dinov2Model's own .encoder is only its block stack)
    try:
        blocks = encoder_layer_groups(encoder)[1]
    except ValueError:
        blocks = []
    return encoder, encoder, blocks


def is_cnn(model: nn.Module) -> bool:
    """Whether the encoder's blocks contain convolutions (ResNet, ConvNeXt), not just a conv patch embedding (ViT)."""
    encoder, _, blocks = encoder_parts(model)
    if blocks:
        return any(isinstance(m, nn.Conv2d) for b in blocks for m in b.modules())
    return sum(isinstance(m, nn.Conv2d) for m in encoder.modules()) > 1


def wants_channels_last(model: nn.Module, setting: bool | None, on_gpu: bool) -> bool:
    """``model.channels_last``: ``true``/``false`` force it; ``null`` = on for a CNN encoder on a GPU, else off."""
    if setting is not None:
        return bool(setting)
    return bool(on_gpu and is_cnn(model))


def _is_channels_last(encoder: nn.Module) -> bool:
    """Whether the encoder's conv weights are stored channels-last (1x1 kernels are both layouts, so not counted)."""
    weights = [m.weight for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-2:].numel() > 1]
    return bool(weights) and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                                 for w in weights)


def is_compiled(encoder: nn.Module) -> bool:
    """Whether ``encoder`` was compiled in place (``nn.Module.compile``)."""
    return is_compiled_in_place(encoder)


def compile_encoder(encoder: nn.Module, **compile_kwargs) -> None:
    """``torch.compile`` the encoder in place (``nn.Module.compile``): state_dict keys stay as they are.

    (``torch.compile(module)`` would wrap it in an ``OptimizedModule`` whose keys gain an ``_orig_mod.`` prefix.)
    A deep copy (the EMA model) is uncompiled: ``nn.Module.__getstate__`` drops the compiled call.
    """
    limit_name, limit = dynamo_recompile_limit()
    if limit < COMPILE_RECOMPILE_LIMIT:
        log.info("trainer.compile: torch._dynamo.config.%s %d -> %d (one graph per unfreeze step)", limit_name,
                 limit, COMPILE_RECOMPILE_LIMIT)
        set_dynamo_recompile_limit(COMPILE_RECOMPILE_LIMIT)
    encoder.compile(**compile_kwargs)


def speed_report(model: nn.Module, cfg=None, precision: str | None = None) -> dict:
    """What is in effect on ``model`` now, read from the model itself (not from the config), for ``env.json``.

    ``attn_implementation``: transformers' ``config._attn_implementation`` (``None``: no attention layers, a CNN);
    ``attn_implementation_requested`` is added when ``cfg.model.attn_implementation`` asked for another one (a logged
    fallback). ``gradient_checkpointing``: any encoder block recomputes activations in backward.
    ``channels_last``: the encoder's conv weights are channels-last. ``compile``: the encoder is compiled.
    ``precision``: given by the caller (the Lightning precision actually used).
    """
    encoder, root, _ = encoder_parts(model)
    report = {
        "attn_implementation": attention_implementation(root),
        "gradient_checkpointing": checkpointed_layers(encoder) > 0,
        "channels_last": _is_channels_last(encoder),
        "compile": is_compiled(encoder),
        "precision": precision,
    }
    requested = getattr(getattr(cfg, "model", None), "attn_implementation", None)
    if requested is not None and report["attn_implementation"] not in (None, requested):
        report["attn_implementation_requested"] = requested
    return report


def apply_speed_options(model: nn.Module, cfg, on_gpu: bool, compile_kwargs: dict | None = None) -> dict:
    """Apply the speed options of ``cfg`` to ``model`` in place and return :func:`speed_report`'s record.

    Call it after building the model and before the EMA copy, the optimizer and ``Trainer.fit``; ``precision`` in
    the record is ``None`` for the caller to fill in. In order:

    - ``model.attn_implementation``: already requested when the encoder was built with it (``build_encoder(...,
      attn_implementation=)`` / ``build_sam2``); otherwise switched now with ``set_attn_implementation``. Either way
      an implementation that cannot be used falls back to sdpa, then eager, with a warning.
    - ``model.gradient_checkpointing``: every encoder block (non-reentrant, so frozen lower blocks are fine); a
      ``ValueError`` for encoders transformers cannot checkpoint (CNNs).
    - ``model.channels_last``: ``model.to(memory_format=torch.channels_last)`` (see :func:`wants_channels_last`).
      Inputs may stay NCHW: a conv with channels-last weights runs channels-last.
    - ``trainer.compile``: :func:`compile_encoder` (in place; ``compile_kwargs`` go to ``torch.compile``). The first
      step of each unfreeze stage recompiles.
    """
    model_cfg, trainer_cfg = cfg.model, cfg.trainer
    encoder, root, _ = encoder_parts(model)
    use_attention(root, model_cfg.attn_implementation)
    if model_cfg.gradient_checkpointing:
        n = enable_gradient_checkpointing(encoder)
        log.info("model.gradient_checkpointing: %d encoder blocks recompute their activations in backward", n)
    if wants_channels_last(model, model_cfg.channels_last, on_gpu):
        encoder.to(memory_format=torch.channels_last)
    if trainer_cfg.compile:
        compile_encoder(encoder, **(compile_kwargs or {}))
    return speed_report(model, cfg, precision=None)

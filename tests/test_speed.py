"""Speed options: attention implementation, gradient checkpointing, torch.compile, channels-last, env.json.

All on the CPU with tiny models. torch.compile is exercised with the ``eager`` dynamo backend: tracing, in-place
compilation and state_dict keys are the same as with inductor, which needs ~50 s of C++ compilation even for a tiny
model on 2 cores.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from unittest import mock

import pytest
import torch
from segmentation_fixtures import TINY_SAM2
from torch import nn

from spft.config import load_config
from spft.config.datasets import CsvData
from spft.config.schema import SpftConfig
from spft.models.classifier import SpftClassifier
from spft.models.encoders import attention_implementation, build_encoder, enable_gradient_checkpointing
from spft.models.speed import apply_speed_options, is_cnn, speed_report, wants_channels_last

TINY = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 64, "patch_size": 8, "image_size": 32}
TINY_RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
               "layer_type": "basic"}


def _cfg(**model) -> SpftConfig:
    cfg = SpftConfig(data=CsvData())
    cfg.model.config = dict(TINY)
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def _classifier(attn: str | None = "sdpa", config: dict | None = None, seed: int = 0) -> SpftClassifier:
    torch.manual_seed(seed)
    return SpftClassifier(build_encoder(config=dict(config or TINY), attn_implementation=attn), n_classes=3)


def _train_top2(model: SpftClassifier) -> None:
    """Only the top 2 blocks, the final norm and the head train: the blocks' input does not require grad."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in (*model.encoder.encoder.layer[-2:], model.encoder.layernorm, model.head):
        for p in module.parameters():
            p.requires_grad_(True)


def _grads(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same head dropout masks in both runs
    model(x).square().mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


# --- attention -----------------------------------------------------------------------------------------------------


def test_attention_implementation_is_honoured_and_recorded():
    x = torch.randn(2, 3, 32, 32)
    sdpa, eager = _classifier("sdpa").eval(), _classifier("eager").eval()
    assert attention_implementation(sdpa.encoder) == "sdpa" and attention_implementation(eager.encoder) == "eager"
    assert speed_report(sdpa, _cfg())["attn_implementation"] == "sdpa"
    sdpa_fn = torch.nn.functional.scaled_dot_product_attention
    with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa_fn) as spy:
        out_eager = eager(x)
        assert spy.call_count == 0  # eager really runs the eager path
        out_sdpa = sdpa(x)
        assert spy.call_count == TINY["num_hidden_layers"]
    torch.testing.assert_close(out_sdpa, out_eager, atol=1e-5, rtol=1e-4)


def test_attention_from_config_is_applied_to_a_model_built_without_it():
    model = _classifier()  # build_classifier does not pass model.attn_implementation: sdpa, the default
    speed = apply_speed_options(model, _cfg(attn_implementation="eager"), on_gpu=False)
    assert speed["attn_implementation"] == "eager" and model.encoder.config._attn_implementation == "eager"
    assert model.encoder.encoder.config._attn_implementation == "eager"  # Dinov2Encoder follows


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None,
                    reason="tests the fallback when flash-attn is missing; where it is installed there is no fallback "
                           "to test (spft's dependencies never install it)")
def test_unavailable_attention_falls_back_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="spft.models.encoders"):
        model = _classifier("flash_attention_2")
    assert attention_implementation(model.encoder) == "sdpa"
    assert "flash_attention_2" in caplog.text and "using 'sdpa'" in caplog.text
    speed = speed_report(model, _cfg(attn_implementation="flash_attention_2"), "32-true")
    assert speed["attn_implementation"] == "sdpa" and speed["attn_implementation_requested"] == "flash_attention_2"

    caplog.clear()  # the same through apply_speed_options on a model built with sdpa
    with caplog.at_level(logging.WARNING, logger="spft.models.encoders"):
        speed = apply_speed_options(_classifier(), _cfg(attn_implementation="flash_attention_2"), on_gpu=False)
    assert speed["attn_implementation"] == "sdpa" and "flash_attention_2" in caplog.text


def test_attention_is_requested_when_loading_a_local_directory(tmp_path):
    _classifier().encoder.save_pretrained(tmp_path / "enc")
    assert attention_implementation(build_encoder(name=str(tmp_path / "enc"), attn_implementation="eager")) == "eager"
    assert attention_implementation(build_encoder(name=str(tmp_path / "enc"))) == "sdpa"


def test_misspelt_attention_is_an_error():
    with pytest.raises(ValueError, match="model.attn_implementation"):
        _classifier("spda")


def test_cnn_has_no_attention_and_no_warning(caplog):
    with caplog.at_level(logging.WARNING):
        model = _classifier(config=TINY_RESNET)
    assert attention_implementation(model.encoder) is None and not caplog.records


# --- gradient checkpointing ----------------------------------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients_with_frozen_lower_blocks():
    x = torch.randn(2, 3, 32, 32)
    plain, ckpt = _classifier(), _classifier()
    _train_top2(plain)
    _train_top2(ckpt)
    speed = apply_speed_options(ckpt, _cfg(gradient_checkpointing=True), on_gpu=False)
    assert speed["gradient_checkpointing"] is True
    assert speed_report(plain, _cfg())["gradient_checkpointing"] is False

    calls = []
    hook = ckpt.encoder.encoder.layer[-1].mlp.register_forward_hook(lambda *a: calls.append(1))
    g_ckpt = _grads(ckpt, x)
    hook.remove()
    assert len(calls) == 2  # forward, then the recompute in backward: checkpointing is really on
    g_plain = _grads(plain, x)
    assert g_plain.keys() == g_ckpt.keys() and any("encoder.encoder.layer.3" in k for k in g_ckpt)
    for name in g_plain:
        torch.testing.assert_close(g_ckpt[name], g_plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_checkpointing_of_the_sam2_image_encoder():
    from spft.models.sam2 import build_sam2

    cfg = load_config("configs/phantom_segment_sam2.yaml", [TINY_SAM2])
    x, boxes = torch.randn(2, 3, 64, 64), torch.tensor([[[4.0, 4, 30, 40]] * 3] * 2)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model, _ = build_sam2(cfg.model)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.layer_groups().blocks[-2].parameters():  # a middle block: frozen input, trained block
            p.requires_grad_(True)
        if checkpointing:
            cfg.model.gradient_checkpointing = True
            assert apply_speed_options(model, cfg, on_gpu=False)["gradient_checkpointing"] is True
        model.train()
        model(x, boxes).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and plain
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_checkpointing_of_a_cnn_is_a_clear_error():
    with pytest.raises(ValueError, match="model.gradient_checkpointing"):
        enable_gradient_checkpointing(build_encoder(config=dict(TINY_RESNET)))


# --- torch.compile -------------------------------------------------------------------------------------------------


def test_compile_keeps_state_dict_keys_and_checkpoints_load_uncompiled(monkeypatch, tmp_path):
    import torch._dynamo

    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    monkeypatch.setattr(torch._dynamo.config, limit, 8)  # apply_speed_options raises it; restore afterwards
    model = _classifier().eval()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    try:
        assert apply_speed_options(model, _cfg(), on_gpu=False)["compile"] is False
        cfg = _cfg()
        cfg.trainer.compile = True
        speed = apply_speed_options(model, cfg, on_gpu=False, compile_kwargs={"backend": "eager"})
        assert speed["compile"] is True and getattr(torch._dynamo.config, limit) >= 64
        assert list(model.state_dict()) == keys  # no "_orig_mod." prefix
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected)  # the compiled forward (dynamo, eager backend)
        torch.save({"state_dict": model.state_dict()}, tmp_path / "last.ckpt")
        plain = _classifier(seed=1)
        plain.load_state_dict(torch.load(tmp_path / "last.ckpt")["state_dict"], strict=True)
        with torch.no_grad():
            torch.testing.assert_close(plain.eval()(x), expected)
        assert speed_report(copy.deepcopy(model))["compile"] is False  # the EMA copy is a plain module
    finally:
        torch._dynamo.reset()


# --- channels-last -------------------------------------------------------------------------------------------------


def test_channels_last_is_for_cnn_encoders_on_a_gpu():
    vit, cnn = _classifier(), _classifier(config=TINY_RESNET)
    assert not is_cnn(vit) and is_cnn(cnn)
    assert wants_channels_last(cnn, None, on_gpu=True) and not wants_channels_last(cnn, None, on_gpu=False)
    assert not wants_channels_last(vit, None, on_gpu=True)
    assert wants_channels_last(vit, True, on_gpu=False) and not wants_channels_last(cnn, False, on_gpu=True)

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = cnn.eval()(x)
    speed = apply_speed_options(cnn, _cfg(), on_gpu=True)  # channels_last: null
    assert speed["channels_last"] is True and speed["attn_implementation"] is None
    conv = next(m for m in cnn.encoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(cnn(x), expected, atol=1e-5, rtol=1e-4)
    assert apply_speed_options(vit, _cfg(), on_gpu=True)["channels_last"] is False
    assert apply_speed_options(_classifier(), _cfg(channels_last=True), on_gpu=False)["channels_last"] is True


# --- the record ----------------------------------------------------------------------------------------------------


def test_speed_record_defaults_and_env_json():
    from spft.experiments.rundir import environment

    speed = apply_speed_options(_classifier(), _cfg(), on_gpu=False) | {"precision": "bf16-mixed"}
    assert speed == {"attn_implementation": "sdpa", "gradient_checkpointing": False, "channels_last": False,
                     "compile": False, "precision": "bf16-mixed"}
    env = environment("cpu", speed=speed)
    assert env["speed"] == speed and env["device"] == "cpu"
    assert "speed" not in environment("cpu")  # the old call still works

"""Heatmaps: Grad-CAM (tiny Dinov2, tiny ResNet), attention rollout, the crop-to-original geometry, overlay, pointing
game."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spft.config.schema import ClassifierModelConfig as ModelConfig
from spft.models.classifier import build_classifier
from spft.models.encoders import Preprocessing, attention_implementation
from spft.models.heatmaps import (
    attention_rollout,
    cnn_gradcam,
    crop_window,
    gradcam,
    overlay,
    pointing_game,
    rollout_matrix,
    to_original,
    vit_gradcam,
)

DINO = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2,
        "patch_size": 8, "image_size": 32}
RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
          "layer_type": "basic"}


def _model(config, pooling="mean", classes=3, attn="sdpa"):
    torch.manual_seed(0)
    model, _ = build_classifier(ModelConfig(config=config, pooling=pooling, head_hidden=16,
                                            attn_implementation=attn), classes, 32)
    return model


def _images(n=2, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_vit_gradcam_shapes_sign_and_class_sensitivity(pooling):
    model, x = _model(DINO, pooling), _images()
    maps = [vit_gradcam(model, x, c) for c in range(3)]
    for m in maps:
        assert m.shape == (2, 32, 32) and m.dtype == np.float32 and (m >= 0).all()
    assert any(m.max() > 0 for m in maps)
    assert not np.allclose(maps[0], maps[1])  # another class, another map
    alone = vit_gradcam(model, x[1:], 1)  # images are independent of the rest of the batch
    assert np.allclose(alone[0], maps[1][1], atol=1e-5)
    assert gradcam(model, x, [0, 2], size=(48, 40)).shape == (2, 48, 40)
    assert model.training  # the model's mode is restored


def test_gradcam_with_a_frozen_encoder():
    model, x = _model(DINO), _images()
    for p in model.parameters():
        p.requires_grad_(False)
    assert vit_gradcam(model, x, 0).max() > 0 or vit_gradcam(model, x, 1).max() > 0


@pytest.mark.parametrize("config, fn", [(DINO, vit_gradcam), (RESNET, cnn_gradcam)])
def test_gradcam_keeps_no_activation_below_the_last_block(config, fn, monkeypatch):
    """Grad-CAM differentiates from the last block only: the blocks below run without autograd, so what is kept for
    the backward pass is one block's activations however deep the encoder (issue 21 item 5: 8.8 GB for 6 images at
    RAD-DINO size) — and the maps equal those of a forward with autograd through every block."""
    from spft.models import heatmaps as hm

    deep = {**config, "num_hidden_layers": 6} if config is DINO else {**config, "depths": [3, 3]}
    model, x = _model(deep), _images()

    def gradcam_keeping(saved: list):
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            return fn(model, x, 1)

    kept = []
    maps = gradcam_keeping(kept)
    with monkeypatch.context() as m:  # the reference: autograd on for the whole forward, as before the change
        m.setattr(hm, "_enable_grad_from_here", lambda module, args: None)
        m.setattr(hm.torch, "no_grad", torch.enable_grad)
        everything = []
        reference = gradcam_keeping(everything)
    assert np.allclose(maps, reference, atol=1e-5)
    assert sum(kept) < 0.5 * sum(everything), (sum(kept), sum(everything))
    with torch.no_grad():  # the caller's grad mode is restored, whichever it was
        fn(model, x, 0)
        assert not torch.is_grad_enabled()
    fn(model, x, 0)
    assert torch.is_grad_enabled()


def test_attention_rollout_sums_and_restores_attention():
    model, x = _model(DINO), _images()
    assert attention_implementation(model.encoder) == "sdpa"
    grid = attention_rollout(model, x, size=(4, 4))  # the 4x4 patch grid itself: no resampling
    assert grid.shape == (2, 4, 4) and (grid >= 0).all()
    assert (grid.reshape(2, -1).sum(1) <= 1 + 1e-5).all() and (grid.reshape(2, -1).sum(1) > 0.5).all()
    assert attention_implementation(model.encoder) == "sdpa"
    up = attention_rollout(model, x)
    assert up.shape == (2, 32, 32) and up.dtype == np.float32
    cls = attention_rollout(model, x, size=(4, 4), source="cls")
    assert not np.allclose(cls, grid)
    attn = torch.softmax(torch.randn(1, 2, 5, 5), -1)
    roll = rollout_matrix([attn, attn, attn])
    assert torch.allclose(roll.sum(-1), torch.ones(1, 5)) and (roll >= 0).all()


def test_cnn_gradcam_on_a_tiny_resnet():
    model, x = _model(RESNET), _images()
    maps = [cnn_gradcam(model, x, c) for c in range(3)]
    for m in maps:
        assert m.shape == (2, 32, 32) and m.dtype == np.float32 and (m >= 0).all()
    assert any(m.max() > 0 for m in maps) and not np.allclose(maps[0], maps[2])
    assert np.array_equal(gradcam(model, x, 2), maps[2])
    with pytest.raises(Exception, match="ViT"):
        vit_gradcam(model, x, 0)


def test_to_original_undoes_resize_and_centre_crop():
    prep = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, "test")  # shortest edge to 32, centre crop 32 x 32
    # 64 x 48 (w x h) -> resized 42 x 32 -> crop columns 5..37 of the resized image
    left, top, right, bottom, cw, ch = crop_window(prep, 64, 48)
    assert (cw, ch) == (32, 32) and top == 0 and bottom == 48
    assert left == pytest.approx(5 * 64 / 42) and right == pytest.approx(37 * 64 / 42)
    full = to_original(np.ones((32, 32), np.float32), prep, 64, 48)
    assert full.shape == (48, 64) and full.dtype == np.float32
    assert full[:, 8:56].min() == 1.0 and full[:, :7].max() == 0.0 and full[:, 57:].max() == 0.0
    ramp = np.tile(np.arange(32, dtype=np.float32), (32, 1))  # increases left to right
    mapped = to_original(ramp, prep, 64, 48)
    inside = mapped[10, 8:56]
    assert (np.diff(inside) >= 0).all() and inside[0] < 2 and inside[-1] > 29


def test_overlay_and_pointing_game():
    image = Image.fromarray(np.full((40, 50), 100, np.uint8))
    heat = np.zeros((20, 25), np.float32)
    heat[5, 20] = 1.0
    out = overlay(image, heat)
    assert out.mode == "RGB" and out.size == (50, 40)
    assert np.asarray(out)[0, 0].tolist() == [100, 100, 100]  # no evidence: unchanged
    maps = np.zeros((3, 10, 10), np.float32)
    maps[0, 2, 3] = 1.0  # peak at x=3, y=2
    maps[1, 8, 8] = 1.0
    hits = pointing_game(maps, [[(2, 1, 5, 4)], [(0, 0, 5, 5), (6, 6, 8, 8)], []])
    assert hits == [True, False, None]  # max exclusive: x=8 is outside (6, 6, 8, 8)
    assert pointing_game(maps[:1], [(3, 2, 4, 3)]) == [True]  # one box per map

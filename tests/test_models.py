"""Encoder, pooling and head: CLS (and register tokens) excluded from mean pooling, the paper's head, layer groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spft.models.classifier import MlpHead, SpftClassifier
from spft.models.encoders import (
    RAD_DINO_MEAN,
    RAD_DINO_STD,
    build_encoder,
    encoder_layer_groups,
    pool_features,
    preprocessing_for,
)

TINY = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
        "mlp_ratio": 2, "patch_size": 8, "image_size": 32}


def test_mean_pooling_excludes_cls():
    hidden = torch.randn(2, 1 + 16, 8)
    pooled = pool_features(hidden, n_prefix=1, pooling="mean")
    assert torch.allclose(pooled, hidden[:, 1:].mean(1))
    hidden2 = hidden.clone()
    hidden2[:, 0] += 100.0  # changing CLS must not change the pooled vector
    assert torch.equal(pool_features(hidden2, 1, "mean"), pooled)
    assert torch.equal(pool_features(hidden, 1, "cls"), hidden[:, 0])


def test_classifier_features_are_patch_token_mean():
    torch.manual_seed(0)
    model = SpftClassifier(build_encoder(config=dict(TINY)), n_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    out = model.encoder(pixel_values=x).last_hidden_state
    assert out.shape[1] == 1 + 16
    assert torch.allclose(model.features(x), out[:, 1:].mean(1), atol=1e-6)
    assert model(x).shape == (2, 5)


def test_register_tokens_are_excluded_too():
    cfg = dict(TINY, model_type="dinov2_with_registers", num_register_tokens=4)
    model = SpftClassifier(build_encoder(config=cfg), n_classes=2).eval()
    assert model.n_prefix == 5
    x = torch.randn(1, 3, 32, 32)
    out = model.encoder(pixel_values=x).last_hidden_state
    assert out.shape[1] == 1 + 4 + 16
    assert torch.allclose(model.features(x), out[:, 5:].mean(1), atol=1e-6)


def test_head_is_the_papers_mlp():
    head = MlpHead(768, 14)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.LayerNorm, nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert (head.net[1].in_features, head.net[1].out_features) == (768, 512)
    assert (head.net[4].in_features, head.net[4].out_features) == (512, 512)
    assert head.net[7].out_features == 14 and head.net[3].p == 0.2


def test_layer_groups_of_dinov2():
    enc = build_encoder(config=dict(TINY))
    embeddings, blocks, norm = encoder_layer_groups(enc)
    assert embeddings is enc.embeddings and blocks == list(enc.encoder.layer) and norm is enc.layernorm
    groups = SpftClassifier(enc, 3).layer_groups()
    assert len(groups.blocks) == 3


def test_preprocessing_defaults_to_rad_dino_values():
    enc = build_encoder(config=dict(TINY))
    prep = preprocessing_for(None, enc, None)
    assert prep.mean == RAD_DINO_MEAN and prep.std == RAD_DINO_STD and prep.size == 32
    assert preprocessing_for(None, enc, 48).size == 48


def test_bad_model_type_is_a_clear_error():
    with pytest.raises(ValueError, match="model.config"):
        build_encoder(config={"model_type": "not-a-model"})


def test_missing_named_model_offline_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="model.name"):
        build_encoder(name=str(tmp_path / "no-such-model"))

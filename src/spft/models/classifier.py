"""The SPFT classifier: encoder → pooled patch tokens → MLP head, and its recipe layer groups.

Pooling and head as in docs/design.md#pooling-and-head.
"""

from __future__ import annotations

import torch
from torch import nn

from spft.errors import ConfigError
from spft.models.encoders import (
    Preprocessing,
    build_encoder,
    encoder_layer_groups,
    hidden_size,
    n_prefix_tokens,
    pool_features,
    preprocessing_for,
)
from spft.recipe import LayerGroups


class MlpHead(nn.Module):
    """LayerNorm(D) → Linear(D,H) → GELU → Dropout → Linear(H,H) → GELU → Dropout → Linear(H,C), as in the paper."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 512, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class SpftClassifier(nn.Module):
    """Encoder + pooling + head; ``forward(pixel_values) -> logits [B, C]``."""

    def __init__(self, encoder: nn.Module, n_classes: int, pooling: str = "mean", hidden: int = 512,
                 dropout: float = 0.2):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"model.pooling: expected 'mean' or 'cls', got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.n_prefix = n_prefix_tokens(encoder)
        self.head = MlpHead(hidden_size(encoder), n_classes, hidden, dropout)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.encoder(pixel_values=pixel_values)
        return pool_features(out.last_hidden_state, self.n_prefix, self.pooling)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))

    def layer_groups(self) -> LayerGroups:
        embeddings, blocks, final_norm = encoder_layer_groups(self.encoder)
        return LayerGroups(blocks=blocks, head=self.head, embeddings=embeddings, final_norm=final_norm)


def build_classifier(model_cfg, n_classes: int, image_size: int | None = None) -> tuple[SpftClassifier, Preprocessing]:
    """Build the classifier and its preprocessing from the ``model`` config section."""
    encoder = build_encoder(model_cfg.name, model_cfg.config, model_cfg.attn_implementation)
    model = SpftClassifier(encoder, n_classes, model_cfg.pooling, model_cfg.head_hidden, model_cfg.head_dropout)
    return model, preprocessing_for(model_cfg.name, encoder, image_size)

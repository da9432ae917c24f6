"""Models: encoders loaded through transformers (by name, local path or config), pooling, heads, the classifier,
the SAM2 wrapper for segmentation and the speed options of a built model."""

from spft.models.classifier import SpftClassifier, build_classifier
from spft.models.encoders import Preprocessing, build_encoder, encoder_layer_groups

__all__ = ["Preprocessing", "SpftClassifier", "build_classifier", "build_encoder", "encoder_layer_groups"]

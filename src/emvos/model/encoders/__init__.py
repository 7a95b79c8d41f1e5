"""Frozen image encoders publishing their channels and strides."""

from emvos.model.encoders import densenet, efficientnet  # noqa: F401  (registers the encoders)
from emvos.model.encoders.base import (
    Encoder,
    FeatureInfo,
    Features,
    build_encoder,
    encoder_names,
    register_encoder,
)

__all__ = ["Encoder", "FeatureInfo", "Features", "build_encoder", "encoder_names", "register_encoder"]

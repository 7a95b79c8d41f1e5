"""The interface every image encoder implements, and the registry that builds them by name.

An encoder maps an RGB batch in ``[0, 1]`` to three feature maps at strides 4, 8 and 16, and
publishes their channel counts so that the rest of the network derives its widths from them.
Encoders are frozen: their parameters never require gradients and their BatchNorm layers always
use running statistics, whatever ``train()`` is called with.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Features(NamedTuple):
    """Multi-scale features of a batch of frames.

    Attributes:
        s4: ``(B, C4, H/4, W/4)``.
        s8: ``(B, C8, H/8, W/8)``.
        s16: ``(B, C16, H/16, W/16)``.
    """

    s4: Tensor
    s8: Tensor
    s16: Tensor


@dataclass(frozen=True)
class FeatureInfo:
    """Channels of the stride-4, stride-8 and stride-16 features an encoder returns."""

    channels: tuple[int, int, int]
    strides: tuple[int, int, int] = (4, 8, 16)

    @property
    def stride(self) -> int:
        """The coarsest stride: inputs must be padded to a multiple of it."""
        return self.strides[-1]

    def channels_at(self, stride: int) -> int:
        """Channels of the features at ``stride`` (one of :attr:`strides`)."""
        return self.channels[self.strides.index(stride)]


class Encoder(nn.Module):
    """Base class of the frozen image encoders.

    Subclasses set ``feature_info``, build their layers, and implement :meth:`extract`, which
    receives ImageNet-normalised images (or whatever normalisation the subclass's ``mean`` and
    ``std`` describe).
    """

    feature_info: FeatureInfo
    #: Where the ImageNet weights come from and their licence, stored with them in emvos weight files
    #: (``None``: not recorded).
    weights_provenance: dict[str, str] | None = None

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> None:
        """Stop gradients to every parameter and put BatchNorm layers in evaluation mode for good."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Encoder:
        """Keep the encoder in evaluation mode (frozen BatchNorm) whatever ``mode`` is."""
        return super().train(False)

    def forward(self, images: Tensor) -> Features:
        """Encode frames.

        Args:
            images: ``(B, 3, H, W)`` RGB in ``[0, 1]``, ``H`` and ``W`` multiples of the stride.

        Returns:
            The stride-4, stride-8 and stride-16 features.
        """
        return self.extract((images - self.mean) / self.std)

    def extract(self, x: Tensor) -> Features:
        """Features of normalised images ``(B, 3, H, W)``."""
        raise NotImplementedError


EncoderFactory = Callable[[str | Path | None], Encoder]
_REGISTRY: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator that makes an encoder factory available to :func:`build_encoder` under ``name``."""

    def wrap(factory: EncoderFactory) -> EncoderFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def encoder_names() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return sorted(_REGISTRY)


def build_encoder(name: str, weights: str | Path | None = "imagenet") -> Encoder:
    """Build a frozen encoder.

    Args:
        name: one of :func:`encoder_names`.
        weights: ``"imagenet"`` to load ImageNet weights from a local source (never downloaded;
            a loud warning if none is found), a path to a weights file, or ``None`` to leave the
            weights random because a checkpoint will overwrite them.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(encoder_names())}")
    encoder = _REGISTRY[name](weights)
    encoder.freeze()
    return encoder


def warn_random_weights(name: str, how_to_fix: str) -> None:
    """Say loudly that an encoder runs with random weights (its masks will be meaningless)."""
    warnings.warn(
        f"\n{'!' * 78}\n  emvos: the {name} encoder has RANDOM weights: no ImageNet weights were found.\n"
        f"  Segmentation quality will be meaningless. {how_to_fix}\n{'!' * 78}",
        RuntimeWarning,
        stacklevel=3,
    )

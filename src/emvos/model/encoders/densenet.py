"""DenseNet-121 encoder (the paper's backbone): dense blocks 1, 2 and 3 give 256, 512 and 1024 channels."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from emvos.errors import EmvosInputError
from emvos.model.encoders.base import (
    Encoder,
    FeatureInfo,
    Features,
    register_encoder,
    warn_random_weights,
)

#: The file name torchvision gives the ImageNet weights in its cache (``torch.hub.get_dir()/checkpoints``).
TORCHVISION_FILE = "densenet121-a639ec97.pth"
#: Environment variable that may name a local copy of those weights.
WEIGHTS_ENV = "EMVOS_DENSENET121_WEIGHTS"

# torchvision's released file predates a rename: "denselayer1.norm.1.weight" -> "denselayer1.norm1.weight".
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _find_imagenet_weights() -> Path | None:
    """A local DenseNet-121 ImageNet weights file, or ``None``: never downloads."""
    candidates = []
    if os.environ.get(WEIGHTS_ENV):
        candidates.append(Path(os.environ[WEIGHTS_ENV]))
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE)
    return next((c for c in candidates if c.is_file()), None)


def _load_torchvision_state(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise EmvosInputError(f"{path}: not a readable PyTorch weights file ({exc.__class__.__name__}); "
                              "pass torchvision's densenet121 ImageNet weights") from exc
    renamed = {}
    for key, value in state.items():
        m = _OLD_KEY.match(key)
        renamed[m.group(1) + m.group(2) if m else key] = value
    return renamed


class DenseNet121Encoder(Encoder):
    """torchvision's DenseNet-121 up to dense block 3 (strides 4, 8, 16; 256, 512, 1024 channels)."""

    feature_info = FeatureInfo(channels=(256, 512, 1024))

    def __init__(self, weights: str | Path | None = "imagenet") -> None:
        super().__init__()
        net = torchvision.models.densenet121(weights=None)
        if weights is not None:
            path = _find_imagenet_weights() if weights == "imagenet" else Path(weights)
            if path is None:
                warn_random_weights(
                    "densenet121",
                    f"Put torchvision's {TORCHVISION_FILE} in {Path(torch.hub.get_dir()) / 'checkpoints'}, "
                    f"or set {WEIGHTS_ENV}=/path/to/it, or load an emvos checkpoint.",
                )
            else:
                missing, unexpected = net.load_state_dict(_load_torchvision_state(path), strict=False)
                if missing or unexpected:
                    raise EmvosInputError(
                        f"{path}: not DenseNet-121 ImageNet weights (missing {len(missing)} keys, e.g. "
                        f"{missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]})")
        f = net.features
        self.conv0, self.norm0, self.relu0, self.pool0 = f.conv0, f.norm0, f.relu0, f.pool0
        self.denseblock1, self.transition1 = f.denseblock1, f.transition1
        self.denseblock2, self.transition2 = f.denseblock2, f.transition2
        self.denseblock3 = f.denseblock3

    def extract(self, x: Tensor) -> Features:
        """Features of normalised images ``(B, 3, H, W)``: ``(B, 256, H/4, W/4)``, ``(B, 512, H/8, W/8)``,
        ``(B, 1024, H/16, W/16)``."""
        x = self.pool0(self.relu0(self.norm0(self.conv0(x))))
        s4 = self.denseblock1(x)
        s8 = self.denseblock2(self.transition1(s4))
        s16 = self.denseblock3(self.transition2(s8))
        return Features(s4, s8, s16)


@register_encoder("densenet121")
def _build(weights: str | Path | None) -> Encoder:
    return DenseNet121Encoder(weights)

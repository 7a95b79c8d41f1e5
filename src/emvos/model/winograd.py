"""Winograd F(4×4, 3×3) convolution: the decoder's wide 3×3 convolutions with 4× fewer multiplies.

A 3×3 convolution (stride 1, padding 1) computes each 4×4 block of its output from the 6×6 block
of input around it. Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016) transforms the input block (``B^T d B``) and the kernel (``G g G^T``) into
6×6 grids whose elementwise product, summed over input channels and transformed back
(``A^T m A``), is that output block. The channel sums become 36 matrix products of
``(tiles, C_in) @ (C_in, C_out)``: 36 multiplies per 16 outputs per channel pair instead of 144.

The transforms are linear maps over the 6 rows and 6 columns of each tile, done here as matrix
products too. The interpolation points 0, ±1, ±2 (and ∞) keep float32 rounding close to a direct
convolution's: outputs agree to about 1e-5 of their magnitude.

Only inference uses this (:meth:`emvos.model.decoder.Decoder.use_cpu_algorithms`): it pays on a CPU for
wide layers at high resolution, where a direct convolution is bound by arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Output tile side ``m`` and input tile side ``m + 2`` of F(4×4, 3×3).
OUT_TILE = 4
IN_TILE = OUT_TILE + 2
#: Elements of the transformed tiles processed at once (4 MiB of float32): small enough to stay in
#: the CPU's cache between the transforms and the products.
CHUNK_ELEMENTS = 1 << 20

# The transforms of F(4, 3) with interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = ((4, 0, -5, 0, 1, 0),
       (0, -4, -4, 1, 1, 0),
       (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0),
       (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0),
      (-1 / 6, -1 / 6, -1 / 6),
      (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0),
       (0, 1, -1, 2, -2, 0),
       (0, 1, 1, 4, 4, 0),
       (0, 1, -1, 8, -8, 1))


def transform_weight(weight: Tensor) -> Tensor:
    """The kernels in the Winograd domain, ``G g G^T`` (computed in float64).

    Args:
        weight: ``(C_out, C_in, 3, 3)``.

    Returns:
        ``(36, C_in, C_out)`` in ``weight``'s dtype: one ``C_in × C_out`` matrix per grid point.
    """
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"Winograd F(4x4, 3x3) needs 3x3 kernels, got {tuple(weight.shape[-2:])}")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)
    return u.reshape(IN_TILE * IN_TILE, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


@torch.compiler.disable  # a loop of large matrix products: tracing it only unrolls the loop and slows compilation
def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                     chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """A 3×3 convolution with stride 1 and zero padding 1, by Winograd F(4×4, 3×3).

    Equals ``F.conv2d(x, w, bias, padding=1)`` up to float rounding, for ``weight =
    transform_weight(w)``. Rows of tiles are processed a few at a time so that the transformed
    tiles stay in the CPU's cache.

    Args:
        x: ``(B, C_in, H, W)``, any memory format (channels-last avoids a copy).
        weight: ``(36, C_in, C_out)`` from :func:`transform_weight`.
        bias: ``(C_out,)`` or ``None``.
        chunk_elements: about how many elements the transformed tiles of one chunk may hold.

    Returns:
        ``(B, C_out, H, W)`` in channels-last memory format.
    """
    b, c, h, w = x.shape
    m, a = OUT_TILE, IN_TILE
    out_channels = weight.shape[-1]
    nh, nw = -(-h // m), -(-w // m)
    bt = torch.tensor(_BT, dtype=x.dtype, device=x.device)
    at = torch.tensor(_AT, dtype=x.dtype, device=x.device)
    # Zero-pad by 1 (the convolution's padding) and up to whole tiles, channels last: (B, Hp, Wp, C).
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, nw * m + 1 - w, 1, nh * m + 1 - h))
    out = torch.empty((b, nh * m, nw * m, out_channels), dtype=x.dtype, device=x.device)
    rows = max(1, chunk_elements // (a * a * b * nw * max(c, out_channels)))  # tile rows per chunk
    for r0 in range(0, nh, rows):
        r1 = min(nh, r0 + rows)
        tiles = b * (r1 - r0) * nw
        # Overlapping 6x6 tiles at stride 4, gathered as (row, column, tile, channel).
        part = padded[:, r0 * m:r1 * m + 2]
        d = part.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3).reshape(a, a * tiles * c)
        v = torch.matmul(bt, (bt @ d).view(a, a, tiles * c))  # B^T d B: (6, 6, tiles * C_in)
        prod = torch.bmm(v.view(a * a, tiles, c), weight)  # (36, tiles, C_out)
        y = torch.matmul(at, (at @ prod.view(a, a * tiles * out_channels)).view(m, a, tiles * out_channels))
        # (4, 4, B, rows, nw, C_out) -> (B, rows, 4, nw, 4, C_out): output rows r0 * 4 .. r1 * 4.
        y = y.view(m, m, b, r1 - r0, nw, out_channels).permute(2, 3, 0, 4, 1, 5)
        out[:, r0 * m:r1 * m].view(b, r1 - r0, m, nw, m, out_channels).copy_(y if bias is None else y + bias)
    if (h, w) != (nh * m, nw * m):  # drop the rows and columns of partial tiles
        out = out[:, :h, :w].contiguous()
    return out.permute(0, 3, 1, 2)


class WinogradConv2d(nn.Module):
    """An inference stand-in for a 3×3, stride-1, padding-1 convolution (:func:`winograd_conv3x3`).

    The transformed kernels are buffers outside :meth:`state_dict`: convert a copy of a network
    that will not be saved.

    Args:
        weight: ``(C_out, C_in, 3, 3)`` kernels.
        bias: ``(C_out,)`` or ``None``.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", transform_weight(weight), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> WinogradConv2d:
        """The Winograd form of ``conv``, which must be 3×3 with stride 1, padding 1, no dilation or groups."""
        if (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) != ((3, 3), (1, 1), (1, 1),
                                                                                         (1, 1), 1):
            raise ValueError(f"not a 3x3 stride-1 padding-1 convolution: {conv}")
        return cls(conv.weight, conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)`` (channels-last)."""
        return winograd_conv3x3(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, F(4x4, 3x3)"

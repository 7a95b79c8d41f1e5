"""Winograd F(m×m, 3×3) convolution: the decoder's wide 3×3 convolutions with 4 to 5× fewer multiplies.

A 3×3 convolution (stride 1, padding 1) computes each m×m block of its output from the
(m+2)×(m+2) block of input around it. Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016) transforms the input block (``B^T d B``) and the kernel
(``G g G^T``) into (m+2)×(m+2) grids whose elementwise product, summed over input channels and
transformed back (``A^T m A``), is that output block. The channel sums become (m+2)² matrix
products of ``(tiles, C_in) @ (C_in, C_out)``: for F(4×4, 3×3), 36 multiplies per 16 outputs per
channel pair instead of 144; for F(6×6, 3×3), 64 per 36 instead of 324.

The transforms are linear maps over the rows and columns of each tile, done here as matrix
products too. Their interpolation points (0, ±1, ±2, for m = 6 also ±1/2, and ∞) keep float32
rounding close to a direct convolution's: outputs agree to about 1e-5 of their magnitude.

Only inference uses this (:meth:`emvos.model.decoder.Decoder.use_cpu_algorithms`): it pays on a CPU for
wide layers at high resolution, where a direct convolution is bound by arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Elements of the transformed tiles processed at once (16 MiB of float32): small enough to stay in
#: the CPU's cache between the transforms and the products, large enough for efficient matrix
#: products (at the stride-4 level of a 480p frame, three rows of F(6×6, 3×3) tiles: 108 tiles).
CHUNK_ELEMENTS = 1 << 22

# The transforms (B^T, G, A^T) of F(m, 3) for output tiles of side m = 4 and 6 and input tiles of
# side m + 2. F(4, 3) interpolates at 0, 1, -1, 2, -2 and infinity (Lavin & Gray's matrices); F(6, 3)
# adds 1/2 and -1/2, which saves another fifth of the multiplies at some cost in float32 rounding.
_TRANSFORMS: dict[int, tuple[tuple[tuple[float, ...], ...], ...]] = {
    4: (((4, 0, -5, 0, 1, 0),
         (0, -4, -4, 1, 1, 0),
         (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0),
         (0, 2, -1, -2, 1, 0),
         (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0),
         (-1 / 6, -1 / 6, -1 / 6),
         (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6),
         (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0),
         (0, 1, -1, 2, -2, 0),
         (0, 1, 1, 4, 4, 0),
         (0, 1, -1, 8, -8, 1))),
    6: (((1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0),
         (0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0),
         (0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0),
         (0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0),
         (0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0),
         (0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0),
         (0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0),
         (0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1)),
        ((1, 0, 0),
         (-2 / 9, -2 / 9, -2 / 9),
         (-2 / 9, 2 / 9, -2 / 9),
         (1 / 90, 1 / 45, 2 / 45),
         (1 / 90, -1 / 45, 2 / 45),
         (32 / 45, 16 / 45, 8 / 45),
         (32 / 45, -16 / 45, 8 / 45),
         (0, 0, 1)),
        ((1, 1, 1, 1, 1, 1, 1, 0),
         (0, 1, -1, 2, -2, 1 / 2, -1 / 2, 0),
         (0, 1, 1, 4, 4, 1 / 4, 1 / 4, 0),
         (0, 1, -1, 8, -8, 1 / 8, -1 / 8, 0),
         (0, 1, 1, 16, 16, 1 / 16, 1 / 16, 0),
         (0, 1, -1, 32, -32, 1 / 32, -1 / 32, 1))),
}
#: Output tile sides :func:`winograd_conv3x3` supports.
OUT_TILES = tuple(_TRANSFORMS)


def _tile_sides(out_tile: int) -> tuple[int, int]:
    """``(m, m + 2)``: the output and input tile sides of F(m×m, 3×3)."""
    if out_tile not in _TRANSFORMS:
        raise ValueError(f"Winograd output tiles of side {', '.join(map(str, OUT_TILES))} are supported, "
                         f"got {out_tile}")
    return out_tile, out_tile + 2


def transform_weight(weight: Tensor, out_tile: int = 4) -> Tensor:
    """The kernels in the Winograd domain of F(m×m, 3×3), ``G g G^T`` (computed in float64).

    Args:
        weight: ``(C_out, C_in, 3, 3)``.
        out_tile: ``m``, one of :data:`OUT_TILES`.

    Returns:
        ``((m + 2)², C_in, C_out)`` in ``weight``'s dtype: one ``C_in × C_out`` matrix per grid point.
    """
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"Winograd F(m x m, 3x3) needs 3x3 kernels, got {tuple(weight.shape[-2:])}")
    _, a = _tile_sides(out_tile)
    g = torch.tensor(_TRANSFORMS[out_tile][1], dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)
    return u.reshape(a * a, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


@torch.compiler.disable  # a loop of large matrix products: tracing it only unrolls the loop and slows compilation
def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                     chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """A 3×3 convolution with stride 1 and zero padding 1, by Winograd F(m×m, 3×3).

    Equals ``F.conv2d(x, w, bias, padding=1)`` up to float rounding, for ``weight =
    transform_weight(w, m)``; ``m`` is read from the weight's first dimension. Rows of tiles are
    processed a few at a time so that the transformed tiles stay in the CPU's cache.

    Args:
        x: ``(B, C_in, H, W)``, any memory format (channels-last avoids a copy).
        weight: ``((m + 2)², C_in, C_out)`` from :func:`transform_weight`.
        bias: ``(C_out,)`` or ``None``.
        chunk_elements: about how many elements the transformed tiles of one chunk may hold.

    Returns:
        ``(B, C_out, H, W)`` in channels-last memory format.
    """
    b, c, h, w = x.shape
    m, a = _tile_sides(round(weight.shape[0] ** 0.5) - 2)
    out_channels = weight.shape[-1]
    nh, nw = -(-h // m), -(-w // m)
    bt, _, at = (torch.tensor(t, dtype=x.dtype, device=x.device) for t in _TRANSFORMS[m])
    # Zero-pad by 1 (the convolution's padding) and up to whole tiles, channels last: (B, Hp, Wp, C).
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, nw * m + 1 - w, 1, nh * m + 1 - h))
    out = torch.empty((b, nh * m, nw * m, out_channels), dtype=x.dtype, device=x.device)
    rows = max(1, chunk_elements // (a * a * b * nw * max(c, out_channels)))  # tile rows per chunk
    for r0 in range(0, nh, rows):
        r1 = min(nh, r0 + rows)
        tiles = b * (r1 - r0) * nw
        # Overlapping a x a tiles at stride m, gathered as (row, column, tile, channel).
        part = padded[:, r0 * m:r1 * m + 2]
        d = part.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3).reshape(a, a * tiles * c)
        v = torch.matmul(bt, (bt @ d).view(a, a, tiles * c))  # B^T d B: (a, a, tiles * C_in)
        prod = torch.bmm(v.view(a * a, tiles, c), weight)  # (a * a, tiles, C_out)
        y = torch.matmul(at, (at @ prod.view(a, a * tiles * out_channels)).view(m, a, tiles * out_channels))
        # (m, m, B, rows, nw, C_out) -> (B, rows, m, nw, m, C_out): output rows r0 * m .. r1 * m.
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
        out_tile: side ``m`` of the output tiles, one of :data:`OUT_TILES`.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, out_tile: int = 4) -> None:
        super().__init__()
        self.in_channels, self.out_channels = weight.shape[1], weight.shape[0]
        self.out_tile = out_tile
        self.register_buffer("weight", transform_weight(weight, out_tile), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, out_tile: int = 4) -> WinogradConv2d:
        """The Winograd form of ``conv``, which must be 3×3 with stride 1, padding 1, no dilation or groups."""
        if (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) != ((3, 3), (1, 1), (1, 1),
                                                                                         (1, 1), 1):
            raise ValueError(f"not a 3x3 stride-1 padding-1 convolution: {conv}")
        return cls(conv.weight, conv.bias, out_tile)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)`` (channels-last)."""
        return winograd_conv3x3(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, F({self.out_tile}x{self.out_tile}, 3x3)"

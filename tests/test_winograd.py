"""Winograd F(4x4, 3x3) and F(6x6, 3x3): the same convolution as F.conv2d, and the decoder levels that use it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emvos.model.decoder import Decoder, FoldConvTranspose2d
from emvos.model.encoders import Features
from emvos.model.winograd import OUT_TILES, WinogradConv2d, transform_weight, winograd_conv3x3


@pytest.mark.parametrize(("batch", "c_in", "c_out", "size", "chunk"), [
    (1, 3, 5, (8, 8), 1 << 20),
    (2, 4, 6, (7, 13), 1 << 20),  # sizes that are not whole tiles
    (1, 6, 3, (17, 5), 64),  # one row of tiles per chunk
    (3, 5, 4, (1, 1), 1 << 20),
])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("out_tile", OUT_TILES)
def test_equals_a_direct_convolution_in_float64(batch: int, c_in: int, c_out: int, size: tuple[int, int],
                                                chunk: int, bias: bool, out_tile: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, *size, generator=g, dtype=torch.float64)
    w = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    out = winograd_conv3x3(x, transform_weight(w, out_tile), b, chunk_elements=chunk)
    assert out.shape == (batch, c_out, *size) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("out_tile", "tolerance"), [(4, 1e-5), (6, 1e-4)])
def test_float32_rounding_stays_close_to_the_direct_convolution(memory_format: torch.memory_format, out_tile: int,
                                                                tolerance: float) -> None:
    conv = nn.Conv2d(64, 32, 3, padding=1)
    x = torch.randn(2, 64, 20, 36).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = conv(x)
        got = WinogradConv2d.from_conv(conv, out_tile)(x)
    assert (got - expected).abs().max() < tolerance * expected.abs().max()


def test_unsupported_tile_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="tiles of side 4, 6"):
        transform_weight(torch.randn(2, 2, 3, 3), out_tile=5)


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 5, padding=2),
                                  nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 4, 3, padding=0)])
def test_only_same_size_3x3_convolutions_convert(conv: nn.Conv2d) -> None:
    with pytest.raises(ValueError, match="not a 3x3 stride-1 padding-1"):
        WinogradConv2d.from_conv(conv)


def test_kernels_stay_out_of_the_state_dict() -> None:
    assert WinogradConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1)).state_dict() == {}


def test_decoder_converts_only_its_wide_levels_and_decodes_the_same() -> None:
    torch.manual_seed(0)
    decoder = Decoder(feature_channels=(8, 12, 16), widths=(8, 16, 32), score_channels=8).eval()
    fast = copy.deepcopy(decoder)
    fast.use_cpu_algorithms(min_width=16)
    assert [level.shared_blend is not None for level in fast.levels] == [True, True, False]  # stride 16, 8, 4
    assert [isinstance(level.cbam.conv, WinogradConv2d) for level in fast.levels] == [True, True, False]
    assert [isinstance(level.up, FoldConvTranspose2d) for level in fast.levels] == [True, True, False]
    feats = [torch.randn(1, c, s, s) for c, s in ((8, 16), (12, 8), (16, 4))]
    features = Features(*feats)
    scores, prev = torch.rand(3, 8, 4, 4), torch.rand(3, 2, 4, 4)
    with torch.no_grad():
        expected = decoder(decoder.shared(features), scores, prev)
        got = fast(fast.shared(features), scores, prev)
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()


@pytest.mark.parametrize("stride", [2, 4])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fold_upsampling_equals_the_transposed_convolution(stride: int, bias: bool, channels_last: bool) -> None:
    torch.manual_seed(3)
    up = nn.ConvTranspose2d(12, 2, stride + 2, stride, 1, bias=bias)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 12, 7, 10).contiguous(memory_format=fmt)
    with torch.no_grad():
        expected, got = up(x), FoldConvTranspose2d(up)(x)
    assert got.shape == expected.shape == (3, 2, 7 * stride, 10 * stride)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_fold_upsampling_rejects_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="transposed"):
        FoldConvTranspose2d(nn.ConvTranspose2d(4, 2, 4, 2, 1, output_padding=1))

"""The hand-written inference kernel: a convolution fused with its activation gives the same numbers as
the convolution, then the activation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emvos.inference.kernels import ConvAct, _onednn_usable, conv2d_act
from emvos.model.encoders.efficientnet import SameConv2d

# (in, out, kernel, stride, padding, groups): a pointwise expansion, a strided 3x3, a depthwise 3x3.
CONVS = [(16, 48, 1, 1, 0, 1), (8, 12, 3, 2, 1, 1), (24, 24, 3, 1, 1, 24)]


def _reference(x: torch.Tensor, conv: nn.Conv2d, activation: str) -> torch.Tensor:
    y = conv(x)
    return F.relu(y) if activation == "relu" else F.relu6(y)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("spec", CONVS, ids=["pointwise", "strided", "depthwise"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_conv_act_equals_conv_then_activation(spec: tuple[int, ...], activation: str, channels_last: bool) -> None:
    cin, cout, k, s, p, g = spec
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, s, p, groups=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (3 * torch.randn(2, cin, 13, 18)).contiguous(memory_format=fmt)  # values around the clamps 0 and 6
    fused = ConvAct(conv, activation)
    with torch.inference_mode():
        want, got = _reference(x, conv, activation), fused(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=fmt)
    with torch.no_grad():  # the eager fallback gives the same
        torch.testing.assert_close(fused(x), want, rtol=1e-5, atol=1e-5)


def test_the_fused_primitive_is_used_only_where_it_can_run() -> None:
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        assert _onednn_usable(x) is torch.backends.mkldnn.is_available()
        assert not _onednn_usable(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not _onednn_usable(x)
    assert not _onednn_usable(x)  # gradients wanted: the primitive has no backward


def test_conv_act_keeps_gradients_outside_inference() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    ConvAct(conv, "relu6")(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


@pytest.mark.parametrize("size", [(15, 22), (16, 21)])
def test_conv_act_pads_like_the_same_convolution(size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    conv = SameConv2d(6, 6, 3, 2, groups=6)
    x = 3 * torch.randn(1, 6, *size)
    with torch.inference_mode():
        torch.testing.assert_close(ConvAct(conv, "relu6")(x), F.relu6(conv(x)), rtol=1e-5, atol=1e-5)


def test_conv_act_rejects_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="activation"):
        ConvAct(nn.Conv2d(3, 3, 1), "gelu")
    with pytest.raises(ValueError, match="dilation"):
        ConvAct(nn.Conv2d(3, 3, 3, dilation=2), "relu")
    with pytest.raises(ValueError, match="activation"):
        conv2d_act(torch.randn(1, 3, 4, 4), torch.randn(3, 3, 1, 1), None, (1, 1), (0, 0), 1, "tanh")

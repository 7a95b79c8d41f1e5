"""A hand-written inference kernel: a convolution computed with the activation after it.

PyTorch's eager mode has no fused convolution and activation (``torch.compile`` has, but only after
a long compilation per input shape). On the CPU a convolution and its ReLU / ReLU6 run here as one
oneDNN primitive with the activation as a post-op: the output is written once, already activated,
instead of being written by the convolution and read and written again by the activation. At 480p
the early layers are bound by memory traffic, so this saves a large part of their time. Elsewhere
(CUDA, autocast, autograd) the same module falls back to the convolution followed by the
activation in place. Both give the same numbers: the activation is a clamp, applied to the same
sums. :mod:`emvos.inference.optimize` puts it into the copy of a network prepared for inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Activations a :class:`ConvAct` can fuse: name -> (oneDNN post-op, its scalars).
ACTIVATIONS: dict[str, tuple[str, list[float]]] = {"relu": ("relu", []), "relu6": ("hardtanh", [0.0, 6.0])}


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")


def _onednn_usable(x: Tensor) -> bool:
    """Whether the fused oneDNN primitive can compute this input: float32 on the CPU, no autocast,
    no gradient wanted (the primitive has no backward)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def conv2d_act(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, ...],
               padding: tuple[int, ...], groups: int, activation: str) -> Tensor:
    """``activation(F.conv2d(x, weight, bias, stride, padding, groups=groups))`` in one pass where possible.

    Args:
        x: ``(B, C_in, H, W)``; channels-last in gives channels-last out.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride, padding: per spatial dimension (symmetric zero padding).
        groups: convolution groups.
        activation: a key of :data:`ACTIVATIONS`.

    Returns:
        ``(B, C_out, H', W')``.
    """
    _check_activation(activation)
    if _onednn_usable(x):
        post_op, scalars = ACTIVATIONS[activation]
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), [1, 1],
                                                       groups, post_op, scalars, "")
    y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
    return y.relu_() if activation == "relu" else F.hardtanh_(y, 0.0, 6.0)


class ConvAct(nn.Module):
    """A convolution and the activation after it, computed by :func:`conv2d_act`.

    Args:
        conv: an ``nn.Conv2d`` with zero padding and no dilation, or a module with the same
            parameters and a ``weight_and_padding(size)`` method that gives the kernel and padding
            to use for an input of spatial ``size`` (TensorFlow "SAME" padding).
        activation: a key of :data:`ACTIVATIONS`.
    """

    def __init__(self, conv: nn.Conv2d, activation: str) -> None:
        super().__init__()
        if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"ConvAct needs numeric zero padding and no dilation, got {conv}")
        _check_activation(activation)
        self.conv = conv
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H', W')``."""
        conv = self.conv
        same_padding = getattr(conv, "weight_and_padding", None)
        if same_padding is not None:
            weight, padding = same_padding(tuple(x.shape[-2:]))
        else:
            weight, padding = conv.weight, conv.padding
        assert not isinstance(padding, str)  # refused by the constructor
        return conv2d_act(x, weight, conv.bias, conv.stride, padding, conv.groups, self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


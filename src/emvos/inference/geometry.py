"""Working geometry of a video: resize so the shorter side has a given length, then pad each side to
a multiple of the encoder's stride with centred reflect padding (as the official EMVOS code).

Importing it does not import PyTorch: the onnxruntime backend shares the geometry's arithmetic; only
the methods that resize tensors import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Geometry:
    """How frames of one video map to the network's input and back.

    Attributes:
        size: ``(H, W)`` of the input frames.
        work: ``(H', W')`` after resizing (equal to ``size`` when not resized).
        pad: ``(left, right, top, bottom)`` reflect padding applied after resizing.
    """

    size: tuple[int, int]
    work: tuple[int, int]
    pad: tuple[int, int, int, int]

    @classmethod
    def for_frames(cls, size: tuple[int, int], resolution: int, stride: int) -> Geometry:
        """Geometry for frames of ``size`` resized to ``resolution`` (shorter side; 0 keeps the size)."""
        h, w = size
        if resolution and min(h, w) != resolution:
            if h > w:
                work = (int(resolution / w * h), resolution)
            else:
                work = (resolution, int(resolution / h * w))
        else:
            work = (h, w)
        hp, wp = (-work[0]) % stride, (-work[1]) % stride
        return cls(size, work, ((wp + 1) // 2, wp // 2, (hp + 1) // 2, hp // 2))

    @property
    def resized(self) -> bool:
        """Whether frames are resized before padding."""
        return self.work != self.size

    @property
    def padded(self) -> tuple[int, int]:
        """``(H'', W'')``: the network's input size."""
        left, right, top, bottom = self.pad
        return self.work[0] + top + bottom, self.work[1] + left + right

    def image(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` float in ``[0, 1]`` -> ``(B, 3, H'', W'')`` (bicubic resize, reflect pad)."""
        import torch.nn.functional as F

        if self.resized:
            # Decoded frames arrive as a channels-last view; PyTorch's CPU bicubic kernel takes about
            # a third longer on it than on the same pixels in NCHW order (identical results).
            image = F.interpolate(image.contiguous(), size=self.work, mode="bicubic", align_corners=False)
        return F.pad(image, self.pad, mode="reflect") if any(self.pad) else image

    def mask(self, mask: Tensor) -> Tensor:
        """``(B, C, H, W)`` float masks -> ``(B, C, H'', W'')`` (nearest resize, reflect pad)."""
        import torch.nn.functional as F

        if self.resized:
            mask = F.interpolate(mask, size=self.work, mode="nearest")
        return F.pad(mask, self.pad, mode="reflect") if any(self.pad) else mask

    def restore(self, probs: Tensor) -> Tensor:
        """``(B, C, H'', W'')`` probabilities -> ``(B, C, H, W)`` (unpad, bilinear resize back)."""
        import torch.nn.functional as F

        left, right, top, bottom = self.pad
        hp, wp = probs.shape[-2:]
        probs = probs[..., top:hp - bottom, left:wp - right]
        if self.resized:
            probs = F.interpolate(probs, size=self.size, mode="bilinear", align_corners=False)
        return probs

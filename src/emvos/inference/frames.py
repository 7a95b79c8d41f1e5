"""What both inference backends share and PyTorch is not needed for: the per-frame result, the
checks of the frames and masks a caller passes, and reading frames in chunks.

:class:`~emvos.inference.VideoPredictor` (PyTorch) and :class:`~emvos.onnx.OnnxPredictor`
(onnxruntime, no PyTorch) both import from here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

ImageLike = np.ndarray | Image.Image
MaskLike = np.ndarray | Image.Image
T = TypeVar("T")


@dataclass(frozen=True)
class FramePrediction:
    """The segmentation of one frame.

    Attributes:
        index: frame index in the video.
        labels: ``(H, W) uint8`` map of user object ids (0 = background), at the frame's size.
        object_ids: ids of the objects tracked at this frame.
    """

    index: int
    labels: np.ndarray
    object_ids: tuple[int, ...]


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily from ``items``."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def as_labels(mask: MaskLike) -> np.ndarray:
    """A mask as an ``(H, W) uint8`` array of object ids.

    Raises:
        ValueError: not a 2-D integer array, or ids outside 0..255.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"a mask must be an (H, W) integer array of object ids, got {arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError("mask object ids must lie in 0..255 (0 is background)")
    return arr.astype(np.uint8)


def as_image(image: ImageLike) -> np.ndarray:
    """A frame as a writeable ``(H, W, 3) uint8`` RGB array.

    Raises:
        ValueError: not an ``(H, W, 3) uint8`` array or a PIL image.
    """
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"a frame must be an (H, W, 3) uint8 RGB array, got {arr.dtype} {arr.shape}")
    return arr if arr.flags.writeable else arr.copy()  # torch.from_numpy warns on read-only arrays

"""What both inference backends share and PyTorch is not needed for: the per-frame result, the
checks of the frames and masks a caller passes, and the one per-frame loop (:func:`propagate_frames`).

:class:`~emvos.inference.VideoPredictor` (PyTorch) and :class:`~emvos.onnx.OnnxPredictor`
(onnxruntime, no PyTorch) both import from here.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

ImageLike = np.ndarray | Image.Image
MaskLike = np.ndarray | Image.Image
T = TypeVar("T")
Direction = Literal["forward", "backward"]
#: The orders a video is propagated in.
DIRECTIONS: tuple[Direction, ...] = ("forward", "backward")


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


def propagate_frames(step_many: Callable[[list[ImageLike], list[MaskLike | None]], list[FramePrediction]],
                     frames: Iterable[ImageLike] | None, pending: dict[int, MaskLike],
                     masks: Mapping[int, MaskLike] | None, lookahead: int, direction: Direction = "forward",
                     indices: Iterable[int] | None = None,
                     on_frame: Callable[[FramePrediction, float], None] | None = None,
                     synchronize: Callable[[], None] | None = None) -> Iterator[FramePrediction]:
    """The per-frame loop of both backends' ``propagate``: frames in the chosen order, ``lookahead`` at a
    time, through ``step_many(images, masks)`` of the video's state.

    Args:
        frames: ``(H, W, 3) uint8`` RGB frames in video order; read lazily forward, a sequence otherwise.
        pending: the state's masks added with ``add_mask``, by frame index (taken, and cleared).
        masks: ``(H, W)`` object ids given at some frames, by frame index.
        direction, indices: the order (see :meth:`VideoPredictor.propagate`).
        on_frame: called with each prediction and the model's seconds spent on it, before it is yielded.
        synchronize: waits for the device before a chunk's time is read (CUDA), when ``on_frame`` is given.

    Yields:
        One prediction per frame, in processing order, with its index in ``frames``.

    Raises:
        ValueError: no frames, an unknown ``direction``, ``direction`` and ``indices`` both given, or
            ``frames`` that cannot be indexed where they must be.
    """
    if frames is None:
        raise ValueError("frames: none given; pass them to propagate() or to init_state(frames)")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    given = {**pending, **(masks or {})}
    pending.clear()
    if indices is None and direction == "forward":
        numbered: Iterable[tuple[int, ImageLike]] = enumerate(frames)
    else:
        if indices is not None and direction != "forward":
            raise ValueError("direction and indices: give one of them (indices set the order themselves)")
        if not isinstance(frames, Sequence):
            raise ValueError("frames must be a sequence (len and indexing) to propagate backward or over indices")
        order = range(len(frames) - 1, -1, -1) if indices is None else indices
        numbered = ((index, frames[index]) for index in order)
    for chunk in chunks(numbered, lookahead):
        start = time.perf_counter()
        predictions = step_many([image for _, image in chunk], [given.pop(index, None) for index, _ in chunk])
        if on_frame is not None and synchronize is not None:
            synchronize()
        seconds = time.perf_counter() - start
        working = sum(1 for prediction in predictions if prediction.object_ids)
        for (index, _), prediction in zip(chunk, predictions, strict=True):
            prediction = dataclasses.replace(prediction, index=index)
            if on_frame is not None:
                on_frame(prediction, seconds / working if prediction.object_ids else 0.0)
            yield prediction

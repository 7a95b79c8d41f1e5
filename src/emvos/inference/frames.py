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
from typing import Any, Literal, Protocol, TypeVar

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
        probabilities: ``(len(object_ids), H, W) uint8``: each object's probability x 255, when the
            state keeps them (``init_state(..., probabilities=True)``), else ``None``.
    """

    index: int
    labels: np.ndarray
    object_ids: tuple[int, ...]
    probabilities: np.ndarray | None = None


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


Direction = Literal["forward", "backward"]
#: The orders :func:`propagate_frames` segments a video in.
DIRECTIONS: tuple[Direction, ...] = ("forward", "backward")


class PropagatedState(Protocol):
    """What :func:`propagate_frames` reads from a predictor's per-video state."""

    frames: Iterable[ImageLike] | None
    pending: dict[int, np.ndarray]


class Stepper(Protocol):
    """A predictor :func:`propagate_frames` drives: segments a video's next frames, ``lookahead`` at a time."""

    lookahead: int

    def step_many(self, state: Any, images: Sequence[ImageLike],
                  masks: Sequence[MaskLike | None] | None = None) -> list[FramePrediction]: ...


def propagate_frames(predictor: Stepper, state: PropagatedState, frames: Iterable[ImageLike] | None = None,
                     masks: Mapping[int, MaskLike] | None = None, *, direction: Direction = "forward",
                     indices: Iterable[int] | None = None,
                     on_frame: Callable[[FramePrediction, float], None] | None = None,
                     wait: Callable[[], None] | None = None) -> Iterator[FramePrediction]:
    """The one per-frame loop of both backends (:meth:`emvos.inference.VideoPredictor.propagate`,
    :meth:`emvos.onnx.OnnxPredictor.propagate`, which document the arguments).

    Frames are read ``predictor.lookahead`` at a time and segmented by ``predictor.step_many``;
    ``wait`` (e.g. for a GPU to finish) is called after each chunk before it is timed for ``on_frame``.

    Raises:
        ValueError: no frames, an unknown ``direction``, ``direction`` and ``indices`` both given,
            or ``frames`` that cannot be indexed where they must be.
    """
    frames = state.frames if frames is None else frames
    if frames is None:
        raise ValueError("frames: none given; pass them to propagate() or to init_state(frames)")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    given = {**state.pending, **(masks or {})}
    state.pending.clear()
    if indices is None and direction == "forward":
        numbered: Iterable[tuple[int, ImageLike]] = enumerate(frames)
    else:
        if indices is not None and direction != "forward":
            raise ValueError("direction and indices: give one of them (indices set the order themselves)")
        if not isinstance(frames, Sequence):
            raise ValueError("frames must be a sequence (len and indexing) to propagate backward or over indices")
        order = range(len(frames) - 1, -1, -1) if indices is None else indices
        numbered = ((index, frames[index]) for index in order)
    for chunk in chunks(numbered, predictor.lookahead):
        start = time.perf_counter()
        predictions = predictor.step_many(state, [image for _, image in chunk],
                                          [given.pop(index, None) for index, _ in chunk])
        if on_frame is not None and wait is not None:
            wait()
        seconds = time.perf_counter() - start
        working = sum(1 for prediction in predictions if prediction.object_ids)
        for (index, _), prediction in zip(chunk, predictions, strict=True):
            prediction = dataclasses.replace(prediction, index=index)
            if on_frame is not None:
                on_frame(prediction, seconds / working if prediction.object_ids else 0.0)
            yield prediction

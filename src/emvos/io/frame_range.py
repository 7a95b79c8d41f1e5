"""A stretch of a video's frames (``segment --start/--end``), read forward as a stream or in any order
(``--direction backward``), in the form :meth:`~emvos.inference.VideoPredictor.propagate` takes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from emvos.io.frames import FolderFrames, Frame, FrameSource


def frames_in_range(source: FrameSource, start: int, end: int) -> Iterator[Frame]:
    """The frames ``start..end`` (inclusive) of ``source``, in order, as :meth:`FrameSource.__iter__`
    decodes them (ahead, on a background thread)."""
    for frame in source:
        if frame.index > end:
            return
        if frame.index >= start:
            yield frame


class FrameRange(Sequence[np.ndarray]):
    """The ``(H, W, 3) uint8`` RGB images of frames ``start..end`` (inclusive) of a video; item ``i`` is
    the video's frame ``start + i``.

    Iterated, the frames stream in order (:func:`frames_in_range`). Indexed, a folder's frames are
    decoded one at a time from their files; a video file cannot be decoded out of order, so its
    range is decoded at the first access and held in memory (about 1 MB per 480p frame).

    Every image handed out is kept with its :class:`Frame` (name, index in the video) until
    :meth:`take` collects it, so that a caller writes each result under its frame's name.
    """

    def __init__(self, source: FrameSource, start: int, end: int) -> None:
        if not 0 <= start <= end + 1:
            raise ValueError(f"start and end must satisfy 0 <= start <= end + 1 (empty), got {start} and {end}")
        self.source, self.start, self.end = source, start, end
        self._held: list[Frame] | None = None  # a video's range, decoded for indexing
        self._given: dict[int, Frame] = {}

    def __len__(self) -> int:
        return self.end - self.start + 1

    @overload
    def __getitem__(self, item: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, item: slice) -> Sequence[np.ndarray]: ...

    def __getitem__(self, item: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        if not -len(self) <= item < len(self):
            raise IndexError(f"frame {item} of a range of {len(self)} frames")
        item %= len(self)
        if isinstance(self.source, FolderFrames):
            return self._give(item, self.source.frame(self.start + item))
        if self._held is None:
            self._held = list(frames_in_range(self.source, self.start, self.end))
        return self._give(item, self._held[item])

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in frames_in_range(self.source, self.start, self.end):
            yield self._give(frame.index - self.start, frame)

    def _give(self, item: int, frame: Frame) -> np.ndarray:
        self._given[item] = frame
        return frame.image

    def take(self, item: int) -> Frame:
        """The :class:`Frame` of item ``item``, handed out earlier, which the range forgets."""
        return self._given.pop(item)

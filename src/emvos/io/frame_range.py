"""A range of a video's frames, forward or backward (propagating from a mask given mid-video)."""

from __future__ import annotations

from collections.abc import Iterator

from emvos.io.frames import FolderFrames, Frame, FrameSource, _read_rgb


def frames_in_range(source: FrameSource, start: int, end: int, *, reverse: bool = False) -> Iterator[Frame]:
    """The frames ``start..end`` (inclusive) of ``source``, from ``start`` up or from ``end`` down.

    Forward, frames stream as :meth:`FrameSource.__iter__` decodes them. Backward, a folder's
    frames are decoded one at a time from the last; a video file cannot be decoded backwards, so
    the range's frames are decoded first and held in memory (about 1 MB per 480p frame).

    Args:
        source: The video.
        start: First frame index (0-based).
        end: Last frame index, inclusive.
        reverse: From ``end`` down to ``start``.

    Yields:
        :class:`Frame` objects, with their indices in the video.
    """
    if not reverse:
        for frame in source:
            if frame.index > end:
                return
            if frame.index >= start:
                yield frame
        return
    if isinstance(source, FolderFrames):
        for index in range(end, start - 1, -1):
            file = source.files[index]
            yield Frame(index, file.stem, _read_rgb(file))
        return
    yield from reversed(list(frames_in_range(source, start, end)))

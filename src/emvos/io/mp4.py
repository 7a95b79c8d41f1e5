"""Writing mp4 videos: the one encoder of frames to a file, used by the overlay writer and the benchmarks.

The video is written to a hidden temporary file next to its path (:func:`emvos.io.files.temporary_path`)
and renamed to the path when finished; a discarded or failed video leaves nothing behind.
"""

from __future__ import annotations

import os
from contextlib import suppress
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import cast

import av
import numpy as np

from emvos.errors import EmvosInputError
from emvos.io.files import cannot_write, temporary_path


def video_codec() -> str:
    """``libx264`` when this PyAV build has it (compact, plays everywhere), else ``mpeg4``."""
    try:
        av.codec.Codec("libx264", "w")
    except av.codec.codec.UnknownCodecError:
        return "mpeg4"
    return "libx264"


class Mp4Writer:
    """Encodes ``(H, W, 3) uint8`` RGB frames into an mp4 file, in the calling thread.

    ``yuv420p`` (what players expect) needs even dimensions: an odd width or height is padded by
    one pixel, repeating the last column or row. Use it as a context manager: the file appears
    under ``path`` when the block ends without error, and is deleted otherwise.

    Args:
        path: The ``.mp4`` file (its folder must exist).
        fps: Frames per second.
        size: ``(H, W)`` of the frames that will be written.
        codec: ``libx264`` (quality ``crf`` 20) or ``mpeg4``; ``None``: :func:`video_codec`.
        preset: libx264's speed preset.

    Raises:
        EmvosInputError: the file cannot be created.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], *, codec: str | None = None,
                 preset: str = "fast") -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.codec = codec or video_codec()
        self.frames_written = 0
        self._closed = False
        self._temporary = temporary_path(self.path)
        rate = Fraction(fps).limit_denominator(1001)
        height, width = self.size
        try:
            self._container = av.open(str(self._temporary), "w", format="mp4")
        except av.error.FFmpegError as error:
            raise EmvosInputError(f"{self.path}: cannot create the video ({error}); choose another path") from error
        self._stream = cast(av.VideoStream, self._container.add_stream(self.codec, rate=rate))
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            self._stream.options = {"crf": "20", "preset": preset}
        else:
            self._stream.bit_rate = max(1_000_000, int(0.25 * width * height * float(rate)))
        self._time_base = 1 / rate

    def write(self, image: np.ndarray) -> None:
        """Encode one ``(H, W, 3) uint8`` RGB frame."""
        height, width = self.size
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be a {(height, width, 3)} uint8 array, got {image.dtype} {image.shape}")
        if height % 2 or width % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = self._time_base
        try:
            self._mux(self._stream.encode(frame))
        except (OSError, av.error.FFmpegError) as error:
            raise EmvosInputError(f"{self.path}: cannot encode the video ({error})") from error
        self.frames_written += 1

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self, *, discard: bool = False) -> None:
        """Flush the encoder and move the file to :attr:`path` (``discard``: delete it instead).

        Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if not discard:
                try:
                    self._mux(self._stream.encode(None))
                    self._container.close()
                except (OSError, av.error.FFmpegError) as error:
                    raise EmvosInputError(f"{self.path}: cannot encode the video ({error})") from error
                try:
                    os.replace(self._temporary, self.path)
                except OSError as error:
                    raise cannot_write(self.path, error) from error
        finally:
            with suppress(OSError, av.error.FFmpegError):
                self._container.close()
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(discard=exc_type is not None)

"""Reading the frames of a video: a folder of images or a video file, streamed one frame at a time.

:func:`open_frames` checks the input up front (it exists, has frames, the first one decodes) and
returns a :class:`FrameSource`. Iterating over the source decodes frames on a background thread
that stays at most ``prefetch`` frames ahead of the caller, so decoding overlaps the caller's
compute and a long video never sits in memory.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from emvos.errors import EmvosInputError
from emvos.io._background import prefetch

#: Suffixes (lower case) of the image files read from a folder of frames.
FRAME_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
#: Suffixes (lower case) of the video files decoded with PyAV.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"})
#: Frame rate reported for a folder of frames: DAVIS was recorded at 24 frames per second.
FOLDER_FPS = 24.0
#: How many decoded frames the background thread keeps ready by default.
DEFAULT_PREFETCH = 4

_REENCODE_HINT = "re-encode it, e.g. `ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4`"


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: Position in the video, from 0.
        name: Stem for the files written for this frame (``00042`` -> ``00042.png``).
        image: ``(H, W, 3) uint8`` RGB pixels.
    """

    index: int
    name: str
    image: np.ndarray


def natural_sort_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that orders runs of digits by value: ``f2`` before ``f10``, case-insensitively."""
    parts = re.split(r"(\d+)", name.lower())
    # re.split with a group alternates text and digits, so keys always compare str with str.
    return tuple(int(part) if index % 2 else part for index, part in enumerate(parts)), name


class FrameSource(ABC):
    """The frames of one video, decoded on demand.

    Attributes:
        path: The folder or video file the frames come from.
        size: ``(H, W)`` of every frame.
        fps: Frames per second (the video's average rate; :data:`FOLDER_FPS` for folders).
        num_frames: Number of frames, or ``None`` when a video container does not say.
    """

    def __init__(
        self, path: Path, size: tuple[int, int], fps: float, num_frames: int | None, prefetch_depth: int
    ) -> None:
        self.path = path
        self.size = size
        self.fps = fps
        self.num_frames = num_frames
        self._prefetch_depth = prefetch_depth

    @property
    @abstractmethod
    def names(self) -> list[str] | None:
        """Output stem of each frame in order, or ``None`` when the number of frames is unknown."""

    @abstractmethod
    def frame_name(self, index: int) -> str:
        """Output stem of the frame at ``index`` (file stem for folders, ``00042`` for videos)."""

    @abstractmethod
    def _decode(self) -> Generator[Frame, None, None]:
        """Decode the frames in order on the calling thread."""

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"{self.path}: the video container does not say how many frames it has")
        return self.num_frames

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[Frame]:
        """Yield every :class:`Frame` in order, decoded ahead on a background thread.

        Each iteration starts again from the first frame. Decoding errors are raised here as
        :class:`~emvos.errors.EmvosInputError`, after the frames before the bad one.
        """
        return prefetch(self._decode, self._prefetch_depth, name=f"emvos-decode:{self.path.name}")

    def __repr__(self) -> str:
        height, width = self.size
        return (
            f"{type(self).__name__}({str(self.path)!r}, size={width}x{height}, fps={self.fps:g}, "
            f"num_frames={self.num_frames})"
        )


def _read_rgb(path: Path) -> np.ndarray:
    """Decode one image file to ``(H, W, 3) uint8`` RGB, or raise a one-line input error."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise EmvosInputError(
            f"{path}: cannot decode this frame ({error}); replace it with a valid JPEG/PNG or delete it"
        ) from error
    return np.array(rgb)


def _size_mismatch(where: str, actual: tuple[int, ...], expected: tuple[int, int], first: str) -> str:
    return (
        f"{where} is {actual[1]}x{actual[0]} (width x height) but {first} is "
        f"{expected[1]}x{expected[0]}; all frames of a video must have the same size"
    )


class FolderFrames(FrameSource):
    """The frames of a folder of JPEG/PNG images, in natural order of their file names."""

    def __init__(self, folder: Path, files: list[Path], prefetch_depth: int) -> None:
        self.files = files
        first = _read_rgb(files[0])
        super().__init__(folder, first.shape[:2], FOLDER_FPS, len(files), prefetch_depth)

    @property
    def names(self) -> list[str]:
        """File stem of each frame, in order."""
        return [file.stem for file in self.files]

    def frame_name(self, index: int) -> str:
        """File stem of the frame at ``index``."""
        return self.files[index].stem

    def frame(self, index: int) -> Frame:
        """Decode the frame at ``index`` alone (a folder's frames can be read in any order).

        Raises:
            EmvosInputError: the file cannot be decoded, or its size is not the first frame's.
        """
        file = self.files[index]
        image = _read_rgb(file)
        if image.shape[:2] != self.size:
            raise EmvosInputError(
                _size_mismatch(str(file), image.shape, self.size, f"the first frame {self.files[0].name}")
            )
        return Frame(index, file.stem, image)

    def _decode(self) -> Generator[Frame, None, None]:
        for index in range(len(self.files)):
            yield self.frame(index)


def _video_rgb(frame: av.VideoFrame) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB pixels of a decoded frame, turned upright by its display rotation."""
    image: np.ndarray = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4  # counter-clockwise, like np.rot90
    if quarter_turns:
        image = np.ascontiguousarray(np.rot90(image, quarter_turns))
    return image


def _average_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate:
            return float(Fraction(rate))
    return FOLDER_FPS


def _count_packets(path: Path) -> int | None:
    """Frames of a video whose container does not store the count (webm, mkv), by demuxing it.

    Demuxing reads packets without decoding them, so this costs a fraction of a decode.
    """
    with av.open(str(path)) as container:
        count = sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
    return count or None


class VideoFrames(FrameSource):
    """The frames of a video file decoded with PyAV, named ``00000``, ``00001``, ...

    Frames are turned upright by the container's display rotation (phone videos), so they match
    what a video player shows.
    """

    def __init__(self, path: Path, prefetch_depth: int) -> None:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise EmvosInputError(
                        f"{path}: file has no video stream; pass a video with a video track"
                    )
                stream = container.streams.video[0]
                first = next(container.decode(stream), None)
                if first is None:
                    raise EmvosInputError(f"{path}: video has no frames; {_REENCODE_HINT}")
                size = _video_rgb(first).shape[:2]
                fps = _average_fps(stream)
                num_frames = stream.frames or _count_packets(path)
        except av.error.FFmpegError as error:
            raise EmvosInputError(f"{path}: cannot decode this video ({error}); {_REENCODE_HINT}") from error
        super().__init__(path, size, fps, num_frames, prefetch_depth)

    @property
    def names(self) -> list[str] | None:
        """``00000``, ``00001``, ... for each frame, or ``None`` when the container has no count."""
        if self.num_frames is None:
            return None
        return [self.frame_name(index) for index in range(self.num_frames)]

    def frame_name(self, index: int) -> str:
        """The zero-padded index, DAVIS style: ``00042``."""
        return f"{index:05d}"

    def _decode(self) -> Generator[Frame, None, None]:
        index = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for decoded in container.decode(stream):
                    image = _video_rgb(decoded)
                    if image.shape[:2] != self.size:
                        raise EmvosInputError(
                            _size_mismatch(f"{self.path}: frame {index}", image.shape, self.size, "frame 0")
                        )
                    yield Frame(index, self.frame_name(index), image)
                    index += 1
        except av.error.FFmpegError as error:
            raise EmvosInputError(
                f"{self.path}: cannot decode frame {index} ({error}); {_REENCODE_HINT}"
            ) from error


def _frame_files(folder: Path) -> list[Path]:
    files = [
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() in FRAME_EXTENSIONS and not entry.name.startswith(".") and entry.is_file()
    ]
    files.sort(key=lambda file: natural_sort_key(file.name))
    by_stem: dict[str, Path] = {}
    for file in files:
        other = by_stem.setdefault(file.stem, file)
        if other is not file:
            raise EmvosInputError(
                f"{other} and {file.name} have the same name {file.stem!r}, so their outputs would "
                "overwrite each other; keep only one of them"
            )
    return files


def open_frames(path: str | Path, *, prefetch: int = DEFAULT_PREFETCH) -> FrameSource:
    """Open a folder of frames or a video file for streaming.

    Args:
        path: A folder of ``.jpg``/``.jpeg``/``.png`` frames (natural order of file names; hidden
            files are skipped) or a video file (:data:`VIDEO_EXTENSIONS`).
        prefetch: How many decoded frames the background thread keeps ready.

    Returns:
        A :class:`FrameSource` whose iteration yields :class:`Frame` objects with ``(H, W, 3)
        uint8`` RGB images. The first frame has already been decoded once, to check the input
        and learn the frame size.

    Raises:
        EmvosInputError: the path does not exist, the folder has no frames, the type is not
            supported, or the first frame cannot be decoded.
    """
    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise EmvosInputError(
                f"{path}: folder has no frames (.jpg, .jpeg or .png files); put the video's frames "
                "in it or pass a video file"
            )
        return FolderFrames(path, files, prefetch)
    if not path.exists():
        raise EmvosInputError(f"{path}: no such file or folder; pass a folder of frames or a video file")
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return VideoFrames(path, prefetch)
    if suffix in FRAME_EXTENSIONS:
        raise EmvosInputError(
            f"{path}: is a single image; put the video's frames in a folder and pass the folder"
        )
    raise EmvosInputError(
        f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; pass a folder of .jpg/.png "
        f"frames or a video ({', '.join(sorted(VIDEO_EXTENSIONS))})"
    )

"""The app's workspace: one video's decoded frames, the user's annotations and the model's results.

Layout of a workspace folder::

    workspace.json          the video: name, source, frame names, size, fps (written last)
    frames/00000.jpg        every frame, decoded once (JPEG, quality 95, no chroma subsampling)
    annotations/00000.png   the masks the user drew or imported, by frame index
    results/00000.png       the propagated masks, by frame index
    probabilities/00000.npz the network's probabilities of each propagated mask, in the ``npz`` result
                            format (:class:`~emvos.io.formats.NpzWriter`): the soft exports and the
                            confidence of the frames to review
    exports/                palette PNGs in the DAVIS layout, the overlay mp4 and the zip

Masks are indexed PNGs with the DAVIS palette whose pixel values are object ids. Files are named
by frame index, whatever the frames were called; exports use the frames' own names. Every file
is written under a hidden temporary name and renamed into place, so a killed server leaves
either the old file or the new one, never a torn one, and reopening the folder continues where
the work stopped. ``workspace.json`` is written once every frame has been decoded: a workspace
without it holds no video.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from emvos.errors import EmvosInputError
from emvos.inference.review import ReviewLog
from emvos.io import FrameSource
from emvos.io.files import atomic_file
from emvos.io.formats import NpzWriter, read_npz_frame
from emvos.io.masks import read_label_png, write_label_png

#: Version of the workspace layout, stored in ``workspace.json``.
WORKSPACE_FORMAT = 1
#: JPEG quality of the decoded frames.
FRAME_QUALITY = 95


@dataclass(frozen=True)
class VideoInfo:
    """The video a workspace holds.

    Attributes:
        name: Short name used for exports (the source's stem).
        source: Where the frames came from (a path, or ``upload:<file name>``).
        frame_names: Stem of each frame's files in exports, in order.
        height: Frame height in pixels.
        width: Frame width in pixels.
        fps: Frames per second of the overlay video.
        token: Random id of this import; it changes when a video replaces another (cache key).
    """

    name: str
    source: str
    frame_names: tuple[str, ...]
    height: int
    width: int
    fps: float
    token: str

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return len(self.frame_names)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of every frame."""
        return self.height, self.width


def _read_labels(path: Path) -> np.ndarray | None:
    """``(H, W) uint8`` ids of a workspace mask, or ``None`` when the frame has none."""
    if not path.is_file():
        return None
    return read_label_png(path).labels


def _indices(folder: Path) -> list[int]:
    """Frame indices of the ``NNNNN.png`` files in ``folder``, ascending (temporary files skipped)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(name[:-4]) for name in names if name.endswith(".png") and name[:-4].isdigit())


class Workspace:
    """A workspace folder (see the module docstring); created if missing.

    Args:
        path: The folder.

    Raises:
        EmvosInputError: ``path`` is a file, cannot be created, or holds an unreadable ``workspace.json``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if self.path.exists() and not self.path.is_dir():
            raise EmvosInputError(f"{self.path}: the workspace is a file, not a folder; pass a folder path")
        try:
            for folder in (self.path, *self._video_dirs):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EmvosInputError(f"{self.path}: cannot create the workspace ({error.strerror or error})") from error
        self._remove_temporary_files()
        self.video = self._load()

    @property
    def frames_dir(self) -> Path:
        """Folder of the decoded frames."""
        return self.path / "frames"

    @property
    def annotations_dir(self) -> Path:
        """Folder of the user's masks."""
        return self.path / "annotations"

    @property
    def results_dir(self) -> Path:
        """Folder of the propagated masks."""
        return self.path / "results"

    @property
    def probabilities_dir(self) -> Path:
        """Folder of the propagated masks' probabilities."""
        return self.path / "probabilities"

    @property
    def _video_dirs(self) -> tuple[Path, ...]:
        """The folders a video's files are kept in, exports aside."""
        return self.frames_dir, self.annotations_dir, self.results_dir, self.probabilities_dir

    @property
    def exports_dir(self) -> Path:
        """Folder of the exports."""
        return self.path / "exports"

    @property
    def manifest(self) -> Path:
        """``workspace.json``."""
        return self.path / "workspace.json"

    def _remove_temporary_files(self) -> None:
        """Delete what a killed server left behind: half-written ``*.tmp`` files and scratch folders."""
        for folder in (self.path, self.annotations_dir, self.results_dir, self.probabilities_dir):
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
        for scratch in self.path.glob(".scratch-*"):
            shutil.rmtree(scratch, ignore_errors=True)

    def scratch_dir(self) -> Path:
        """A new hidden folder in the workspace for uploads; the caller deletes it (or the next start does)."""
        return Path(tempfile.mkdtemp(prefix=".scratch-", dir=self.path))

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (resolved) is the workspace or inside it."""
        return path == self.path or self.path in path.parents

    def _load(self) -> VideoInfo | None:
        if not self.manifest.is_file():
            return None
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
            if data.get("format") != WORKSPACE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {WORKSPACE_FORMAT}")
            video = dict(data["video"])
            video["frame_names"] = tuple(video["frame_names"])
            return VideoInfo(**video)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise EmvosInputError(f"{self.manifest}: not a readable emvos workspace ({error}); "
                                  "pass another --workspace folder") from error

    # -- the video ------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the video: delete its frames, annotations, results and exports."""
        self.video = None
        self.manifest.unlink(missing_ok=True)
        for folder in (*self._video_dirs, self.exports_dir):
            shutil.rmtree(folder, ignore_errors=True)
        for folder in self._video_dirs:
            folder.mkdir()

    def import_frames(self, frames: FrameSource, name: str, source: str,
                      on_frame: Callable[[int], None] = lambda index: None) -> VideoInfo:
        """Replace the workspace's video with ``frames``, decoding every frame once.

        Args:
            frames: The opened video or folder.
            name: The video's short name.
            source: Where it came from, recorded in ``workspace.json``.
            on_frame: Called with each frame's index once it is stored; it may raise to stop.

        Returns:
            The new video, also set as :attr:`video`. ``workspace.json`` is written last: an
            interrupted import leaves a workspace without a video.
        """
        self.clear()
        names: list[str] = []
        for frame in frames:
            Image.fromarray(frame.image).save(self.frame_path(frame.index), format="JPEG",
                                              quality=FRAME_QUALITY, subsampling=0)
            names.append(frame.name)
            on_frame(frame.index)
        height, width = frames.size
        video = VideoInfo(name=name, source=source, frame_names=tuple(names), height=height, width=width,
                          fps=frames.fps, token=secrets.token_hex(4))
        with atomic_file(self.manifest) as stream:
            stream.write(json.dumps({"format": WORKSPACE_FORMAT, "video": asdict(video)}, indent=1).encode())
        self.video = video
        return video

    def require_video(self) -> VideoInfo:
        """The video, or an :class:`EmvosInputError` saying to open one first."""
        if self.video is None:
            raise EmvosInputError("no video is open; open a video file or a folder of frames first")
        return self.video

    def check_index(self, index: int) -> None:
        """Raise :class:`IndexError` unless ``index`` is a frame of the video."""
        if not 0 <= index < self.require_video().num_frames:
            raise IndexError(f"frame {index} is not in this video")

    def frame_path(self, index: int) -> Path:
        """The JPEG of frame ``index``."""
        return self.frames_dir / f"{index:05d}.jpg"

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W, 3) uint8`` RGB."""
        with Image.open(self.frame_path(index)) as image:
            return np.array(image.convert("RGB"))

    # -- masks ----------------------------------------------------------------------------------
    def _check_labels(self, labels: np.ndarray) -> None:
        size = self.require_video().size
        if labels.dtype != np.uint8 or labels.shape != size:
            raise ValueError(f"labels must be a {size} uint8 array, got {labels.dtype} {labels.shape}")

    def annotated(self) -> list[int]:
        """Indices of the frames the user annotated, ascending."""
        return _indices(self.annotations_dir)

    def read_annotation(self, index: int) -> np.ndarray | None:
        """The user's mask of frame ``index`` (``(H, W) uint8`` ids), or ``None``."""
        return _read_labels(self.annotations_dir / f"{index:05d}.png")

    def write_annotation(self, index: int, labels: np.ndarray) -> bool:
        """Store the user's mask of frame ``index``; a mask with no object deletes it instead.

        Returns:
            Whether the frame is annotated now.
        """
        self.check_index(index)
        self._check_labels(labels)
        if not labels.any():
            self.delete_annotation(index)
            return False
        write_label_png(self.annotations_dir / f"{index:05d}.png", labels)
        return True

    def delete_annotation(self, index: int) -> None:
        """Remove the user's mask of frame ``index``, if any."""
        (self.annotations_dir / f"{index:05d}.png").unlink(missing_ok=True)

    def results(self) -> list[int]:
        """Indices of the frames that have a propagated mask, ascending."""
        return _indices(self.results_dir)

    def read_result(self, index: int) -> np.ndarray | None:
        """The propagated mask of frame ``index``, or ``None``."""
        return _read_labels(self.results_dir / f"{index:05d}.png")

    def write_result(self, index: int, labels: np.ndarray, object_ids: tuple[int, ...] = (),
                     probabilities: np.ndarray | None = None) -> None:
        """Store the propagated mask of frame ``index`` and, when given, the probabilities it came from.

        Args:
            index: The frame.
            labels: ``(H, W) uint8`` object ids.
            object_ids: The objects tracked at the frame, in the order of ``probabilities``.
            probabilities: ``(len(object_ids), H, W) uint8`` probability x 255, or ``None``.
        """
        self._check_labels(labels)
        stored = self.probabilities_dir / f"{index:05d}.npz"
        if probabilities is None:
            stored.unlink(missing_ok=True)
        else:
            NpzWriter(self.probabilities_dir).write(stored.stem, labels, object_ids, probabilities)
        write_label_png(self.results_dir / f"{index:05d}.png", labels)

    def _stored_probabilities(self, index: int, labels: np.ndarray) -> tuple[tuple[int, ...], np.ndarray] | None:
        """The objects and probabilities stored with the result ``labels`` of frame ``index``; ``None``
        when there are none, or they belong to another result (a write cut short)."""
        path = self.probabilities_dir / f"{index:05d}.npz"
        if not path.is_file():
            return None
        stored, object_ids, probabilities = read_npz_frame(path)
        return (object_ids, probabilities) if np.array_equal(stored, labels) else None

    def results_without_probabilities(self) -> list[int]:
        """Indices of the results stored without probabilities (propagated with CUDA graphs or an older emvos)."""
        return [index for index in self.results() if not (self.probabilities_dir / f"{index:05d}.npz").is_file()]

    def final_labels(self, index: int) -> np.ndarray:
        """What frame ``index`` exports: its result, else its annotation, else an empty mask."""
        for labels in (self.read_result(index), self.read_annotation(index)):
            if labels is not None:
                return labels
        return np.zeros(self.require_video().size, np.uint8)

    def final_probabilities(self, index: int, labels: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
        """The objects of what frame ``index`` exports (``labels``, :meth:`final_labels`) and their
        ``(O, H, W) uint8`` probabilities x 255: the network's for a result, 0 or 255 for an
        annotation or an empty mask.

        Raises:
            EmvosInputError: the frame's result has no probabilities stored with it.
        """
        if (self.results_dir / f"{index:05d}.png").is_file():
            stored = self._stored_probabilities(index, labels)
            if stored is None:
                raise EmvosInputError(f"frame {index}'s result was stored without probabilities; propagate "
                                      "again, or export without the soft and npz formats")
            return stored
        object_ids = tuple(int(value) for value in np.unique(labels) if value)
        certain = np.stack([labels == i for i in object_ids]) if object_ids else np.zeros((0, *labels.shape), bool)
        return object_ids, certain.astype(np.uint8) * np.uint8(255)

    def review(self) -> ReviewLog:
        """The propagated frames a person should check (:mod:`emvos.inference.review`): every result in
        frame order, each run of consecutive results a pass; confidence where probabilities are stored."""
        video = self.require_video()
        known = tuple(self.object_ids())
        log = ReviewLog()
        previous = None
        for index in self.results():
            labels = self.read_result(index)
            if labels is None:  # deleted since the listing
                continue
            if previous is not None and index != previous + 1:
                log.new_pass()
            object_ids, probabilities = self._stored_probabilities(index, labels) or (known, None)
            log.add(index, video.frame_names[index], labels, object_ids, probabilities)
            previous = index
        return log

    def object_ids(self) -> list[int]:
        """The ids of the objects in the annotations, ascending."""
        found: set[int] = set()
        for index in self.annotated():
            labels = self.read_annotation(index)
            if labels is not None:
                found.update(int(value) for value in np.unique(labels) if value)
        return sorted(found)

"""Writing results: one label PNG per frame, and an mp4 with the masks drawn over the frames.

The formats have their own homes (:func:`emvos.io.masks.write_label_png`, :class:`emvos.io.mp4.Mp4Writer`);
these writers encode on background threads behind a bounded queue (the video on one thread, the
PNGs on several), so encoding overlaps the caller's compute, and both write atomically: a file
appears under its final name only once it is complete (it is written to a hidden temporary name
in the same folder, then ``os.replace``\\ d).

When the ``with`` block ends with an exception, queued frames that were not started are dropped.
:class:`LabelWriter` keeps the PNGs already finished, since each is a complete, valid result for its
frame; no half-written PNG is ever left. :class:`OverlayWriter` discards the unfinished video, since
an mp4 is only valid once closed, except after ``KeyboardInterrupt`` (Ctrl-C): then the frames
already given are encoded and the video is closed, playable, with the finished frames.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from emvos.errors import EmvosInputError
from emvos.io._background import BackgroundWorker
from emvos.io.files import cannot_write
from emvos.io.masks import DAVIS_PALETTE, MaskMode, describe_array, full_palette, write_label_png
from emvos.io.mp4 import Mp4Writer, video_codec

#: How many frames may wait for encoding before ``write`` blocks, by default.
DEFAULT_QUEUE_DEPTH = 4
#: Threads that encode label PNGs, by default: Pillow's PNG encoder releases the GIL, so several
#: encode in parallel (a GPU segments 480p frames faster than one thread writes them); up to half
#: the cores, the other half left to the model.
DEFAULT_PNG_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))


def _prepare_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and parents) or raise a one-line error if that is impossible."""
    if folder.exists() and not folder.is_dir():
        raise EmvosInputError(
            f"{folder}: {what} is a file, not a folder; pass a folder path or remove the file"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EmvosInputError(
            f"{folder}: cannot create the {what} ({error.strerror or error}); choose another path"
        ) from error


def _check_labels(labels: np.ndarray) -> None:
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be an (H, W) uint8 numpy array, got {describe_array(labels)}")


class LabelWriter:
    """Saves one label PNG per frame, ``out_dir/<name>.png``, encoded on background threads.

    Use it as a context manager. PNGs are indexed with ``palette`` (mode ``P``) or greyscale (mode
    ``L``, when the input masks were greyscale), so pixel values are the object ids, exactly.

    Args:
        out_dir: Output folder; created if missing.
        palette: Flat ``[r, g, b, ...]`` palette for mode ``P`` (entries it lacks are taken from
            the DAVIS palette; ``None`` means the DAVIS palette). Ignored for mode ``L``.
        mode: ``"P"`` or ``"L"``, usually the input mask's :attr:`MaskImage.mode`.
        queue_depth: How many frames may wait for encoding before :meth:`write` blocks.
        threads: How many threads encode PNGs (each file is written whole by one of them).

    Raises:
        EmvosInputError: ``out_dir`` is a file or cannot be created (before any work is done).
    """

    def __init__(
        self,
        out_dir: str | Path,
        palette: Sequence[int] | None = None,
        mode: MaskMode = "P",
        *,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
        threads: int = DEFAULT_PNG_THREADS,
    ) -> None:
        if mode not in ("P", "L"):
            raise ValueError(f"mode must be 'P' or 'L', got {mode!r}")
        self.out_dir = Path(out_dir)
        self.mode = mode
        self._palette = full_palette(palette)
        _prepare_folder(self.out_dir, "output folder")
        self._worker: BackgroundWorker[tuple[str, np.ndarray]] = BackgroundWorker(
            self._save, queue_depth, name="emvos-png-writer", threads=threads
        )

    def write(self, name: str, labels: np.ndarray) -> None:
        """Queue ``labels`` (``(H, W) uint8`` object ids) to be saved as ``out_dir/<name>.png``.

        The array is copied, so the caller may reuse it. Raises the error of an earlier failed
        write (as :class:`EmvosInputError`), if any.
        """
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"name must be a plain file stem, got {name!r}")
        _check_labels(labels)
        self._worker.submit((name, labels.copy()))

    def _save(self, item: tuple[str, np.ndarray]) -> None:
        name, labels = item
        target = self.out_dir / f"{name}.png"
        try:
            write_label_png(target, labels, self._palette, self.mode)
        except OSError as error:
            raise cannot_write(target, error) from error

    def close(self, *, discard_pending: bool = False) -> None:
        """Wait until every queued PNG is written; re-raise a write error.

        With ``discard_pending`` (used when the ``with`` block failed), frames not yet started
        are dropped and write errors are not raised.
        """
        self._worker.close(discard_pending=discard_pending)

    def __enter__(self) -> LabelWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(discard_pending=exc_type is not None)


def _contours(labels: np.ndarray, width: int) -> np.ndarray:
    """``(H, W) bool``: object pixels within ``width`` pixels (square window) of another label."""
    height, image_width = labels.shape
    padded = np.pad(labels, width, mode="edge")  # the image border is not an object boundary
    same = np.ones(labels.shape, dtype=bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                window = padded[width + dy : width + dy + height, width + dx : width + dx + image_width]
                same &= window == labels
    return (labels > 0) & ~same


@functools.lru_cache(maxsize=8)
def _blend_tables(palette: tuple[int, ...], alpha: float) -> np.ndarray:
    """``(3, 256 * 256) uint8``: per channel, the blend of every pixel value with every id's colour.

    Entry ``[c, id * 256 + v]`` is ``rint((1 - alpha) * v + alpha * colour[id, c])``, clipped to
    ``0..255``; id 0 (background) maps every value to itself.
    """
    colours = np.array(palette, dtype=np.float64).reshape(256, 3)
    values = np.arange(256, dtype=np.uint8)
    blended = (1.0 - alpha) * values[None, None, :] + alpha * colours.T[:, :, None]  # (3, id, value)
    tables = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    tables[:, 0] = values
    return tables.reshape(3, -1)


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[int] | None = None,
    *,
    alpha: float = 0.5,
    contour_width: int = 2,
) -> np.ndarray:
    """Draw masks over a frame: each object's palette colour blended in, plus a solid contour.

    Only the box around the objects is redrawn, by table look-ups (every pixel value blended with
    every colour, computed once per palette): a 1080p frame takes milliseconds, not tens of them.

    Args:
        image: ``(H, W, 3) uint8`` RGB frame.
        labels: ``(H, W) uint8`` object ids, 0 = background (left untouched).
        palette: Flat ``[r, g, b, ...]`` palette indexed by object id (``None``: DAVIS palette).
        alpha: Weight of the object colour in the blend.
        contour_width: Width in pixels of the contour drawn inside each object's boundary
            (0 for none).

    Returns:
        A new ``(H, W, 3) uint8`` RGB image.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {describe_array(image)}")
    _check_labels(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    result = image.copy()
    rows = np.flatnonzero(labels.any(axis=1))
    if rows.size == 0:
        return result
    cols = np.flatnonzero(labels.any(axis=0))
    # The objects' box, widened by the contour width: every window of the contour test lies inside.
    y0, x0 = max(0, rows[0] - contour_width), max(0, cols[0] - contour_width)
    y1, x1 = rows[-1] + 1 + contour_width, cols[-1] + 1 + contour_width
    box_labels, box = labels[y0:y1, x0:x1], result[y0:y1, x0:x1]
    palette = full_palette(palette)
    tables = _blend_tables(tuple(palette), float(alpha))
    index = box_labels.astype(np.intp) * 256
    for channel in range(3):
        box[..., channel] = tables[channel].take(index + box[..., channel])
    if contour_width > 0:
        edges = _contours(box_labels, contour_width)
        box[edges] = np.array(palette, dtype=np.uint8).reshape(256, 3)[box_labels[edges]]
    return result


def greyscale_overlay_palette() -> list[int]:
    """The palette overlays of greyscale (mode ``L``) masks are drawn with: the DAVIS palette, but id
    255 (the object of a 0/255 mask, whose DAVIS colour is a pale cream) in id 1's red."""
    palette = list(DAVIS_PALETTE)
    palette[3 * 255 : 3 * 256] = DAVIS_PALETTE[3:6]
    return palette


class OverlayWriter:
    """Writes an mp4 of frames with their masks drawn on (see :func:`overlay`), on a background thread.

    Use it as a context manager. The video is encoded with H.264 (``libx264``) when PyAV has it,
    else MPEG-4 part 2, in ``yuv420p`` for compatibility with players. ``yuv420p`` needs even
    dimensions: an odd width or height is padded by one pixel, repeating the last column or row,
    so the video is at most one pixel larger than the frames (cropping would drop mask pixels).

    The video is written to a hidden temporary file next to ``path`` and renamed to ``path`` when
    the ``with`` block ends without error or with ``KeyboardInterrupt``; on another error it is deleted.

    Args:
        path: Output ``.mp4`` file; its folder is created if missing.
        fps: Frames per second.
        size: ``(H, W)`` of the frames that will be written.
        palette: Flat ``[r, g, b, ...]`` palette indexed by object id (``None``: DAVIS palette).
        queue_depth: How many frames may wait for encoding before :meth:`write` blocks.

    Raises:
        EmvosInputError: ``path`` is not an ``.mp4`` path, is a folder, or its folder cannot be
            created (before any work is done).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        size: tuple[int, int],
        *,
        palette: Sequence[int] | None = None,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise EmvosInputError(f"{self.path}: overlay videos are mp4 files; give a path ending in .mp4")
        if self.path.is_dir():
            raise EmvosInputError(
                f"{self.path}: is a folder; give the path of an .mp4 file for the overlay video"
            )
        _prepare_folder(self.path.parent, "folder of the overlay video")
        self.size = (int(size[0]), int(size[1]))
        self.palette = full_palette(palette)
        self.codec = video_codec()
        self._video = Mp4Writer(self.path, fps, self.size, codec=self.codec)
        self._closed = False
        self._worker: BackgroundWorker[tuple[np.ndarray, np.ndarray]] = BackgroundWorker(
            self._encode, queue_depth, name="emvos-overlay-writer"
        )

    def write(self, image: np.ndarray, labels: np.ndarray) -> None:
        """Queue one frame: ``image`` ``(H, W, 3) uint8`` RGB with ``labels`` ``(H, W) uint8`` ids.

        Both arrays are copied, so the caller may reuse them. Raises the error of an earlier
        failed frame (as :class:`EmvosInputError`), if any.
        """
        if image.shape != (*self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be a {(*self.size, 3)} uint8 array, got {describe_array(image)}")
        _check_labels(labels)
        if labels.shape != self.size:
            raise ValueError(f"labels must have shape {self.size}, got {labels.shape}")
        self._worker.submit((image.copy(), labels.copy()))

    def _encode(self, item: tuple[np.ndarray, np.ndarray]) -> None:
        image, labels = item
        self._video.write(overlay(image, labels, self.palette))

    def close(self, *, discard_pending: bool = False) -> None:
        """Finish the video and rename it to :attr:`path`; re-raise an encoding error.

        With ``discard_pending`` (used when the ``with`` block failed), queued frames are dropped
        and the unfinished video is deleted instead. Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._worker.close(discard_pending=discard_pending)
        except BaseException:
            self._video.close(discard=True)
            raise
        self._video.close(discard=discard_pending)

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(discard_pending=exc_type is not None and not issubclass(exc_type, KeyboardInterrupt))

"""Checks made before a run's work: every frame's size, and that the outputs can be written."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from emvos.errors import EmvosInputError
from emvos.io.frames import FolderFrames, FrameSource

#: Files in an output folder that another run's results consist of (the formats of ``emvos.io.formats``).
RESULT_PATTERNS = ("*.png", "*.npz", "*.txt", "annotations.json", "review.json", "[0-9]*/*.png")


def check_frame_sizes(source: FrameSource) -> None:
    """Raise :class:`EmvosInputError` naming the first frame whose size differs from the first one's.

    A folder's images are checked from their headers (no decoding); a video's frames share the
    stream's size.
    """
    if not isinstance(source, FolderFrames):
        return
    height, width = source.size
    for file in source.files:
        try:
            with Image.open(file) as image:
                size = image.size
        except (OSError, ValueError) as error:
            raise EmvosInputError(f"{file}: cannot read this frame ({error}); replace it with a valid JPEG/PNG "
                                  "or delete it") from error
        if size != (width, height):
            raise EmvosInputError(f"{file} is {size[0]}x{size[1]} (width x height) but the first frame "
                                  f"{source.files[0].name} is {width}x{height}; all frames of a video must "
                                  "have the same size")


def check_writable(path: Path, what: str) -> None:
    """Raise :class:`EmvosInputError` unless a file can be created in folder ``path`` (made if missing).

    ``what`` names the option in the message (``--out``, ``--overlay``).
    """
    if path.exists() and not path.is_dir():
        raise EmvosInputError(f"{path}: {what} needs a folder here, but it is a file; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".emvos-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise EmvosInputError(f"{path}: cannot write here for {what} ({error.strerror or error}); "
                              "choose a writable path") from error


def existing_results(folder: Path) -> list[Path]:
    """Result files of an earlier run in ``folder`` (see :data:`RESULT_PATTERNS`), sorted."""
    if not folder.is_dir():
        return []
    return sorted({path for pattern in RESULT_PATTERNS for path in folder.glob(pattern)
                   if path.is_file() and not path.name.startswith(".")})

"""Reading the user's object masks: indexed (palette) or greyscale PNGs whose pixel values are ids.

A mask is a PNG the size of the frames in which 0 is background and any other value (1..255, gaps
allowed) is the id of one object. Palette PNGs (DAVIS-2017 style) and greyscale ``L`` PNGs
(DAVIS-2016 style, one object with id 255) are read as they are; colour (RGB/RGBA) masks and
anti-aliased greyscale masks are turned into ids, and masks a little off the frame size resized,
with a warning (:mod:`emvos.io.mask_repair`); everything else is rejected with a message that says
how to save the mask instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from emvos.errors import EmvosInputError
from emvos.io.frames import natural_sort_key
from emvos.io.mask_repair import (
    OBJECT_LIMIT,
    check_object_count,
    fit_to_frame,
    labels_from_colours,
    threshold_antialiased,
)

MaskMode = Literal["P", "L"]

_SAVE_AS_INDEXED = "save it as an indexed (palette) PNG whose pixel values are object ids (0 = background)"


def _voc_colour_map(count: int = 256) -> list[int]:
    """The PASCAL VOC colour map: bit ``3k + c`` of an index sets bit ``7 - k`` of channel ``c``."""
    palette: list[int] = []
    for index in range(count):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette += [red, green, blue]
    return palette


#: The DAVIS palette: 256 RGB triplets flattened to 768 ints (0 black, 1 dark red, 2 green, ...).
DAVIS_PALETTE: list[int] = _voc_colour_map()


def full_palette(palette: Sequence[int] | None) -> list[int]:
    """``palette`` extended to 768 ints, entries it lacks taken from :data:`DAVIS_PALETTE`."""
    given = list(palette or [])[:768]
    return given + DAVIS_PALETTE[len(given) :]


@dataclass(frozen=True)
class MaskImage:
    """A decoded object mask.

    Attributes:
        labels: ``(H, W) uint8`` object ids, 0 = background.
        palette: The PNG's palette as flat ``[r, g, b, ...]`` ints (mode ``P``), else ``None``.
        mode: ``"P"`` (indexed PNG) or ``"L"`` (greyscale PNG); outputs are written the same way.
    """

    labels: np.ndarray
    palette: list[int] | None
    mode: MaskMode

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the mask."""
        height, width = self.labels.shape
        return height, width

    @property
    def object_ids(self) -> list[int]:
        """The ids of the objects present, ascending, without 0."""
        return [int(value) for value in np.unique(self.labels) if value]


def read_mask(path: str | Path, *, max_objects: int | None = OBJECT_LIMIT) -> MaskImage:
    """Read an object mask from a palette (``P``), greyscale (``L``, or 1-bit) or colour PNG.

    Args:
        path: The PNG file.
        max_objects: More object ids than this is an error (``None``: no limit).

    Returns:
        A :class:`MaskImage` with ``(H, W) uint8`` labels. 1-bit PNGs become mode ``L`` masks with
        id 255, like DAVIS-2016 masks. Colour (``RGB``, ``RGBA``, ``LA``) masks become mode ``P``
        masks, one id per colour (black or transparent: background), the palette holding the
        colours; anti-aliased ``L`` masks are thresholded; both with an
        :class:`~emvos.errors.EmvosInputWarning`.

    Raises:
        EmvosInputError: the file cannot be read, is not a PNG, is a 16/32-bit image, has more than
            255 colours or ``max_objects`` objects, or contains no object.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            file_format, mode = image.format, image.mode
            if file_format != "PNG":
                raise EmvosInputError(
                    f"{path}: mask is a {file_format} file, but masks must be lossless PNGs; "
                    f"{_SAVE_AS_INDEXED}"
                )
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise EmvosInputError(
                    f"{path}: mask is a 16/32-bit image (mode {mode}); object ids must fit in 8 bits, "
                    f"{_SAVE_AS_INDEXED}"
                )
            if mode not in ("P", "L", "1", "RGB", "RGBA", "LA"):
                raise EmvosInputError(f"{path}: mask is a {mode} image; {_SAVE_AS_INDEXED}")
            palette = image.getpalette() if mode == "P" else None
            if mode in ("RGB", "RGBA", "LA"):
                pixels = np.array(image.convert("RGBA" if "A" in mode else "RGB"), dtype=np.uint8)
            else:
                labels = np.array(image.convert("L") if mode == "1" else image, dtype=np.uint8)
    except FileNotFoundError as error:
        raise EmvosInputError(f"{path}: no such mask file; check the path") from error
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise EmvosInputError(f"{path}: cannot read this mask ({error}); {_SAVE_AS_INDEXED}") from error
    if mode in ("RGB", "RGBA", "LA"):
        labels, palette = labels_from_colours(pixels, path)
    if not labels.any():
        raise EmvosInputError(
            f"{path}: mask has no object (every pixel is 0 = background); draw at least one object "
            "or leave this mask out"
        )
    if mode == "L":
        labels = threshold_antialiased(labels, path)
    mask = MaskImage(labels=labels, palette=palette, mode="L" if mode in ("L", "1") else "P")
    check_object_count(mask.object_ids, path, max_objects)
    return mask


def check_mask_size(mask: MaskImage, frame_size: tuple[int, int], path: str | Path) -> None:
    """Raise :class:`EmvosInputError` naming ``path`` unless the mask is ``frame_size`` ``(H, W)``."""
    if mask.size != tuple(frame_size):
        (mask_h, mask_w), (frame_h, frame_w) = mask.size, frame_size
        raise EmvosInputError(
            f"{path}: mask is {mask_w}x{mask_h} (width x height) but the frames are {frame_w}x{frame_h}; "
            "resize the mask to the frame size with nearest-neighbour interpolation"
        )


def _mask_files(spec: Sequence[str | Path]) -> list[Path]:
    """The mask files named by ``spec``: one folder of PNGs, or one or more files."""
    paths = [Path(item) for item in spec]
    if not paths:
        raise ValueError("collect_masks() needs at least one mask path")
    for path in paths:
        if not path.exists():
            raise EmvosInputError(f"{path}: no such mask file or folder; check the path")
    folders = [path for path in paths if path.is_dir()]
    if not folders:
        return paths
    if len(paths) > 1:
        raise EmvosInputError(f"{folders[0]}: is a folder; pass either one folder of masks or mask files")
    files = [
        entry
        for entry in folders[0].iterdir()
        if entry.suffix.lower() == ".png" and not entry.name.startswith(".") and entry.is_file()
    ]
    if not files:
        raise EmvosInputError(f"{folders[0]}: folder has no .png masks; put the object masks in it")
    return sorted(files, key=lambda file: natural_sort_key(file.name))


def collect_masks(
    spec: Sequence[str | Path],
    frame_names: Sequence[str],
    *,
    frame_size: tuple[int, int] | None = None,
    max_objects: int | None = OBJECT_LIMIT,
) -> dict[int, tuple[Path, MaskImage]]:
    """Read the user's masks and assign each to the frame it annotates.

    A mask belongs to the frame whose name equals the mask file's stem (``00042.png`` -> the frame
    named ``00042``). A lone mask whose stem matches no frame annotates the first frame, unless
    the stem is a number other than 0 (``00099.png``): that names a frame the video does not have. Masks at
    later frames introduce objects that appear mid-video. A mask whose aspect ratio is the
    frames' but not its size is resized to them, with a warning.

    Args:
        spec: One folder of ``.png`` masks, or one or more mask files.
        frame_names: The name of every frame, in order (:attr:`FrameSource.names`).
        frame_size: ``(H, W)`` of the frames; when given, every mask is checked against it.
        max_objects: see :func:`read_mask`.

    Returns:
        ``{frame index: (mask path, mask)}``, ascending by frame index.

    Raises:
        EmvosInputError: a path does not exist, a folder has no masks, a mask is invalid (see
            :func:`read_mask`), several masks are given and one matches no frame, two masks
            annotate the same frame, a lone mask is named after a frame the video lacks, or a
            mask's aspect ratio differs from the frames'.
    """
    files = _mask_files(spec)
    index_of = {name: index for index, name in enumerate(frame_names)}
    assigned: dict[int, Path] = {}
    for file in files:
        index = index_of.get(file.stem)
        if index is None:
            if len(files) > 1:
                raise EmvosInputError(
                    f"{file}: matches no frame (no frame is named {file.stem!r}); with several masks, "
                    "name each after the frame it annotates, e.g. 00000.png for the first frame"
                )
            if file.stem.isdigit() and int(file.stem) > 0:
                raise EmvosInputError(
                    f"{file}: names frame {file.stem}, but the video has {len(frame_names)} frames "
                    f"({frame_names[0]} .. {frame_names[-1]}); rename it after the frame it annotates"
                )
            index = 0
        if index in assigned:
            raise EmvosInputError(
                f"{file}: frame {frame_names[index]!r} already has the mask {assigned[index]}; "
                "keep one of them"
            )
        assigned[index] = file
    masks: dict[int, tuple[Path, MaskImage]] = {}
    for index in sorted(assigned):
        file = assigned[index]
        mask = read_mask(file, max_objects=max_objects)
        if frame_size is not None and mask.size != tuple(frame_size):
            resized = fit_to_frame(mask.labels, frame_size, file)
            if resized is None:
                check_mask_size(mask, frame_size, file)
            mask = MaskImage(labels=resized, palette=mask.palette, mode=mask.mode)
        masks[index] = (file, mask)
    return masks

"""Object masks on disk: the one reader and the one writer of PNGs whose pixel values are object ids.

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
from emvos.io.files import atomic_path
from emvos.io.frames import natural_sort_key
from emvos.io.mask_repair import (
    OBJECT_LIMIT,
    check_object_count,
    fit_to_frame,
    labels_from_colours,
    threshold_antialiased,
)

MaskMode = Literal["P", "L"]
#: PNG modes that :func:`read_label_png` reads as colour masks when asked (``colours=True``).
_COLOUR_MODES = ("RGB", "RGBA", "LA")

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


def read_label_png(path: str | Path, *, what: str = "mask", opaque_alpha: bool = False,
                   colours: bool = False) -> MaskImage:
    """Read a PNG of object ids: every reader of masks (user input, datasets, evaluation, the app) uses it.

    Palette (``P``) and greyscale (``L``) PNGs are read as they are, pixel values being ids; 1-bit
    PNGs become mode ``L`` masks with id 255, like DAVIS-2016 masks. The mask may hold no object.

    Args:
        path: The PNG file.
        what: What the file is, for error messages (``mask``, ``annotation``, ``result mask`` ...).
        opaque_alpha: Also accept ``LA``/``PA`` PNGs whose alpha band is fully opaque (some
            DAVIS-2016 annotations are saved so), read without it.
        colours: Also accept colour (``RGB``, ``RGBA``, ``LA``) PNGs as users draw them: each
            distinct colour one object (black or transparent: background), the palette holding
            the colours, announced with an :class:`~emvos.errors.EmvosInputWarning`
            (:func:`~emvos.io.mask_repair.labels_from_colours`).

    Returns:
        A :class:`MaskImage` with ``(H, W) uint8`` labels.

    Raises:
        EmvosInputError: naming ``path`` and the fix: the file is missing or unreadable, is not a
            PNG, or is a colour image not accepted (RGB/RGBA, or LA/PA), a colour mask of more than
            255 colours, or a 16/32-bit image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            file_format, mode = image.format, image.mode
            if file_format != "PNG":
                raise EmvosInputError(
                    f"{path}: {what} is a {file_format} file, but masks must be lossless PNGs; {_SAVE_AS_INDEXED}"
                )
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise EmvosInputError(
                    f"{path}: {what} is a 16/32-bit image (mode {mode}); object ids must fit in 8 bits, "
                    f"{_SAVE_AS_INDEXED}"
                )
            palette = image.getpalette() if mode in ("P", "PA") else None
            if colours and mode in _COLOUR_MODES:
                pixels = np.array(image.convert("RGBA" if "A" in mode else "RGB"), dtype=np.uint8)
            else:
                labels = np.array(image.convert("L") if mode == "1" else image, dtype=np.uint8)
    except FileNotFoundError as error:
        raise EmvosInputError(f"{path}: no such {what} file; check the path") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise EmvosInputError(f"{path}: cannot read {what} ({error}); {_SAVE_AS_INDEXED}") from error
    if colours and mode in _COLOUR_MODES:
        labels, palette = labels_from_colours(pixels, path)
        return MaskImage(labels=labels, palette=palette, mode="P")
    if opaque_alpha and mode in ("LA", "PA") and bool(np.all(labels[..., 1] == 255)):
        labels, mode = np.ascontiguousarray(labels[..., 0]), mode[0]
    if mode not in ("P", "L", "1"):
        raise EmvosInputError(
            f"{path} is a {mode}-mode image (colour or with alpha), not an indexed {what}; {_SAVE_AS_INDEXED}"
        )
    return MaskImage(labels=labels, palette=palette, mode="P" if mode == "P" else "L")


def read_mask(path: str | Path, *, max_objects: int | None = OBJECT_LIMIT) -> MaskImage:
    """Read a user's object mask (:func:`read_label_png`, colour masks accepted) that must show an object.

    Anti-aliased greyscale masks are thresholded, with an :class:`~emvos.errors.EmvosInputWarning`
    (:func:`~emvos.io.mask_repair.threshold_antialiased`).

    Args:
        path: The PNG file.
        max_objects: More object ids than this is an error (``None``: no limit).

    Raises:
        EmvosInputError: as :func:`read_label_png`, or the mask contains no object, or more than
            ``max_objects`` objects.
    """
    mask = read_label_png(path, colours=True)
    if not mask.labels.any():
        raise EmvosInputError(
            f"{path}: mask has no object (every pixel is 0 = background); draw at least one object "
            "or leave this mask out"
        )
    if mask.mode == "L":
        mask = MaskImage(labels=threshold_antialiased(mask.labels, path), palette=None, mode="L")
    check_object_count(mask.object_ids, path, max_objects)
    return mask


def write_label_png(path: str | Path, labels: np.ndarray, palette: Sequence[int] | None = None,
                    mode: MaskMode = "P") -> None:
    """Save object ids as a PNG, atomically: indexed with ``palette`` (mode ``P``) or greyscale (``L``).

    Pixel values are the ids exactly; :func:`read_label_png` reads them back.

    Args:
        path: The PNG file; its folder is created if missing.
        labels: ``(H, W) uint8`` object ids, 0 = background.
        palette: Flat ``[r, g, b, ...]`` palette for mode ``P``; entries it lacks (or all, ``None``)
            are taken from :data:`DAVIS_PALETTE`. Ignored for mode ``L``.
        mode: ``"P"`` or ``"L"``.

    Raises:
        ValueError: ``labels`` is not an ``(H, W) uint8`` array, or ``mode`` is neither ``P`` nor ``L``.
        OSError: the file cannot be written (full disk, no permission ...); ``path`` is left as it was.
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be an (H, W) uint8 numpy array, got {describe_array(labels)}")
    if mode not in ("P", "L"):
        raise ValueError(f"mode must be 'P' or 'L', got {mode!r}")
    image = Image.fromarray(labels, mode="L")
    if mode == "P":
        image.putpalette(full_palette(palette))  # turns the L image into a P image with the same indices
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


def describe_array(array: object) -> str:
    """``uint8 array of shape (4, 4)``, or the type's name of what is not an array (for error messages)."""
    if isinstance(array, np.ndarray):
        return f"{array.dtype} array of shape {array.shape}"
    return type(array).__name__


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
                check_mask_size(mask, frame_size, file)  # the aspect ratios differ: raises
            else:
                mask = MaskImage(labels=resized, palette=mask.palette, mode=mask.mode)
        masks[index] = (file, mask)
    return masks

"""Masks as users have them, turned into object ids: colour masks, anti-aliased greyscale masks,
masks a little off the frame size, and a check on implausible object counts.

Each repair is announced with an :class:`~emvos.errors.EmvosInputWarning` naming the file, so that a
mask is never silently read differently from how it was drawn.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from emvos.errors import EmvosInputError, EmvosInputWarning

#: More objects than this in one mask is taken for a mistake (a blurred or photographic mask) unless confirmed.
OBJECT_LIMIT = 100
#: An ``L`` mask with at least this many grey levels whose in-between levels form no regions (most
#: of their pixels differ from a neighbour: a gradient, not areas of one id) is an anti-aliased mask.
ANTIALIASED_LEVELS = 4
#: Share of the in-between pixels at most that equal all four neighbours in an anti-aliased mask.
ANTIALIASED_FLAT_SHARE = 0.5
#: Largest relative difference of aspect ratios for which a mask of another size is resized to the frame.
ASPECT_TOLERANCE = 0.01


def labels_from_colours(pixels: np.ndarray, path: str | Path) -> tuple[np.ndarray, list[int]]:
    """Object ids of a colour mask: each distinct colour one object, black or transparent background.

    Ids are given in the order of the colours' ``(r, g, b)`` values; the map is announced as a
    warning.

    Args:
        pixels: ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA ``uint8`` pixels.
        path: The file, for messages.

    Returns:
        ``(H, W) uint8`` ids and a flat palette whose entry ``id`` is the object's colour.

    Raises:
        EmvosInputError: more than 255 colours (not a mask of objects).
    """
    rgb = pixels[..., :3]
    background = (rgb == 0).all(axis=-1)
    if pixels.shape[-1] == 4:
        background |= pixels[..., 3] == 0
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed[~background], return_inverse=True)
    if len(colours) > 255:
        raise EmvosInputError(f"{path}: colour mask has {len(colours)} colours, but each colour is an object "
                              "and at most 255 fit; paint each object in one flat colour (no smoothing)")
    labels = np.zeros(packed.shape, np.uint8)
    labels[~background] = inverse.astype(np.uint8) + 1
    triples = [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in colours]
    palette = [0, 0, 0] + [value for triple in triples for value in triple]
    shown = ", ".join(f"#{r:02x}{g:02x}{b:02x} -> {i}" for i, (r, g, b) in enumerate(triples[:20], start=1))
    if triples:
        warnings.warn(f"{path}: colour mask read as {len(triples)} object(s) by colour: {shown}"
                      + (", ..." if len(triples) > 20 else ""), EmvosInputWarning, stacklevel=3)
    return labels, palette


def threshold_antialiased(labels: np.ndarray, path: str | Path) -> np.ndarray:
    """A greyscale mask with soft edges as one object at its brightest level; other masks unchanged.

    Args:
        labels: ``(H, W) uint8`` grey levels of an ``L`` mask.
        path: The file, for messages.

    Returns:
        ``(H, W) uint8`` ids: when the mask is anti-aliased (:data:`ANTIALIASED_LEVELS`,
        :data:`ANTIALIASED_FLAT_SHARE`), the brightest level where a pixel is at least half of
        it and 0 elsewhere (announced as a warning); else ``labels`` as they are.
    """
    levels = np.unique(labels)
    if len(levels) < ANTIALIASED_LEVELS:
        return labels
    top = int(levels[-1])
    padded = np.pad(labels, 1, mode="edge")
    flat = ((padded[:-2, 1:-1] == labels) & (padded[2:, 1:-1] == labels)
            & (padded[1:-1, :-2] == labels) & (padded[1:-1, 2:] == labels))
    between = (labels > 0) & (labels < top)
    if flat[between].sum() > ANTIALIASED_FLAT_SHARE * between.sum():
        return labels
    warnings.warn(f"{path}: greyscale mask has {len(levels) - 2} grey levels between 0 and {top} (soft, "
                  f"anti-aliased edges); read as one object {top} where a pixel is at least {(top + 1) // 2}",
                  EmvosInputWarning, stacklevel=3)
    return np.where(labels >= (top + 1) // 2, np.uint8(top), np.uint8(0))


def fit_to_frame(labels: np.ndarray, frame_size: tuple[int, int], path: str | Path) -> np.ndarray | None:
    """``labels`` resized to ``frame_size`` ``(H, W)`` (nearest neighbour) when only the size differs.

    Returns:
        ``(H, W) uint8`` ids at the frame size (announced as a warning), or ``None`` when the
        aspect ratios differ (the caller refuses the mask).
    """
    (mask_h, mask_w), (frame_h, frame_w) = labels.shape, frame_size
    if abs((mask_w / mask_h) / (frame_w / frame_h) - 1) > ASPECT_TOLERANCE:
        return None
    warnings.warn(f"{path}: mask is {mask_w}x{mask_h} but the frames are {frame_w}x{frame_h}; resized to the "
                  "frame size (nearest neighbour)", EmvosInputWarning, stacklevel=3)
    return np.array(Image.fromarray(labels).resize((frame_w, frame_h), Image.Resampling.NEAREST))


def check_object_count(object_ids: list[int], path: str | Path, limit: int | None) -> None:
    """Raise :class:`EmvosInputError` when a mask has more than ``limit`` objects (``None``: no limit)."""
    if limit is not None and len(object_ids) > limit:
        raise EmvosInputError(
            f"{path}: mask has {len(object_ids)} different object ids, more than {limit}; a blurred, "
            "resized or photographic mask looks like this. Give each object one id (0 = background), or "
            "pass --many-objects if it really holds that many objects")

"""Small objects tracked in a zoomed window of their own, beside the whole frame.

At 480p, matching at stride 16 sees an object of a thousand pixels in a 1080p frame as a cell or
two: it is lost within frames. A small object therefore also gets a square *window* of the frame
around it, some times its own extent (:attr:`ZoomSettings.context`), cut from the frame's own
pixels and resized to :attr:`ZoomSettings.size` pixels a side: there it is many cells wide. The
window is tracked as a video of its own (its first-frame and previous-frame references, the same
network), and follows the object: each frame it is centred on what the window's prediction marks,
while that keeps between a third and three times the object's first area (a window that would chase
a leak or a vanishing object stays where it is). Its side stays the one the object was given with;
once the object fills its window and the frame's pass sees it there, larger than the window
(:func:`outgrown`: an object coming closer), the window is closed and the object is left to the
frame's pass.

The window's video also tracks the other objects it shows when it is given (a person carrying a
small bag, a car beside a small car), so that they keep apart from its object inside the window as
they do in the frame. The frame's own pass still tracks every object. Inside a window, the object's
probability is the window's, weighed against the frame's other objects as soft aggregation weighs
objects (:func:`merge_windows`); outside, it is 0. An object is small when its longer side spans fewer than
:attr:`ZoomSettings.small` pixels of the frame's pass (eight of the network's cells at 128), whatever
the frame's size: each costs one encoder pass of ``size`` pixels a side per frame, and videos of
large objects cost nothing more.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from emvos.inference.aggregate import EPS
from emvos.inference.settings import DEFAULT_ZOOM_SIZE, check_setting_names

#: Smallest window side in frame pixels (an object of a few pixels still gets some context).
MIN_SIDE = 32
#: The window follows the object while its marked area stays within this factor of the first one.
AREA_RANGE = 3.0
#: A window is full when what it marks spans this share of its side.
FULL = 0.9
#: An object has outgrown its window when the frame's pass marks it larger than the window within
#: this many window sides around the window's centre.
AROUND = 3.0


@dataclass(frozen=True)
class ZoomSettings:
    """When and how small objects get a zoomed window.

    Attributes:
        size: side in pixels of the window as the network sees it (a multiple of the network's
            stride): the larger, the more a small object is magnified, and the more each window costs.
        context: the window's side as a multiple of the object's extent (the longer side of its
            bounding box) when it is given.
        small: objects whose extent is under this many pixels at the working resolution (the frame
            pass's) are small.
    """

    size: int = DEFAULT_ZOOM_SIZE
    context: float = 1.5
    small: int = 128

    def __post_init__(self) -> None:
        if self.size < 64:
            raise ValueError(f"size must be at least 64 pixels, got {self.size}")
        if self.context < 1:
            raise ValueError(f"context must be at least 1 (the object's own extent), got {self.context}")
        if self.small < 1:
            raise ValueError(f"small must be at least 1 pixel, got {self.small}")


#: The zoom ``emvos segment`` and :meth:`~emvos.inference.VideoPredictor.from_checkpoint` use by default.
DEFAULT_ZOOM = ZoomSettings()


def zoom_settings(size: int | None = None) -> ZoomSettings | None:
    """The zoom of a window ``size`` (``--zoom``): ``None`` the default size, 0 no zoom.

    Raises:
        ValueError: a size below 64 pixels.
    """
    if size == 0:
        return None
    return DEFAULT_ZOOM if size is None else ZoomSettings(size=size)


def parse_zoom(text: str) -> ZoomSettings | None:
    """Zoom settings as a benchmark's command line gives them: ``0`` for none, or a JSON object of
    :class:`ZoomSettings` fields over the defaults (``{}``: the defaults).

    Raises:
        ValueError: not JSON, a field :class:`ZoomSettings` does not have, or a value out of range.
    """
    if text.strip() == "0":
        return None
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError(f"zoom settings must be 0 or a JSON object, got {text!r}")
    check_setting_names(ZoomSettings, fields, "zoom")
    return dataclasses.replace(DEFAULT_ZOOM, **fields)


@dataclass
class Window:
    """A square window of the frame that follows one object.

    Attributes:
        center: ``(y, x)`` in frame pixels.
        side: side in frame pixels (fixed).
        area: the object's area in frame pixels when it was given.
    """

    center: tuple[float, float]
    side: float
    area: float

    def box(self) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` in frame pixels, integers; may reach outside the frame."""
        side = round(self.side)
        top, left = round(self.center[0] - self.side / 2), round(self.center[1] - self.side / 2)
        return top, left, top + side, left + side

    def crop(self, image: Tensor, size: int, mode: str = "bilinear") -> Tensor:
        """The window of ``(C, H, W)`` ``image`` resized to ``(C, size, size)`` float (the values
        as they are: a ``uint8`` image's stay in 0..255); the frame's border pixels repeat where the
        window reaches outside it (``mode``: ``bilinear``, antialiased when shrinking, or ``nearest``
        for masks). Only the window's pixels are converted."""
        top, left, bottom, right = self.box()
        height, width = image.shape[-2:]
        inside = image[:, max(top, 0):min(bottom, height), max(left, 0):min(right, width)].float()
        pad = (max(-left, 0), max(right - width, 0), max(-top, 0), max(bottom - height, 0))
        if any(pad):
            inside = F.pad(inside[None], pad, mode="replicate")[0]
        if mode == "nearest":
            return F.interpolate(inside[None], size=(size, size), mode="nearest")[0]
        return F.interpolate(inside[None], size=(size, size), mode="bilinear", align_corners=False,
                             antialias=inside.shape[-1] > size)[0]

    def paste(self, probs: Tensor, frame: tuple[int, int]) -> tuple[tuple[slice, slice], Tensor]:
        """Where the window lies in a frame of size ``frame``, and ``(C, size, size)`` ``probs`` resized to it.

        Returns:
            The frame's ``(rows, columns)`` slices and the ``(C, h, w)`` probabilities for them (the
            part of the window inside the frame).
        """
        top, left, bottom, right = self.box()
        side = bottom - top
        full = F.interpolate(probs[None], size=(side, side), mode="bilinear", align_corners=False)[0]
        rows = slice(max(top, 0), min(bottom, frame[0]))
        cols = slice(max(left, 0), min(right, frame[1]))
        return (rows, cols), full[:, rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]

    def extent(self, fg: Tensor) -> float:
        """The longer side, in frame pixels, of the bounding box of what ``(size, size)`` foreground
        probabilities ``fg`` of the window's crop mark; 0 when nothing."""
        return extent(fg) * self.side / fg.shape[-1]

    def follow(self, fg: Tensor) -> None:
        """Centre the window on what ``(size, size)`` foreground probabilities ``fg`` of its last crop
        mark (above 0.5), unless nothing is marked or the area left :data:`AREA_RANGE` of the first."""
        scale = self.side / fg.shape[-1]
        area = float((fg > 0.5).sum()) * scale ** 2
        bounds = _bounds(fg)
        if bounds is None or not self.area / AREA_RANGE < area < self.area * AREA_RANGE:
            return
        top, left, bottom, right = bounds
        corner = (self.center[0] - self.side / 2, self.center[1] - self.side / 2)
        self.center = (corner[0] + (top + bottom) / 2 * scale, corner[1] + (left + right) / 2 * scale)


def _bounds(probs: Tensor) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` (bottom and right exclusive) of what ``(H, W)`` probabilities
    mark (above 0.5; a bool mask: its pixels); ``None`` when nothing."""
    marked = probs if probs.dtype == torch.bool else probs > 0.5
    rows, cols = torch.nonzero(marked.any(dim=1)).flatten(), torch.nonzero(marked.any(dim=0)).flatten()
    if len(rows) == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def extent(probs: Tensor) -> float:
    """The longer side in pixels of the bounding box of what ``(H, W)`` probabilities mark (above
    0.5); 0 when nothing."""
    bounds = _bounds(probs)
    if bounds is None:
        return 0.0
    top, left, bottom, right = bounds
    return float(max(bottom - top, right - left))


def small(extent: float, settings: ZoomSettings, work_scale: float) -> bool:
    """Whether an object ``extent`` frame pixels long is small in the frame's pass, which resizes
    frames by ``work_scale``."""
    return extent * work_scale < settings.small


def outgrown(window: Window, fg: Tensor, frame_fg: Tensor) -> bool:
    """Whether an object has outgrown its window: what the window marks (``(size, size)`` foreground
    probabilities ``fg``) spans :data:`FULL` of its side, and the frame's pass (``(H, W)``
    probabilities ``frame_fg``) marks the object there too (at least half of what the window marks)
    and larger than the window, within :data:`AROUND` times the window's side around it. A window
    alone that marks something large has leaked onto its surroundings, and what the frame's pass
    marks elsewhere is not the window's object: the window stays open."""
    if window.extent(fg) < FULL * window.side:
        return False
    (rows, cols), pasted = window.paste(fg[None], (frame_fg.shape[0], frame_fg.shape[1]))
    marked = pasted[0] > 0.5
    if int((marked & (frame_fg[rows, cols] > 0.5)).sum()) * 2 < int(marked.sum()):
        return False
    top, left, bottom, right = Window(window.center, window.side * AROUND, window.area).box()
    return extent(frame_fg[max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)]) > window.side


def merge_windows(probs: Tensor, windows: Sequence[tuple[int, tuple[slice, slice], Tensor]]) -> Tensor:
    """The frame's probabilities with windowed objects' rows replaced by their windows'.

    Soft aggregation weighs each object by its odds against the background; a window's object keeps
    those its window gives it (its probability over the window's background, where the window's
    neighbours compete with it too), against the background the frame's other objects leave. So a
    window's object wins its pixels from an unsure neighbour of the frame's pass (a carried bag from
    the person who carries it) and not from a sure one. Outside its window an object is 0.

    Args:
        probs: ``(O + 1, H, W)`` background and object probabilities of the frame's pass (changed in
            place).
        windows: for each window, its object's row in ``probs``, the frame's ``(rows, columns)`` it
            covers and ``(2, h, w)`` the window's background and object probabilities there
            (:meth:`Window.paste`); one window per row.

    Returns:
        ``probs``, which again sum to one at every pixel.
    """
    rows = [row for row, _, _ in windows]
    others = [row for row in range(1, len(probs)) if row not in rows]
    probs[rows] = 0
    probs[0] = 1 - probs[others].sum(dim=0).clamp_(max=1)  # the windowed objects' share goes to the background
    for row, (ys, xs), (bg, fg) in windows:
        probs[row, ys, xs] = probs[0, ys, xs] * fg.clamp(EPS, 1 - EPS) / bg.clamp(EPS, 1 - EPS)
    return probs.div_(probs.sum(dim=0, keepdim=True))


def zoom_window(mask: np.ndarray, settings: ZoomSettings, work_scale: float) -> Window | None:
    """The window of an object given by ``(H, W)`` bool ``mask``, or ``None`` when it needs none.

    Args:
        mask: the object's pixels in the frame.
        settings: the zoom's size and context.
        work_scale: the frame pass's resize factor (working size / frame size).

    Returns:
        A window when the object is small (:func:`small`) and the window, resized to
        :attr:`ZoomSettings.size`, shows it larger than the frame's pass; ``None`` otherwise or
        when ``mask`` is empty.
    """
    bounds = _bounds(torch.from_numpy(mask))
    if bounds is None:
        return None
    top, left, bottom, right = bounds
    length = max(bottom - top, right - left)
    side = min(max(length * settings.context, MIN_SIDE), min(mask.shape))
    if side * work_scale >= settings.size or not small(length, settings, work_scale):
        return None
    return Window(((top + bottom) / 2, (left + right) / 2), float(side), float(mask.sum()))

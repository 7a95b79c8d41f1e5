"""Drawing helpers shared by the figures: normalisation, a colour map, fonts, titled panel rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

#: Width of one panel of a figure row, in pixels.
PANEL_WIDTH = 320
#: Height of the title band above each panel.
TITLE_HEIGHT = 28
#: Space between panels and around the row.
GAP = 6
#: Figure background and text colours.
PAPER = (255, 255, 255)
INK = (20, 20, 20)

#: The viridis colour map, sampled at 9 evenly spaced values (interpolated linearly in between).
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float32)


def normalise(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Map values linearly onto ``[0, 1]`` (min to 0, max to 1); a constant array maps to 0."""
    low, high = float(values.min()), float(values.max())
    return ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)


def colormap(values: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Colour values in ``[0, 1]`` (any shape ``S``) with viridis; returns ``S + (3,)`` uint8 RGB."""
    stops = np.linspace(0, 1, len(_VIRIDIS))
    clipped = np.clip(values, 0, 1)
    rgb = np.stack([np.interp(clipped, stops, _VIRIDIS[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` pixels (its fixed-size bitmap font where Pillow lacks FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def centred_text(draw: ImageDraw.ImageDraw, centre: tuple[float, float], text: str, size: int,
                 fill: tuple[int, int, int] = INK) -> None:
    """Draw one line of ``text`` at ``size`` pixels, centred on ``centre`` ``(x, y)``."""
    face = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    draw.text((centre[0] - (left + right) / 2, centre[1] - (top + bottom) / 2), text, fill=fill, font=face)


def panel_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of a panel showing a frame of ``(H, W)``: :data:`PANEL_WIDTH` wide, same aspect."""
    height, width = frame_size
    return PANEL_WIDTH, max(1, round(PANEL_WIDTH * height / width))


def row_size(count: int, panel: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of :func:`titled_row` with ``count`` panels of ``panel`` ``(width, height)``."""
    return count * panel[0] + (count + 1) * GAP, TITLE_HEIGHT + panel[1] + GAP


def placeholder(panel: tuple[int, int], text: str) -> Image.Image:
    """A grey ``panel`` ``(width, height)`` saying ``text``, for a map that cannot be computed."""
    image = Image.new("RGB", panel, (200, 200, 200))
    centred_text(ImageDraw.Draw(image), (panel[0] / 2, panel[1] / 2), text, 15)
    return image


def titled_row(panels: Sequence[tuple[str, Image.Image]]) -> Image.Image:
    """Panels side by side, each under its title.

    Args:
        panels: ``(title, image)`` pairs; every image has the size of the first.

    Returns:
        An RGB image of :func:`row_size`.
    """
    panel = panels[0][1].size
    figure = Image.new("RGB", row_size(len(panels), panel), PAPER)
    draw = ImageDraw.Draw(figure)
    for i, (title, image) in enumerate(panels):
        if image.size != panel:
            raise ValueError(f"panel {title!r} is {image.size}, the first panel is {panel}")
        left = GAP + i * (panel[0] + GAP)
        centred_text(draw, (left + panel[0] / 2, TITLE_HEIGHT / 2 + 1), title, 16)
        figure.paste(image.convert("RGB"), (left, TITLE_HEIGHT))
    return figure

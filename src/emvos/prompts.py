"""A first mask from a box or a few clicks: OpenCV's GrabCut, seeded by the frozen encoder's features.

GrabCut fits colour models (Gaussian mixtures) to the object and the background and cuts the
frame between them with a graph cut. A box marks everything outside it as background and inside
it as probably the object. Positive clicks mark small discs that are the object for certain,
negative clicks discs that are background for certain. Without a box, the probable object is
where the encoder's features (the frozen image encoder of the segmentation network) resemble
those under the positive clicks more than those under the negative ones, in the connected region
of a positive click. Nothing is trained for this. Mean IoU on DAVIS frames: ``docs/prompts.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from emvos.model.encoders import Encoder

#: GrabCut's iterations: its colour models settle within a handful.
DEFAULT_ITERATIONS = 5
#: Radius of a click's disc, as a fraction of the frame's shorter side.
CLICK_RADIUS = 0.012
#: Without a box, the probable object is where a positive click's feature similarity exceeds this
#: fraction of its median similarity around the click (chosen on the frames of docs/prompts.md's first table).
SIMILARITY_FRACTION = 0.5
#: Half the side, in pixels at the frame's size, of the square around a click whose median similarity is the reference.
SIMILARITY_WINDOW = 24


@dataclass(frozen=True)
class Click:
    """A click on a frame: ``(x, y)`` in pixels (column, row); ``positive`` marks the object, else background."""

    x: float
    y: float
    positive: bool = True


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` -> the four ints; raises ``ValueError`` naming the format."""
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (int(round(float(part))) for part in parts)
    except ValueError:
        raise ValueError(f"box must be x0,y0,x1,y1 (pixels, left, top, right, bottom), got {text!r}") from None
    return x0, y0, x1, y1


def parse_click(text: str) -> Click:
    """``"x,y"``, ``"x,y,+"`` or ``"x,y,-"`` (negative: background) -> a :class:`Click`."""
    parts = text.replace(" ", "").split(",")
    sign = parts.pop() if len(parts) == 3 else "+"
    try:
        if len(parts) != 2 or sign not in ("+", "-"):
            raise ValueError
        x, y = (float(part) for part in parts)
    except ValueError:
        raise ValueError(f"click must be x,y or x,y,+ (object) or x,y,- (background), got {text!r}") from None
    return Click(x, y, sign == "+")


def _check_box(box: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = size
    x0, y0, x1, y1 = (int(round(value)) for value in box)
    x0, x1 = sorted((max(0, min(width, x0)), max(0, min(width, x1))))
    y0, y1 = sorted((max(0, min(height, y0)), max(0, min(height, y1))))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"box {tuple(box)} covers less than 2x2 pixels of the {width}x{height} frame")
    return x0, y0, x1, y1


def _disc(shape: tuple[int, int], click: Click, radius: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (cols - click.x) ** 2 + (rows - click.y) ** 2 <= radius**2


def prompt_mask(
    image: np.ndarray,
    box: Sequence[float] | None = None,
    clicks: Sequence[Click] = (),
    *,
    encoder: Encoder | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> np.ndarray:
    """The object a box and/or clicks point at.

    Args:
        image: ``(H, W, 3) uint8`` RGB frame.
        box: ``(x0, y0, x1, y1)`` pixels around the object (right and bottom exclusive), or ``None``.
        clicks: :class:`Click` points; at least one positive when there is no box.
        encoder: the image encoder whose features seed clicks without a box (e.g. a predictor's
            ``model.encoder``); ``None``: the shipped model's EfficientNet-Lite0. Unused with a box.
        iterations: GrabCut iterations.

    Returns:
        ``(H, W) bool``: the object's pixels (never empty: the positive clicks' discs at least).

    Raises:
        ValueError: no box and no positive click, a click outside the frame, a box of under 2x2
            pixels, or an image that is not ``(H, W, 3) uint8``.
    """
    import cv2  # OpenCV loads in a fraction of a second, only when a prompt is given

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    for click in clicks:
        if not (0 <= click.x < width and 0 <= click.y < height):
            raise ValueError(f"clicks: ({click.x:g}, {click.y:g}) lies outside the {width}x{height} frame")
    positive = [click for click in clicks if click.positive]
    if box is None and not positive:
        raise ValueError("box and clicks: give a box or at least one positive click (on the object)")
    if box is not None:
        trimap = np.full((height, width), cv2.GC_BGD, np.uint8)
        x0, y0, x1, y1 = _check_box(box, (height, width))
        trimap[y0:y1, x0:x1] = cv2.GC_PR_FGD
    else:
        seed = _similar_region(image, clicks, encoder)
        trimap = np.where(seed, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    radius = max(2.0, CLICK_RADIUS * min(height, width))
    for click in clicks:
        trimap[_disc(trimap.shape, click, radius)] = cv2.GC_FGD if click.positive else cv2.GC_BGD
    _grab_cut(image, trimap, iterations)
    return _keep_prompted(trimap, positive)


@functools.lru_cache(maxsize=1)
def _default_encoder() -> Encoder:
    from emvos.inference.settings import SHIPPED_MODEL
    from emvos.model.checkpoint import load_model

    return load_model(SHIPPED_MODEL).encoder.eval()  # the ImageNet weights stored in the shipped model


def click_similarity(image: np.ndarray, clicks: Sequence[Click], encoder: Encoder | None = None) -> np.ndarray:
    """Cosine similarity of every pixel's encoder features to those under each click.

    The features are the stride-8 and (upsampled) stride-16 maps, each normalised, concatenated.

    Args:
        image: ``(H, W, 3) uint8`` RGB frame.
        clicks: the clicks (their sign is not used here).
        encoder: see :func:`prompt_mask`.

    Returns:
        ``(len(clicks), H, W) float32`` similarities in ``[-1, 1]``.
    """
    import torch
    import torch.nn.functional as F

    encoder = _default_encoder() if encoder is None else encoder
    height, width = image.shape[:2]
    stride = encoder.feature_info.stride
    device = encoder.mean.device
    pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255
    pixels = F.pad(pixels, (0, -width % stride, 0, -height % stride), mode="replicate")
    with torch.inference_mode():
        features = encoder(pixels)
        fine = F.normalize(features.s8.float(), dim=1)
        coarse = F.normalize(F.interpolate(features.s16.float(), size=fine.shape[-2:], mode="bilinear"), dim=1)
        grid = F.normalize(torch.cat([fine, coarse], dim=1), dim=1)[0]  # (C, H/8, W/8)
        cell = pixels.shape[-1] // grid.shape[-1]
        picked = torch.stack([grid[:, int(c.y) // cell, int(c.x) // cell] for c in clicks])  # (K, C)
        scores = torch.einsum("kc,chw->khw", picked, grid)[None]
        scores = F.interpolate(scores, scale_factor=cell, mode="bilinear")[0, :, :height, :width]
    return scores.cpu().numpy()


def _similar_region(image: np.ndarray, clicks: Sequence[Click], encoder: Encoder | None) -> np.ndarray:
    """``(H, W) bool``: the probable object of clicks without a box (see the module's description)."""
    import cv2

    scores = click_similarity(image, clicks, encoder)
    positive = [i for i, click in enumerate(clicks) if click.positive]
    negative = [i for i, click in enumerate(clicks) if not click.positive]
    best = scores[positive].max(axis=0)
    window = SIMILARITY_WINDOW
    reference = min(
        float(np.median(best[max(0, int(c.y) - window) : int(c.y) + window + 1,
                             max(0, int(c.x) - window) : int(c.x) + window + 1]))
        for c in (clicks[i] for i in positive)
    )
    seed = best > SIMILARITY_FRACTION * reference
    if negative:
        seed &= best > scores[negative].max(axis=0)
    _, parts = cv2.connectedComponents(seed.astype(np.uint8))
    kept = {int(parts[int(clicks[i].y), int(clicks[i].x)]) for i in positive} - {0}
    return np.isin(parts, sorted(kept))


def _grab_cut(image: np.ndarray, trimap: np.ndarray, iterations: int) -> None:
    """Run GrabCut on ``trimap`` (``(H, W) uint8`` GC_* labels, updated in place) within the undecided
    pixels' box widened by a margin (the whole frame if that box holds no background to learn from)."""
    import cv2

    undecided = (trimap == cv2.GC_PR_FGD) | (trimap == cv2.GC_PR_BGD)
    if not undecided.any():
        return
    rows, cols = np.flatnonzero(undecided.any(axis=1)), np.flatnonzero(undecided.any(axis=0))
    margin = max(8, (rows[-1] - rows[0] + cols[-1] - cols[0]) // 8)
    y0, y1 = max(0, rows[0] - margin), min(trimap.shape[0], rows[-1] + 1 + margin)
    x0, x1 = max(0, cols[0] - margin), min(trimap.shape[1], cols[-1] + 1 + margin)
    for top, bottom, left, right in ((y0, y1, x0, x1), (0, trimap.shape[0], 0, trimap.shape[1])):
        crop = np.ascontiguousarray(trimap[top:bottom, left:right])
        object_like = (crop == cv2.GC_FGD) | (crop == cv2.GC_PR_FGD)
        if object_like.any() and not object_like.all():
            models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            bgr = np.ascontiguousarray(image[top:bottom, left:right, ::-1])
            cv2.grabCut(bgr, crop, None, *models, iterations, cv2.GC_INIT_WITH_MASK)
            trimap[top:bottom, left:right] = crop
            return


def _keep_prompted(trimap: np.ndarray, positive: Sequence[Click]) -> np.ndarray:
    """``(H, W) bool`` object from GrabCut's labels, without the stray blobs it leaves: the parts under
    a positive click, or (a box alone) the largest part and those at least a tenth of its area."""
    import cv2

    mask = ((trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)).astype(np.uint8)
    count, parts, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 2:
        return mask.astype(bool)
    if positive:
        keep = {int(parts[int(c.y), int(c.x)]) for c in positive} - {0}
    else:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = {int(i) + 1 for i in np.flatnonzero(areas >= areas.max() / 10)}
    return np.isin(parts, sorted(keep))


def next_click(truth: np.ndarray, predicted: np.ndarray | None) -> Click:
    """The next click of the usual interactive-segmentation protocol, for evaluating prompts.

    The click goes to the error pixel farthest from the error's boundary: inside the missed part
    of the object (a positive click) or inside the false object (a negative one).

    Args:
        truth: ``(H, W) bool`` true object.
        predicted: ``(H, W) bool`` current mask, or ``None`` before the first click.

    Returns:
        The click.
    """
    import cv2

    predicted = np.zeros_like(truth) if predicted is None else predicted
    missed, extra = truth & ~predicted, predicted & ~truth
    best: tuple[float, int, int, bool] = (-1.0, 0, 0, True)
    for error, positive in ((missed, True), (extra, False)):
        if not error.any():
            continue
        padded = np.pad(error, 1).astype(np.uint8)  # the frame's border counts as a boundary
        distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        row, col = np.unravel_index(int(distance.argmax()), distance.shape)
        if distance[row, col] > best[0]:
            best = (float(distance[row, col]), int(col), int(row), positive)
    _, x, y, positive = best
    return Click(x, y, positive)

"""DAVIS region similarity (J), boundary accuracy (F) and their per-object statistics.

The numbers are those of the official DAVIS evaluation toolkit (``davis2017-evaluation``), bit for
bit, computed with vectorised numpy instead of per-frame OpenCV/scikit-image calls:

* **J** is the intersection over union of a predicted and a ground-truth mask; a frame where both
  are empty scores 1.
* **F** is the F-measure of boundary precision and recall. Boundaries are the toolkit's
  ``seg2bmap`` maps (one pixel wide, offset half a pixel towards the origin); a boundary pixel is
  matched when a boundary pixel of the other mask lies within a disk of radius
  ``ceil(0.008 * image diagonal)`` pixels (the disk of ``skimage.morphology.disk``: every integer
  offset with ``dy**2 + dx**2 <= r**2``). An empty prediction against a non-empty ground truth has
  precision 1 and recall 0 (F = 0), the reverse has precision 0 and recall 1 (F = 0), and two empty
  masks score F = 1.
* Optional void masks are excluded as the toolkit's ``db_eval_iou``/``f_measure`` exclude them:
  void pixels count in neither intersection nor union, and both masks are cleared there before
  their boundaries are taken. (The toolkit's semi-supervised evaluation itself passes no void mask;
  see :mod:`emvos.eval.davis`.)
* The statistics per object are the toolkit's ``db_statistics``: mean, recall (fraction of frames
  scoring above 0.5) and decay (mean of the first quarter of the frames minus mean of the last
  quarter), including its quirks, documented on :func:`object_statistics`.

All mask arguments are boolean-like arrays of shape ``(..., H, W)``: any number of leading batch
dimensions (frames, objects) followed by the image height and width. Every function is vectorised
over the batch dimensions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: The toolkit's boundary tolerance, as a fraction of the image diagonal.
BOUNDARY_THRESHOLD = 0.008

ArrayLike = npt.ArrayLike
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Statistics:
    """Summary of one measure (J or F) over the frames of one object, or averaged over objects.

    Attributes:
        mean: mean of the per-frame values.
        recall: fraction of frames whose value is above 0.5.
        decay: mean over the first quarter of the frames minus mean over the last quarter.
    """

    mean: float
    recall: float
    decay: float


def _as_masks(name: str, array: ArrayLike) -> BoolArray:
    """``array`` as a boolean array of shape ``(..., H, W)``; nonzero means inside the mask."""
    masks = np.asarray(array)
    if masks.ndim < 2:
        raise ValueError(f"{name} must have shape (..., H, W), got shape {masks.shape}")
    return masks if masks.dtype == np.bool_ else masks != 0


def _as_mask_pair(
    gt: ArrayLike, pred: ArrayLike, void: ArrayLike | None
) -> tuple[BoolArray, BoolArray, BoolArray | None]:
    """Validated boolean ``(gt, pred, void)`` of one shape ``(..., H, W)``."""
    gt_masks = _as_masks("gt", gt)
    pred_masks = _as_masks("pred", pred)
    if gt_masks.shape != pred_masks.shape:
        raise ValueError(f"gt and pred shapes differ: {gt_masks.shape} vs {pred_masks.shape}")
    void_masks = None
    if void is not None:
        void_masks = _as_masks("void", void)
        if void_masks.shape != gt_masks.shape:
            raise ValueError(f"void shape {void_masks.shape} differs from the masks' {gt_masks.shape}")
    return gt_masks, pred_masks, void_masks


def region_similarity(gt: ArrayLike, pred: ArrayLike, void: ArrayLike | None = None) -> FloatArray:
    """Region similarity J: intersection over union of ``gt`` and ``pred`` per frame.

    Args:
        gt: ground-truth masks, shape ``(..., H, W)``; nonzero is the object.
        pred: predicted masks, shape ``(..., H, W)``.
        void: optional pixels to ignore, shape ``(..., H, W)``.

    Returns:
        J per frame, float64 of shape ``(...)`` (0-d for a single ``(H, W)`` frame); 1 where the
        union is empty.
    """
    gt_masks, pred_masks, void_masks = _as_mask_pair(gt, pred, void)
    intersection = gt_masks & pred_masks
    union = gt_masks | pred_masks
    if void_masks is not None:
        intersection &= ~void_masks
        union &= ~void_masks
    n_intersection = np.count_nonzero(intersection, axis=(-2, -1))
    n_union = np.count_nonzero(union, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.true_divide(n_intersection, n_union)
    return np.asarray(np.where(n_union == 0, 1.0, jaccard), dtype=np.float64)


def boundary_map(masks: ArrayLike) -> BoolArray:
    """One-pixel-wide boundaries of ``masks``, exactly as the toolkit's ``seg2bmap``.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour
    (pixels beyond the image count as background, except that the last row compares only with the
    right neighbour, the last column only with the lower one, and the bottom-right pixel is never a
    boundary).

    Args:
        masks: masks of shape ``(..., H, W)``; nonzero is inside.

    Returns:
        Boolean boundary maps of shape ``(..., H, W)``.
    """
    inside = _as_masks("masks", masks)
    boundary = np.zeros_like(inside)
    here = inside[..., :-1, :-1]
    boundary[..., :-1, :-1] = (
        (here ^ inside[..., :-1, 1:]) | (here ^ inside[..., 1:, :-1]) | (here ^ inside[..., 1:, 1:])
    )
    boundary[..., -1, :-1] = inside[..., -1, :-1] ^ inside[..., -1, 1:]
    boundary[..., :-1, -1] = inside[..., :-1, -1] ^ inside[..., 1:, -1]
    return boundary


def disk(radius: int) -> BoolArray:
    """The disk structuring element of ``skimage.morphology.disk(radius)``.

    Args:
        radius: non-negative integer radius in pixels.

    Returns:
        Boolean array of shape ``(2 * radius + 1, 2 * radius + 1)``, true where
        ``dy**2 + dx**2 <= radius**2`` for the offsets ``dy, dx`` from the centre.
    """
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def _dilate_rows(masks: BoolArray, half_widths: set[int]) -> dict[int, BoolArray]:
    """Dilations of ``masks`` (..., H, W) along W by segments ``[-w, w]``, for each ``w``.

    Uses a doubling scheme: windows of length 1, 2, 4, ... are built once on the zero-padded masks,
    and a window of any length ``n`` is the union of two overlapping windows of the largest power
    of two not above ``n``.
    """
    width = masks.shape[-1]
    pad = max(half_widths)
    padded = np.zeros((*masks.shape[:-1], width + 2 * pad), dtype=np.bool_)
    padded[..., pad : pad + width] = masks
    # windows[n][..., x] is the union of padded[..., x : x + n]
    windows = {1: padded}
    length = 1
    while 2 * length <= 2 * pad + 1:
        previous = windows[length]
        windows[2 * length] = previous[..., :-length] | previous[..., length:]
        length *= 2
    dilated = {}
    for w in half_widths:
        span = 2 * w + 1
        power = 1 << (span.bit_length() - 1)
        start = pad - w
        window = windows[power]
        dilated[w] = (
            window[..., start : start + width]
            | window[..., start + span - power : start + span - power + width]
        )
    return dilated


def dilate_disk(masks: ArrayLike, radius: int) -> BoolArray:
    """Binary dilation of ``masks`` by :func:`disk` ``(radius)``; pixels beyond the image are empty.

    Equal to ``cv2.dilate(masks, disk(radius))`` as the toolkit calls it. The disk is decomposed into
    its rows: each row is a horizontal segment, so the dilation is the union over row offsets
    ``dy`` of the masks dilated horizontally by that row's half-width and shifted by ``dy``.

    Args:
        masks: masks of shape ``(..., H, W)``.
        radius: non-negative integer radius in pixels.

    Returns:
        Boolean dilated masks of shape ``(..., H, W)``.
    """
    inside = _as_masks("masks", masks)
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    height = inside.shape[-2]
    half_widths = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    rows = _dilate_rows(inside, set(half_widths))
    dilated = rows[half_widths[0]].copy()
    for dy in range(1, min(radius, height - 1) + 1):
        row = rows[half_widths[dy]]
        dilated[..., dy:, :] |= row[..., :-dy, :]
        dilated[..., :-dy, :] |= row[..., dy:, :]
    return dilated


def boundary_radius(height: int, width: int, bound_th: float = BOUNDARY_THRESHOLD) -> int:
    """The toolkit's boundary tolerance in pixels for an image of ``height`` x ``width``.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        bound_th: a fraction of the image diagonal when below 1, else a whole number of pixels.

    Returns:
        ``ceil(bound_th * sqrt(height**2 + width**2))`` for ``bound_th < 1``, else ``bound_th``
        (e.g. 8 for 854x480 frames, 4 for 432x240).
    """
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"a tolerance of 1 pixel or more must be a whole number, got {bound_th}")
        return int(bound_th)
    if bound_th <= 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    return math.ceil(bound_th * math.sqrt(float(height * height + width * width)))


def _content_window(masks: BoolArray, margin: int) -> tuple[slice, slice] | None:
    """Rows and columns (H, W) spanning every nonzero pixel of ``masks`` (..., H, W), plus ``margin``.

    Returns ``None`` when ``masks`` is empty everywhere.
    """
    rows = np.flatnonzero(masks.any(axis=tuple(range(masks.ndim - 2)) + (-1,)))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(masks.any(axis=tuple(range(masks.ndim - 1))))
    height, width = masks.shape[-2:]
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, height)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, width)),
    )


def boundary_f_measure(
    gt: ArrayLike,
    pred: ArrayLike,
    void: ArrayLike | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> FloatArray:
    """Boundary accuracy F per frame, exactly as the toolkit's ``db_eval_boundary``.

    The work is restricted to the smallest window that holds both masks in every frame (plus one
    pixel, so that the boundary maps inside it equal those of the full frame); the tolerance is
    always that of the full frame.

    Args:
        gt: ground-truth masks, shape ``(..., H, W)``; nonzero is the object.
        pred: predicted masks, shape ``(..., H, W)``.
        void: optional pixels to ignore, shape ``(..., H, W)``.
        bound_th: boundary tolerance (see :func:`boundary_radius`).

    Returns:
        F per frame, float64 of shape ``(...)`` (0-d for a single ``(H, W)`` frame).
    """
    gt_masks, pred_masks, void_masks = _as_mask_pair(gt, pred, void)
    if void_masks is not None:
        gt_masks = gt_masks & ~void_masks
        pred_masks = pred_masks & ~void_masks
    height, width = gt_masks.shape[-2:]
    radius = boundary_radius(height, width, bound_th)
    batch_shape = gt_masks.shape[:-2]
    gt_masks = gt_masks.reshape(-1, height, width)
    pred_masks = pred_masks.reshape(-1, height, width)

    window = _content_window(gt_masks | pred_masks, margin=1)
    if window is None:
        return np.ones(batch_shape, dtype=np.float64)
    gt_boundary = boundary_map(gt_masks[:, window[0], window[1]])
    pred_boundary = boundary_map(pred_masks[:, window[0], window[1]])

    n_gt = np.count_nonzero(gt_boundary, axis=(-2, -1))
    n_pred = np.count_nonzero(pred_boundary, axis=(-2, -1))
    pred_matched = np.count_nonzero(pred_boundary & dilate_disk(gt_boundary, radius), axis=(-2, -1))
    gt_matched = np.count_nonzero(gt_boundary & dilate_disk(pred_boundary, radius), axis=(-2, -1))

    with np.errstate(divide="ignore", invalid="ignore"):
        # An empty boundary has precision (prediction) or recall (ground truth) 1; the matched count
        # against an empty boundary is 0, which gives the toolkit's (1, 0) and (0, 1) cases.
        precision = np.where(n_pred > 0, np.true_divide(pred_matched, n_pred), 1.0)
        recall = np.where(n_gt > 0, np.true_divide(gt_matched, n_gt), 1.0)
        f_measure = np.where(precision + recall == 0, 0.0, 2 * precision * recall / (precision + recall))
    return np.asarray(f_measure, dtype=np.float64).reshape(batch_shape)


def object_statistics(per_frame: ArrayLike) -> Statistics:
    """Mean, recall and decay of one object's per-frame J or F, exactly as ``db_statistics``.

    NaN values are left out of the mean and the recall. The decay splits the frames into four
    bins at indices ``round(linspace(1, n, 5) + 1e-10) - 1`` and subtracts the mean of the last bin
    from the mean of the first; the bins include both end indices, so neighbouring bins share a
    frame. Quirks of the toolkit reproduced here:

    * the bin indices are stored as ``uint8``, so they wrap modulo 256: for objects scored on more
      than 256 frames the last bins are taken at wrapped indices (often empty, giving a NaN decay);
    * the end of each bin (index + 1) is computed in ``uint8`` too, so an end index of 255 becomes
      0 and that bin is empty;
    * an object scored on no frame has NaN for all three numbers.

    Args:
        per_frame: per-frame values of one object, shape ``(T,)``.

    Returns:
        The object's :class:`Statistics`.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"per_frame must have shape (T,), got {values.shape}")
    if values.size == 0:
        return Statistics(math.nan, math.nan, math.nan)
    bounds = (np.round(np.linspace(1, values.size, 5) + 1e-10) - 1).astype(np.int64) % 256
    bins = [values[bounds[i] : (bounds[i + 1] + 1) % 256] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return Statistics(float(mean), float(recall), float(decay))

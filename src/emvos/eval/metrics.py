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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: The toolkit's boundary tolerance, as a fraction of the image diagonal.
BOUNDARY_THRESHOLD = 0.008

#: Pixels (frames x padded window area) that :func:`region_and_boundary` handles at once, packed
#: one bit per pixel: few enough for the temporaries of a chunk (128 KiB each) to stay in the CPU
#: caches, enough to keep numpy's per-call overhead small.
_CHUNK_PIXELS = 1 << 20

ArrayLike = npt.ArrayLike
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
CountArray = npt.NDArray[np.int64]
WordArray = npt.NDArray[np.uint64]

#: Bits per word of the packed frames.
_WORD = 64


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


def _frames_of(masks: BoolArray) -> tuple[BoolArray, tuple[int, ...]]:
    """``masks`` (..., H, W) as (N, H, W) frames, and the batch shape (...) to restore."""
    return masks.reshape(-1, *masks.shape[-2:]), masks.shape[:-2]


def _counts_per_frame(frames: BoolArray) -> CountArray:
    """Number of true pixels in each frame of ``frames`` (N, ...): shape (N,).

    A loop over frames: ``count_nonzero`` over a whole contiguous frame is several times faster
    than the same count with an ``axis``.
    """
    return np.array([np.count_nonzero(frame) for frame in frames], dtype=np.int64)


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
    if void_masks is not None:
        gt_masks = gt_masks & ~void_masks
        pred_masks = pred_masks & ~void_masks
    gt_frames, batch_shape = _frames_of(gt_masks)
    pred_frames = pred_masks.reshape(gt_frames.shape)
    n_both = _counts_per_frame(gt_frames & pred_frames)
    n_union = _counts_per_frame(gt_frames) + _counts_per_frame(pred_frames) - n_both
    return _jaccard(n_both, n_union).reshape(batch_shape)


def _jaccard(n_both: CountArray, n_union: CountArray) -> FloatArray:
    """J from intersection and union pixel counts; 1 where the union is empty."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_union == 0, 1.0, np.true_divide(n_both, n_union))


def _popcount_per_frame(words: WordArray, n_frames: int) -> CountArray:
    """Number of set bits in each of ``n_frames`` equal parts of the flat ``words``: shape (n,)."""
    per_frame = words.reshape(n_frames, -1)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(per_frame).sum(axis=1, dtype=np.int64)
    return _BYTE_POPCOUNT[per_frame.view(np.uint8)].sum(axis=1, dtype=np.int64)


#: Set bits of every byte value, for numpy versions without ``bitwise_count``.
_BYTE_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


class _BitFrames:
    """Frames of shape (n, h, w) packed one bit per pixel into one flat array of 64-bit words.

    Each frame is stored with ``border`` empty rows above and below it, and each row starts with
    at least ``border`` empty bits (a whole number of words) and ends with at least ``border``
    empty bits, padded to a whole number of words. Pixel ``(t, y, x)`` is bit
    ``p = (t * rows + border + y) * row_bits + left + x`` of the flat array: bit ``p % 64`` of word
    ``p // 64``. A shift by one pixel sideways is then a shift by 1 of ``p``, and a shift by one
    row a shift by ``row_bits`` (a whole number of words); while every shift stays within
    ``border`` pixels, the values computed for the frames' pixels never read another row or frame.

    Attributes:
        words: the packed frames (border bits clear), shape (n * rows * row_bits / 64,).
        row_bits: bits per stored row.
        inside: per-frame mask of the frames' own pixels, shape (rows * row_bits / 64,).
    """

    def __init__(self, frames: BoolArray, border: int) -> None:
        self.n_frames, self.height, self.width = frames.shape
        self.border = border
        left_words = -(-border // _WORD)
        self.left = left_words * _WORD
        self.rows = self.height + 2 * border
        row_words = -(-(self.left + self.width + border) // _WORD)
        self.row_bits = row_words * _WORD
        packed = np.packbits(frames, axis=-1, bitorder="little")
        data = np.zeros((self.n_frames, self.rows, row_words * 8), dtype=np.uint8)
        data[:, border : border + self.height, left_words * 8 : left_words * 8 + packed.shape[-1]] = packed
        self.words: WordArray = data.view("<u8").reshape(-1)
        row = np.zeros(self.row_bits, dtype=np.bool_)
        row[self.left : self.left + self.width] = True
        inside = np.zeros((self.rows, row_words), dtype="<u8")
        inside[border : border + self.height] = np.packbits(row, bitorder="little").view("<u8")
        self.inside: WordArray = inside.reshape(-1)

    def counts(self, words: WordArray) -> CountArray:
        """Set bits of each frame of ``words`` (in this layout): shape (n,)."""
        return _popcount_per_frame(words, self.n_frames)

    def clear_border(self, words: WordArray) -> WordArray:
        """``words`` (in this layout) with every bit outside the frames' pixels cleared, in place."""
        words.reshape(self.n_frames, -1)[:] &= self.inside
        return words

    def unpack(self, words: WordArray) -> BoolArray:
        """The (n, h, w) boolean frames of ``words`` (in this layout)."""
        data = words.view(np.uint8).reshape(self.n_frames, self.rows, self.row_bits // 8)
        bits = np.unpackbits(data, axis=-1, bitorder="little").view(np.bool_)
        return bits[:, self.border : self.border + self.height, self.left : self.left + self.width]

    def replicate_last_row_and_column(self) -> None:
        """Copy each frame's last row into the border row below it, then its last column likewise.

        With these copies, a pixel of the last row differs from its lower and lower-right
        neighbours exactly when its right neighbour differs, and a pixel of the last column from
        its right and lower-right neighbours exactly when its lower neighbour differs: the
        toolkit's special cases at the image's edge become its general rule (needs ``border >= 1``).
        """
        rows = self.words.reshape(self.n_frames, self.rows, -1)
        last = self.border + self.height - 1
        rows[:, last + 1] = rows[:, last]  # border bits of a row are clear, so whole rows can be copied
        source_word, source_bit = divmod(self.left + self.width - 1, _WORD)
        target_word, target_bit = divmod(self.left + self.width, _WORD)
        frame_rows = slice(self.border, last + 2)
        rows[:, frame_rows, target_word] |= ((rows[:, frame_rows, source_word] >> source_bit) & 1) << target_bit


def _shift(words: WordArray, pixels: int) -> WordArray:
    """``out[p] = words[p + pixels]`` for every bit index ``p`` (clear where that is outside)."""
    out = np.zeros_like(words)
    size = words.size
    whole, part = divmod(abs(pixels), _WORD)
    if whole >= size:
        return out
    if pixels >= 0:
        out[: size - whole] = words[whole:] >> part
        if part:
            out[: size - whole - 1] |= words[whole + 1 :] << (_WORD - part)
    else:
        out[whole:] = words[: size - whole] << part
        if part:
            out[whole + 1 :] |= words[: size - whole - 1] >> (_WORD - part)
    return out


def _boundary_bits(frames: _BitFrames) -> WordArray:
    """Boundary maps (``seg2bmap``) of ``frames``, whose last rows and columns are replicated."""
    here = frames.words
    below = frames.row_bits
    boundary = (here ^ _shift(here, 1)) | (here ^ _shift(here, below)) | (here ^ _shift(here, below + 1))
    return frames.clear_border(boundary)


def _dilate_bits(frames: _BitFrames, words: WordArray, radius: int) -> WordArray:
    """Dilation by :func:`disk` ``(radius)`` of ``words`` laid out as ``frames`` (border clear).

    Exact for the frames' pixels when ``radius <= frames.border``; border bits of the result are
    meaningless. The disk is the union of its rows, each a horizontal segment ``[-w, w]`` with
    ``w = isqrt(radius**2 - dy**2)`` for row offset ``dy``: the masks are dilated along rows by each
    distinct ``w``, then shifted by ``dy`` rows and united. Row dilations use a doubling scheme:
    windows of length 1, 2, 4, ... are built once, and a window of any length ``n`` is the union of
    two overlapping windows of the largest power of two not above ``n``.
    """
    half_widths = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    # windows[n] has bit p set when any of bits p .. p + n - 1 of words is
    windows = {1: words}
    length = 1
    while 2 * length <= 2 * radius + 1:
        windows[2 * length] = windows[length] | _shift(windows[length], length)
        length *= 2
    row_dilated = {}
    for w in set(half_widths):
        power = 1 << ((2 * w + 1).bit_length() - 1)
        window = windows[power]
        # bits p - w .. p + w: the windows starting at p - w and at p + w + 1 - power
        row_dilated[w] = _shift(window, -w) | _shift(window, -(power - w - 1))
    result = row_dilated[half_widths[0]].copy()
    row_words = frames.row_bits // _WORD
    for dy in range(1, radius + 1):
        shift = dy * row_words
        if shift >= result.size:
            break
        rows = row_dilated[half_widths[dy]]
        result[shift:] |= rows[:-shift]
        result[:-shift] |= rows[shift:]
    return result


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
    frames, batch_shape = _frames_of(_as_masks("masks", masks))
    packed = _BitFrames(frames, border=1)
    packed.replicate_last_row_and_column()
    return packed.unpack(_boundary_bits(packed)).reshape(*batch_shape, *frames.shape[1:])


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


def dilate_disk(masks: ArrayLike, radius: int) -> BoolArray:
    """Binary dilation of ``masks`` by :func:`disk` ``(radius)``; pixels beyond the image are empty.

    Equal to ``cv2.dilate(masks, disk(radius))`` as the toolkit calls it.

    Args:
        masks: masks of shape ``(..., H, W)``.
        radius: non-negative integer radius in pixels.

    Returns:
        Boolean dilated masks of shape ``(..., H, W)``.
    """
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    frames, batch_shape = _frames_of(_as_masks("masks", masks))
    packed = _BitFrames(frames, border=max(radius, 1))
    dilated = _dilate_bits(packed, packed.words, radius)
    return packed.unpack(dilated).reshape(*batch_shape, *frames.shape[1:])


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


def _frame_windows(masks: BoolArray, margin: int, border: int) -> Iterator[tuple[slice, slice, slice]]:
    """Chunks of consecutive frames of ``masks`` (N, H, W) and the window holding their content.

    Yields ``(frames, rows, columns)`` slices: the frames of the chunk, and the rows and columns of
    the smallest window that holds every nonzero pixel of those frames, grown by ``margin`` on each
    side (clipped to the image). Frames join a chunk while its frames times its window area, the
    window grown by ``border`` more pixels, stay within :data:`_CHUNK_PIXELS`; frames without any
    nonzero pixel are skipped.
    """
    n_frames, height, width = masks.shape
    rows_used: BoolArray = np.any(masks, axis=2)
    cols_used: BoolArray = np.any(masks, axis=1)
    occupied: BoolArray = np.any(rows_used, axis=1)
    top = np.maximum(rows_used.argmax(axis=1) - margin, 0)
    bottom = np.minimum(height - rows_used[:, ::-1].argmax(axis=1) + margin, height)
    left = np.maximum(cols_used.argmax(axis=1) - margin, 0)
    right = np.minimum(width - cols_used[:, ::-1].argmax(axis=1) + margin, width)

    start: int | None = None
    box = (0, 0, 0, 0)
    for index in range(n_frames + 1):
        if start is not None and index < n_frames and occupied[index]:
            grown = (
                min(box[0], int(top[index])),
                max(box[1], int(bottom[index])),
                min(box[2], int(left[index])),
                max(box[3], int(right[index])),
            )
            area = (grown[1] - grown[0] + 2 * border) * (grown[3] - grown[2] + 2 * border)
            if (index + 1 - start) * area <= _CHUNK_PIXELS:
                box = grown
                continue
        if start is not None:
            yield slice(start, index), slice(box[0], box[1]), slice(box[2], box[3])
            start = None
        if index < n_frames and occupied[index]:
            start = index
            box = (int(top[index]), int(bottom[index]), int(left[index]), int(right[index]))


def region_and_boundary(
    gt: ArrayLike,
    pred: ArrayLike,
    void: ArrayLike | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> tuple[FloatArray, FloatArray]:
    """J and F per frame in one pass: :func:`region_similarity` and :func:`boundary_f_measure`.

    Frames are processed in chunks of consecutive frames, each restricted to the smallest window
    that holds both masks in those frames, plus one pixel so that the boundary maps inside it equal
    those of the full frame; the boundary tolerance is always that of the full frame.

    Args:
        gt: ground-truth masks, shape ``(..., H, W)``; nonzero is the object.
        pred: predicted masks, shape ``(..., H, W)``.
        void: optional pixels to ignore, shape ``(..., H, W)``.
        bound_th: boundary tolerance (see :func:`boundary_radius`).

    Returns:
        ``(J, F)``, each float64 of shape ``(...)`` (0-d for a single ``(H, W)`` frame).
    """
    gt_masks, pred_masks, void_masks = _as_mask_pair(gt, pred, void)
    if void_masks is not None:
        gt_masks = gt_masks & ~void_masks
        pred_masks = pred_masks & ~void_masks
    height, width = gt_masks.shape[-2:]
    radius = boundary_radius(height, width, bound_th)
    gt_frames, batch_shape = _frames_of(gt_masks)
    pred_frames = pred_masks.reshape(gt_frames.shape)

    # Pixel counts per frame, all left at 0 in frames where both masks are empty: mask areas and
    # intersection; boundary lengths, and boundary pixels within reach of the other boundary.
    n_gt, n_pred, n_both, n_gt_boundary, n_pred_boundary, gt_matched, pred_matched = np.zeros(
        (7, gt_frames.shape[0]), dtype=np.int64
    )
    border = max(radius, 1)
    for frames, rows, cols in _frame_windows(gt_frames | pred_frames, margin=1, border=border):
        gt_bits = _BitFrames(gt_frames[frames, rows, cols], border)
        pred_bits = _BitFrames(pred_frames[frames, rows, cols], border)
        n_gt[frames] = gt_bits.counts(gt_bits.words)
        n_pred[frames] = pred_bits.counts(pred_bits.words)
        n_both[frames] = gt_bits.counts(gt_bits.words & pred_bits.words)
        gt_bits.replicate_last_row_and_column()
        pred_bits.replicate_last_row_and_column()
        gt_boundary = _boundary_bits(gt_bits)
        pred_boundary = _boundary_bits(pred_bits)
        n_gt_boundary[frames] = gt_bits.counts(gt_boundary)
        n_pred_boundary[frames] = pred_bits.counts(pred_boundary)
        pred_matched[frames] = pred_bits.counts(pred_boundary & _dilate_bits(gt_bits, gt_boundary, radius))
        gt_matched[frames] = gt_bits.counts(gt_boundary & _dilate_bits(pred_bits, pred_boundary, radius))

    with np.errstate(divide="ignore", invalid="ignore"):
        # An empty boundary has precision (prediction) or recall (ground truth) 1; the matched count
        # against an empty boundary is 0, which gives the toolkit's (1, 0) and (0, 1) cases.
        precision = np.where(n_pred_boundary > 0, np.true_divide(pred_matched, n_pred_boundary), 1.0)
        recall = np.where(n_gt_boundary > 0, np.true_divide(gt_matched, n_gt_boundary), 1.0)
        f_measure = np.where(precision + recall == 0, 0.0, 2 * precision * recall / (precision + recall))
    jaccard = _jaccard(n_both, n_gt + n_pred - n_both)
    return jaccard.reshape(batch_shape), f_measure.reshape(batch_shape)


def boundary_f_measure(
    gt: ArrayLike,
    pred: ArrayLike,
    void: ArrayLike | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> FloatArray:
    """Boundary accuracy F per frame, exactly as the toolkit's ``db_eval_boundary``.

    Args:
        gt: ground-truth masks, shape ``(..., H, W)``; nonzero is the object.
        pred: predicted masks, shape ``(..., H, W)``.
        void: optional pixels to ignore, shape ``(..., H, W)``.
        bound_th: boundary tolerance (see :func:`boundary_radius`).

    Returns:
        F per frame, float64 of shape ``(...)`` (0-d for a single ``(H, W)`` frame).
    """
    return region_and_boundary(gt, pred, void, bound_th)[1]


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

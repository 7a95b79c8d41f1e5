"""J, F and their statistics (emvos.eval.metrics) on hand-computed cases and against naive references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emvos.eval import metrics
from emvos.eval.metrics import (
    Statistics,
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    dilate_disk,
    disk,
    object_statistics,
    region_and_boundary,
    region_similarity,
)


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def vertical_bar(column: int, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[:, column] = True
    return mask


# ----------------------------------------------------------------------------------------------- J


def test_region_similarity_identical_disjoint_and_empty() -> None:
    a = square((8, 8), 1, 1, 3)
    b = square((8, 8), 5, 5, 2)
    empty = np.zeros((8, 8), dtype=bool)
    assert region_similarity(a, a) == 1.0
    assert region_similarity(a, b) == 0.0
    assert region_similarity(empty, empty) == 1.0
    assert region_similarity(a, empty) == 0.0
    assert region_similarity(empty, a) == 0.0


def test_region_similarity_partial_overlap_by_hand() -> None:
    gt = square((6, 6), 0, 0, 2)  # 4 pixels
    pred = square((6, 6), 0, 1, 2)  # shifted one column: 2 shared, union 6
    assert region_similarity(gt, pred) == 2 / 6


def test_region_similarity_ignores_void_pixels() -> None:
    gt = square((6, 6), 0, 0, 2)
    pred = square((6, 6), 0, 1, 2)
    void = np.zeros((6, 6), dtype=bool)
    void[:, 2] = True  # hides the prediction's extra column: 2 shared, union 4
    assert region_similarity(gt, pred, void) == 2 / 4
    void[:, :3] = True  # hides everything: empty union scores 1
    assert region_similarity(gt, pred, void) == 1.0


def test_region_similarity_is_vectorised_over_leading_dimensions() -> None:
    gt = np.stack([square((6, 6), 0, 0, 2), np.zeros((6, 6), bool), square((6, 6), 3, 3, 2)])
    pred = np.stack([square((6, 6), 0, 1, 2), np.zeros((6, 6), bool), np.zeros((6, 6), bool)])
    j = region_similarity(gt[None], pred[None])
    assert j.shape == (1, 3)
    assert j.dtype == np.float64
    np.testing.assert_array_equal(j[0], [2 / 6, 1.0, 0.0])


def test_region_similarity_accepts_integer_masks_and_rejects_mismatched_shapes() -> None:
    gt = square((6, 6), 0, 0, 2).astype(np.uint8) * 7
    assert region_similarity(gt, gt > 0) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        region_similarity(np.zeros((4, 4)), np.zeros((4, 5)))


# -------------------------------------------------------------------------------------- boundaries


def test_boundary_map_of_a_square_by_hand() -> None:
    mask = square((4, 4), 1, 1, 2)
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_map_edge_rules() -> None:
    # A full mask has no boundary: the image edge is not a boundary.
    assert not boundary_map(np.ones((5, 7), bool)).any()
    # Only the last row set: the row above is the boundary; the last row compares only with its
    # right neighbour (no boundary), and the bottom-right pixel never is one.
    mask = np.zeros((4, 5), bool)
    mask[-1] = True
    expected = np.zeros((4, 5), bool)
    expected[-2] = True
    np.testing.assert_array_equal(boundary_map(mask), expected)
    # Only the last column set: the column to its left is the boundary.
    mask = np.zeros((4, 5), bool)
    mask[:, -1] = True
    expected = np.zeros((4, 5), bool)
    expected[:, -2] = True
    np.testing.assert_array_equal(boundary_map(mask), expected)
    # A single pixel at the bottom-right corner: only its upper-left neighbours see it.
    mask = np.zeros((3, 3), bool)
    mask[2, 2] = True
    expected = np.zeros((3, 3), bool)
    expected[1, 1] = expected[1, 2] = expected[2, 1] = True
    np.testing.assert_array_equal(boundary_map(mask), expected)


def _naive_boundary(mask: np.ndarray) -> np.ndarray:
    """seg2bmap written pixel by pixel from its definition."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    for y in range(height):
        for x in range(width):
            right = mask[y, x + 1] if x + 1 < width else False
            down = mask[y + 1, x] if y + 1 < height else False
            diagonal = mask[y + 1, x + 1] if x + 1 < width and y + 1 < height else False
            if y == height - 1 and x == width - 1:
                out[y, x] = False
            elif y == height - 1:
                out[y, x] = mask[y, x] != right
            elif x == width - 1:
                out[y, x] = mask[y, x] != down
            else:
                out[y, x] = (mask[y, x] != right) or (mask[y, x] != down) or (mask[y, x] != diagonal)
    return out


def test_boundary_map_matches_its_definition_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for height, width in [(1, 1), (1, 6), (6, 1), (7, 9), (12, 5)]:
        masks = rng.random((3, height, width)) < 0.5
        got = boundary_map(masks)
        assert got.shape == masks.shape
        for frame, mask in zip(got, masks, strict=True):
            np.testing.assert_array_equal(frame, _naive_boundary(mask))


def test_disk_matches_skimage_definition() -> None:
    np.testing.assert_array_equal(disk(0), [[True]])
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert disk(2).sum() == 13  # (+-2, +-1) lie outside radius 2
    assert disk(8).sum() == 197
    assert disk(8).shape == (17, 17)
    with pytest.raises(ValueError):
        disk(-1)


def _naive_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation as the union of the mask shifted by every offset of the disk (zero outside)."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy, dx in np.argwhere(disk(radius)) - radius:
        out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] |= mask[
            max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
        ]
    return out


def test_dilate_disk_of_a_pixel_is_the_disk_clipped_at_the_border() -> None:
    mask = np.zeros((11, 11), bool)
    mask[5, 5] = True
    expected = np.zeros((11, 11), bool)
    expected[1:10, 1:10] = disk(4)
    np.testing.assert_array_equal(dilate_disk(mask, 4), expected)
    corner = np.zeros((11, 11), bool)
    corner[0, 0] = True
    np.testing.assert_array_equal(dilate_disk(corner, 4)[:5, :5], disk(4)[4:, 4:])


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 7, 8, 9])
def test_dilate_disk_matches_naive_union_of_shifts(radius: int) -> None:
    rng = np.random.default_rng(radius)
    masks = rng.random((2, 23, 31)) < 0.03
    got = dilate_disk(masks, radius)
    for frame, mask in zip(got, masks, strict=True):
        np.testing.assert_array_equal(frame, _naive_dilate(mask, radius))


def test_boundary_radius() -> None:
    assert boundary_radius(480, 854) == 8
    assert boundary_radius(240, 432) == 4
    assert boundary_radius(10, 10) == 1
    assert boundary_radius(480, 854, bound_th=3) == 3
    with pytest.raises(ValueError):
        boundary_radius(480, 854, bound_th=2.5)


# ----------------------------------------------------------------------------------------------- F


def test_f_measure_identical_empty_and_one_sided() -> None:
    a = square((10, 10), 2, 2, 4)
    empty = np.zeros((10, 10), bool)
    assert boundary_f_measure(a, a) == 1.0
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(a, empty) == 0.0  # precision 1, recall 0
    assert boundary_f_measure(empty, a) == 0.0  # precision 0, recall 1


def test_f_measure_one_pixel_shifts_by_hand() -> None:
    # 10x10 frames: tolerance ceil(0.008 * 14.1) = 1 pixel. A bar in column c has its boundary in
    # columns c - 1 and c (offset towards the origin), over all 10 rows.
    gt = vertical_bar(2)
    assert boundary_f_measure(gt, vertical_bar(3)) == 1.0  # every boundary pixel 1 px from the other
    # column 4: prediction boundary columns 3 (matched) and 4 (2 px away); ground-truth boundary
    # columns 1 (2 px away) and 2 (matched): precision = recall = 1/2.
    assert boundary_f_measure(gt, vertical_bar(4)) == 0.5
    assert boundary_f_measure(gt, vertical_bar(5)) == 0.0
    # With a 2-pixel tolerance the column-4 bar is within reach everywhere.
    assert boundary_f_measure(gt, vertical_bar(4), bound_th=2) == 1.0


def test_f_measure_ignores_void_pixels() -> None:
    gt = vertical_bar(2)
    pred = vertical_bar(2) | square((10, 10), 5, 6, 3)
    assert boundary_f_measure(gt, pred) < 1.0
    void = square((10, 10), 4, 5, 5)
    assert boundary_f_measure(gt, pred, void) == 1.0


def test_f_measure_unequal_precision_and_recall_by_hand() -> None:
    # Ground truth: bars in columns 2 and 7 (boundary columns 1, 2, 6, 7); prediction: the bar in
    # column 2 only. Precision 1; recall 20/40 (columns 6 and 7 are out of reach). F = 2/3.
    gt = vertical_bar(2) | vertical_bar(7)
    f = boundary_f_measure(gt, vertical_bar(2))
    assert f == 2 * 1.0 * 0.5 / 1.5


def _naive_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    gt_b, pred_b = _naive_boundary(gt), _naive_boundary(pred)
    n_gt, n_pred = gt_b.sum(), pred_b.sum()
    if n_pred == 0 and n_gt == 0:
        return 1.0
    precision = (pred_b & _naive_dilate(gt_b, radius)).sum() / n_pred if n_pred else 1.0
    recall = (gt_b & _naive_dilate(pred_b, radius)).sum() / n_gt if n_gt else 1.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_region_and_boundary_in_small_chunks_matches_naive_per_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    n, height, width = 12, 48, 64  # tolerance ceil(0.008 * 80) = 1
    gt = np.zeros((n, height, width), bool)
    pred = np.zeros((n, height, width), bool)
    for t in range(n):
        top, left = rng.integers(0, 40), rng.integers(0, 50)
        gt[t, top : top + 8, left : left + 14] = True
        pred[t] = np.roll(gt[t], (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        pred[t] ^= rng.random((height, width)) < 0.01
    gt[4] = False  # ground truth absent
    pred[5] = False  # prediction absent
    gt[6] = pred[6] = False  # both absent
    gt[7, -1, :] = True  # touching the bottom and right image edges
    pred[7, :, -1] = True
    expected_f = [_naive_f(g, p, radius=1) for g, p in zip(gt, pred, strict=True)]
    expected_j = [region_similarity(g, p) for g, p in zip(gt, pred, strict=True)]

    j, f = region_and_boundary(gt, pred)
    np.testing.assert_array_equal(f, expected_f)
    np.testing.assert_array_equal(j, expected_j)
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 1)  # one frame per chunk
    j_small, f_small = region_and_boundary(gt, pred)
    np.testing.assert_array_equal(f_small, f)
    np.testing.assert_array_equal(j_small, j)
    np.testing.assert_array_equal(boundary_f_measure(gt, pred), f)


# ------------------------------------------------------------------------------------- statistics


def test_statistics_constant_sequence() -> None:
    assert object_statistics([1.0, 1.0, 1.0, 1.0]) == Statistics(1.0, 1.0, 0.0)


def test_statistics_recall_and_overlapping_decay_bins_by_hand() -> None:
    values = [1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0]
    stats = object_statistics(values)
    assert stats.mean == pytest.approx(0.5)
    assert stats.recall == 0.5  # 0.5 itself is not above 0.5; 4 of 8 frames are
    # bin edges round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]; bins include both ends:
    # first bin frames 0..2, last bin frames 5..7
    assert stats.decay == pytest.approx((1.0 + 1.0 + 0.8) / 3 - (0.2 + 0.0 + 0.0) / 3)


def test_statistics_single_frame_and_no_frame() -> None:
    assert object_statistics([0.25]) == Statistics(0.25, 0.0, 0.0)
    empty = object_statistics([])
    assert math.isnan(empty.mean) and math.isnan(empty.recall) and math.isnan(empty.decay)


def test_statistics_skip_nan_values() -> None:
    stats = object_statistics([1.0, math.nan, 0.0, 1.0])
    assert stats.mean == pytest.approx(2 / 3)
    assert stats.recall == 0.5  # NaN > 0.5 is False, and the comparison has no NaN left to skip


@pytest.mark.parametrize(("n_frames", "decay_is_nan"), [(200, False), (255, False), (256, True), (257, True)])
def test_statistics_reproduce_the_uint8_bin_index_quirk(n_frames: int, decay_is_nan: bool) -> None:
    # The toolkit keeps bin edges as uint8: beyond 256 frames they wrap, and an edge of 255 makes
    # the end of the last bin 0, so that bin is empty and the decay NaN.
    values = np.linspace(1.0, 0.0, n_frames)
    stats = object_statistics(values)
    assert stats.mean == pytest.approx(0.5)
    assert math.isnan(stats.decay) == decay_is_nan


def test_popcount_fallback_without_numpy_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    gt = rng.random((3, 30, 70)) < 0.3
    pred = rng.random((3, 30, 70)) < 0.3
    expected = region_and_boundary(gt, pred)
    if hasattr(np, "bitwise_count"):
        monkeypatch.delattr(np, "bitwise_count")
    for got, want in zip(region_and_boundary(gt, pred), expected, strict=True):
        np.testing.assert_array_equal(got, want)

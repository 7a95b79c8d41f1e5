"""Tests for emvos.data.transforms: crop geometry, balanced crop, flips, affine warps, swap-and-attach."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.data import swap_and_attach
from emvos.data.transforms import (
    FILL_COLOUR,
    CropBox,
    balanced_crop,
    crop_image,
    crop_labels,
    flip,
    random_affine_step,
    random_crop_box,
    reference_size,
    sequential_affine,
    warp_image,
    warp_labels,
)


def test_reference_size_truncates_like_the_official_resize() -> None:
    assert reference_size(480, 854) == (480, 854)
    assert reference_size(720, 1280) == (480, 853)
    assert reference_size(1280, 720) == (853, 480)
    assert reference_size(240, 432) == (480, 864)


def test_crop_box_of_16_9_frames_is_always_the_centred_4_3_box() -> None:
    # An area of >= 0.8 * 854 * 480 at aspect <= 4/3 needs a height above 480: no try fits.
    for seed in range(20):
        box = random_crop_box(480, 854, np.random.default_rng(seed))
        assert box == CropBox(107 / 854, 0.0, 747 / 854, 1.0)


def test_crop_boxes_of_4_3_frames_follow_the_random_resized_crop_rule() -> None:
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(200):
        box = random_crop_box(480, 640, rng)
        x0, y0, x1, y1 = box.pixels(640, 480)
        width, height = x1 - x0, y1 - y0
        assert 0 <= x0 and 0 <= y0 and x1 <= 640 + 1e-9 and y1 <= 480 + 1e-9
        assert all(abs(value - round(value)) < 1e-9 for value in (x0, y0, x1, y1))
        assert 0.8 * 640 * 480 - 640 - 480 <= width * height <= 640 * 480
        assert 3 / 4 - 0.01 <= width / height <= 4 / 3 + 0.01
        sizes.add((round(width), round(height)))
    assert len(sizes) > 20


def test_crop_labels_is_nearest_and_crop_image_is_exact_at_scale_one() -> None:
    labels = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    whole = CropBox(0.0, 0.0, 1.0, 1.0)
    np.testing.assert_array_equal(crop_labels(labels, whole, 16), labels)
    np.testing.assert_array_equal(crop_labels(labels, CropBox(0.5, 0.5, 1.0, 1.0), 8), labels[8:, 8:])
    np.testing.assert_array_equal(crop_labels(labels, whole, 8), labels[::2, ::2] + 17)  # nearest
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop_image(Image.fromarray(pixels), whole, 12), pixels)


def test_balanced_crop_prefers_objects_of_at_least_256_pixels() -> None:
    labels = np.zeros((480, 640), dtype=np.uint8)
    labels[100:300, 200:400] = 3
    labels[10:14, 10:14] = 5  # 16 pixels: under 256 at any crop
    for seed in range(30):
        box, object_id = balanced_crop(labels, np.random.default_rng(seed), 96)
        assert object_id == 3
        assert np.count_nonzero(crop_labels(labels, box, 96) == 3) >= 256


def test_balanced_crop_falls_back_to_a_small_object_and_reports_no_object() -> None:
    labels = np.zeros((480, 640), dtype=np.uint8)
    assert balanced_crop(labels, np.random.default_rng(0), 64) is None
    labels[240:250, 320:330] = 7
    choice = balanced_crop(labels, np.random.default_rng(0), 64)
    assert choice is not None and choice[1] == 7


def test_flip_mirrors_width_and_height() -> None:
    array = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(flip(array, True, False), [[2, 1, 0], [5, 4, 3]])
    np.testing.assert_array_equal(flip(array, False, True), [[3, 4, 5], [0, 1, 2]])
    rgb = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    np.testing.assert_array_equal(flip(rgb, True, True), rgb[::-1, ::-1])


def test_sequential_affine_composes_independent_steps() -> None:
    matrices = sequential_affine(np.random.default_rng(4), 5, 60, 80)
    steps_rng = np.random.default_rng(4)
    expected = np.eye(3)
    np.testing.assert_array_equal(matrices[0], expected)
    for matrix in matrices[1:]:
        expected = random_affine_step(steps_rng, 60, 80) @ expected
        np.testing.assert_allclose(matrix, expected)
    assert not np.allclose(matrices[4], matrices[3])
    for matrix in sequential_affine(np.random.default_rng(0), 3, 60, 80, degrees=0, scale=(1, 1), shear=0):
        np.testing.assert_allclose(matrix, np.eye(3))


def test_affine_step_ranges() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        matrix = random_affine_step(rng, 100, 100, shear=0.0)
        linear = matrix[:2, :2]
        scale = math.sqrt(abs(np.linalg.det(linear)))
        angle = math.degrees(math.atan2(linear[1, 0], linear[0, 0]))
        assert 0.9 - 1e-9 <= scale <= 1.1 + 1e-9 and abs(angle) <= 10 + 1e-9
        np.testing.assert_allclose(matrix @ [50, 50, 1], [50, 50, 1])  # about the centre


def test_warps_move_image_and_labels_together_and_fill() -> None:
    labels = np.zeros((40, 50), dtype=np.uint8)
    labels[10:20, 5:15] = 2
    pixels = np.zeros((40, 50, 3), dtype=np.uint8)
    pixels[labels == 2] = (250, 10, 10)
    image = Image.fromarray(pixels)
    np.testing.assert_array_equal(np.asarray(warp_image(image, np.eye(3))), pixels)
    shift = np.array([[1.0, 0, 7], [0, 1, 3], [0, 0, 1]])  # 7 right, 3 down
    moved = warp_labels(labels, shift)
    assert np.array_equal(np.argwhere(moved == 2), np.argwhere(labels == 2) + [3, 7])
    warped = np.asarray(warp_image(image, shift))
    np.testing.assert_array_equal(warped[moved == 2], np.tile([250, 10, 10], (100, 1)))
    assert tuple(warped[0, 0]) == FILL_COLOUR and moved[0, 0] == 0


def _official_swap_and_attach(frames: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official trainer's arithmetic, with masks (B, L, 1, H, W) as its loader makes them."""
    masks = masks.unsqueeze(2)
    objects = torch.roll(frames * masks, dims=0, shifts=1)
    object_masks = torch.roll(masks, dims=0, shifts=1)
    frames = (1 - object_masks) * frames + object_masks * objects
    return frames, ((1 - object_masks) * masks).squeeze(2)


def test_swap_and_attach_pastes_the_previous_clips_object() -> None:
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 2, 3, 16, 16, generator=generator)
    masks = (torch.rand(3, 2, 16, 16, generator=generator) > 0.6).long()
    originals = frames.clone(), masks.clone()
    new_frames, new_masks = swap_and_attach(frames, masks, generator)
    assert torch.equal(frames, originals[0]) and torch.equal(masks, originals[1])  # not in place
    assert new_frames.shape == frames.shape and new_masks.dtype == torch.int64
    for b in range(3):
        source = (b - 1) % 3
        pasted = masks[source].bool()
        pasted_rgb = pasted.unsqueeze(1).expand_as(frames[b])
        assert torch.equal(new_frames[b][pasted_rgb], frames[source][pasted_rgb])
        assert torch.equal(new_frames[b][~pasted_rgb], frames[b][~pasted_rgb])
        assert torch.equal(new_masks[b], masks[b] * (~pasted))
    official_frames, official_masks = _official_swap_and_attach(frames, masks)
    torch.testing.assert_close(new_frames, official_frames, rtol=0, atol=1e-6)
    assert torch.equal(new_masks, official_masks)


@pytest.mark.parametrize("batch", [0, 1])
def test_swap_and_attach_leaves_a_single_clip_alone(batch: int) -> None:
    frames, masks = torch.rand(batch, 2, 3, 8, 8), torch.ones(batch, 2, 8, 8, dtype=torch.long)
    new_frames, new_masks = swap_and_attach(frames, masks, None)
    assert torch.equal(new_frames, frames) and torch.equal(new_masks, masks)

"""Augmentations of training clips: pure functions with an explicit random generator.

Everything here follows the official EMVOS training code (``dataset_loaders/*.py`` and
``trainer.py`` of github.com/suhwan-cho/EMVOS) unless a docstring says otherwise:

* **480p reference frame.** The official loaders resize every frame so that its shorter side is 480
  (``int`` truncation of the longer side), then draw the crop on that frame. Crop boxes here are
  drawn in the same 480p pixel grid (:func:`reference_size`, :func:`random_crop_box`) but are
  stored normalised to the frame (:class:`CropBox`), and each frame is resampled **once**, straight
  from the decoded image to the ``S x S`` output (bicubic for images, nearest for masks), instead of
  twice (to 480p, then the crop to ``S x S``). Same geometry; less blur (for frames not already
  480p) and less time.
* **Crop.** :func:`random_crop_box` is the official ``random_crop_params(mask, scale=(0.8, 1.25))``:
  torchvision's ``RandomResizedCrop`` rule, where the box's *area* is 0.8-1.25 times the area of the
  480p frame (not of the output) and its aspect ratio is log-uniform in 3/4-4/3; 10 tries, then a
  centred box of the whole frame clamped to that aspect range. The box is then resized to
  ``S x S`` regardless of its aspect ratio. Consequence: on 16:9 frames (DAVIS, YouTube-VOS) no try
  can fit (an area of at least 0.8 of 854x480 needs a height above 480 at aspect <= 4/3), so the
  crop is always the centred 640x480 box; the randomness is in the flips and the object choice.
* **Balanced crop.** :func:`balanced_crop`: up to 10 boxes are drawn on the first frame; for each,
  one object id is picked uniformly among those in the cropped first-frame mask, and the first box
  whose picked object covers at least 256 output pixels wins. The official code keeps the 10th box
  even when its object is smaller (or absent); here the last box whose picked object is present
  is kept, and ``None`` is returned when no box contained any object.
* **Flips.** Horizontal and vertical flips, each with probability 0.5, the same for the whole clip
  (:func:`flip`). Applied to the ``S x S`` output: the crop-box distribution is symmetric, so this
  is distributed like the official flip-then-crop.
* **No photometric jitter**: the official code has none.
* **Static pseudo-videos** (:func:`sequential_affine`, :func:`warp_image`, :func:`warp_labels`):
  rotation +-10 degrees, scale 0.9-1.1, shear +-10 degrees on both axes, translation (official: 0),
  about the image centre, composed frame after frame; nearest-neighbour sampling as the official
  code; the area uncovered by the warp is filled with the ImageNet mean colour ``(124, 116, 104)``
  and background ``0`` in masks.
* **Swap-and-attach** (:func:`swap_and_attach`): as in ``trainer.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

#: Shorter side of the frame on which crop boxes are drawn, as in the official loaders.
REFERENCE_SHORT_SIDE = 480
#: Official crop-area range, relative to the area of the 480p frame.
CROP_SCALE = (0.8, 1.25)
#: Official crop aspect-ratio range (width / height).
CROP_RATIO = (3 / 4, 4 / 3)
#: Boxes tried by :func:`balanced_crop` (official: 10).
CROP_ATTEMPTS = 10
#: Output pixels the chosen object must cover for a box to be accepted at once (official: 256).
MIN_OBJECT_PIXELS = 256
#: Fill colour of the area a warp uncovers: the ImageNet mean in 0-255, as in the official code.
FILL_COLOUR = (124, 116, 104)

Labels = npt.NDArray[np.uint8]
_T = TypeVar("_T", bound=np.generic)
_W = TypeVar("_W")


@dataclass(frozen=True)
class CropBox:
    """A crop box as fractions of the frame: ``left, top, right, bottom`` in ``[0, 1]``.

    Normalised so the same box applies to every frame of a clip whatever its pixel size.
    """

    left: float
    top: float
    right: float
    bottom: float

    def pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box in pixel coordinates of a ``width x height`` image: ``(x0, y0, x1, y1)``."""
        return (self.left * width, self.top * height, self.right * width, self.bottom * height)


def reference_size(height: int, width: int) -> tuple[int, int]:
    """``(H, W)`` of a ``height x width`` frame resized to shorter side 480, as the official code does.

    The longer side is ``int(480 / shorter * longer)`` (truncated), e.g. 1280x720 -> 853x480.
    """
    if height > width:
        return int(REFERENCE_SHORT_SIDE / width * height), REFERENCE_SHORT_SIDE
    return REFERENCE_SHORT_SIDE, int(REFERENCE_SHORT_SIDE / height * width)


def random_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> CropBox:
    """Draw a crop box of a ``height x width`` frame by the ``RandomResizedCrop`` rule.

    Up to 10 tries: area ``uniform(*scale) * height * width``, aspect ratio (width / height)
    ``exp(uniform(log ratio[0], log ratio[1]))``, sides rounded to integers; the first box that
    fits in the frame is placed at a uniformly random integer position. If none fits, the centred
    box of the whole frame, clamped to the aspect range, is returned.

    Args:
        height: Frame height in pixels (the 480p reference frame, see :func:`reference_size`).
        width: Frame width in pixels.
        rng: Source of randomness.
        scale: Range of the box area relative to the frame area.
        ratio: Range of the box aspect ratio (width / height).

    Returns:
        The box, normalised to the frame.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        box_w = round(math.sqrt(target_area * aspect))
        box_h = round(math.sqrt(target_area / aspect))
        if 0 < box_w <= width and 0 < box_h <= height:
            top = int(rng.integers(0, height - box_h + 1))
            left = int(rng.integers(0, width - box_w + 1))
            return _normalised(left, top, box_w, box_h, width, height)
    frame_ratio = width / height
    if frame_ratio < min(ratio):
        box_w, box_h = width, round(width / min(ratio))
    elif frame_ratio > max(ratio):
        box_w, box_h = round(height * max(ratio)), height
    else:
        box_w, box_h = width, height
    return _normalised((width - box_w) // 2, (height - box_h) // 2, box_w, box_h, width, height)


def _normalised(left: int, top: int, box_w: int, box_h: int, width: int, height: int) -> CropBox:
    return CropBox(left / width, top / height, (left + box_w) / width, (top + box_h) / height)


def crop_image(image: Image.Image, box: CropBox, size: int) -> npt.NDArray[np.uint8]:
    """Crop ``box`` out of an RGB image and resize it to ``size x size`` (bicubic, antialiased).

    Args:
        image: An RGB PIL image of any size.
        box: The crop, normalised to the image.
        size: Output side ``S``.

    Returns:
        ``(S, S, 3) uint8`` pixels.
    """
    resized = image.resize((size, size), Image.Resampling.BICUBIC, box=box.pixels(*image.size))
    return np.asarray(resized, dtype=np.uint8)


def crop_labels(labels: Labels, box: CropBox, size: int) -> Labels:
    """Crop ``box`` out of an id map and resize it to ``size x size`` (nearest neighbour).

    Args:
        labels: ``(H, W) uint8`` object ids.
        box: The crop, normalised to the map.
        size: Output side ``S``.

    Returns:
        ``(S, S) uint8`` object ids.
    """
    height, width = labels.shape
    resized = Image.fromarray(labels).resize((size, size), Image.Resampling.NEAREST, box=box.pixels(width, height))
    return np.asarray(resized, dtype=np.uint8)


def balanced_crop(
    labels: Labels,
    rng: np.random.Generator,
    size: int,
    *,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    attempts: int = CROP_ATTEMPTS,
    min_pixels: int = MIN_OBJECT_PIXELS,
) -> tuple[CropBox, int] | None:
    """Choose the crop box of a clip and its target object from the clip's first frame.

    Each attempt draws a box with :func:`random_crop_box` on the 480p reference frame of
    ``labels``, crops the ids to ``size x size`` (nearest) and picks one id uniformly among the
    nonzero ids inside. The first attempt whose picked object covers ``>= min_pixels`` output
    pixels is returned; if none does, the last attempt whose picked object is present at all.

    Args:
        labels: ``(H, W) uint8`` object ids of the first frame, 0 = background.
        rng: Source of randomness.
        size: Output side ``S``.
        scale: Box area range, relative to the 480p frame (see :func:`random_crop_box`).
        ratio: Box aspect-ratio range.
        attempts: Boxes to try.
        min_pixels: Output pixels the picked object must cover for a box to be accepted at once.

    Returns:
        ``(box, object id)``, or ``None`` when no box contained any object.
    """
    ref_h, ref_w = reference_size(*labels.shape)

    def draw() -> tuple[CropBox, Labels]:
        box = random_crop_box(ref_h, ref_w, rng, scale=scale, ratio=ratio)
        return box, crop_labels(labels, box, size)

    return choose_target(draw, rng, attempts=attempts, min_pixels=min_pixels)


def choose_target(
    draw: Callable[[], tuple[_W, Labels]],
    rng: np.random.Generator,
    *,
    attempts: int = CROP_ATTEMPTS,
    min_pixels: int = MIN_OBJECT_PIXELS,
) -> tuple[_W, int] | None:
    """The balancing rule of :func:`balanced_crop`, for any kind of crop window.

    Each attempt calls ``draw()`` for a window and the first frame's ids inside it, then picks one
    nonzero id uniformly among those present (``rng.choice``). The first attempt whose picked object
    covers ``>= min_pixels`` pixels wins; if none does, the last attempt whose picked object is
    present at all.

    Args:
        draw: Draws a window and returns it with the ``(S, S) uint8`` ids of the first frame inside it.
        rng: Source of randomness (for the object choice; ``draw`` may use the same generator).
        attempts: Windows to try.
        min_pixels: Pixels the picked object must cover for a window to be accepted at once.

    Returns:
        ``(window, object id)``, or ``None`` when no window contained any object.
    """
    fallback: tuple[_W, int] | None = None
    for _ in range(attempts):
        window, cropped = draw()
        ids = np.flatnonzero(np.bincount(cropped.ravel(), minlength=256)[1:]) + 1
        if ids.size == 0:
            continue
        object_id = int(rng.choice(ids))
        fallback = (window, object_id)
        if np.count_nonzero(cropped == object_id) >= min_pixels:
            break
    return fallback


def flip(array: npt.NDArray[_T], horizontal: bool, vertical: bool) -> npt.NDArray[_T]:
    """Mirror an ``(H, W)`` or ``(H, W, C)`` array left-right and/or top-bottom (a view).

    A clip is flipped by flipping each of its frames and masks the same way.
    """
    if horizontal:
        array = array[:, ::-1]
    if vertical:
        array = array[::-1]
    return array


def clip_to_tensors(frames: npt.NDArray[np.uint8],
                    masks: npt.NDArray[np.bool_] | npt.NDArray[np.uint8]) -> dict[str, torch.Tensor]:
    """Convert a clip to the training sample format.

    Args:
        frames: ``(L, 3, S, S) uint8`` RGB.
        masks: ``(L, S, S)``, True (or the object's id) on the clip's objects.

    Returns:
        ``{"frames": (L, 3, S, S) float32 in [0, 1], "masks": (L, S, S) int64}``.
    """
    return {
        "frames": torch.from_numpy(frames).to(torch.float32).div_(255.0),
        "masks": torch.from_numpy(masks).to(torch.int64),
    }


def random_affine_step(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 10.0,
    translate: float = 0.0,
) -> npt.NDArray[np.float64]:
    """Draw one random affine transformation of a ``height x width`` image about its centre.

    ``A = T(centre + t) @ [s * R(angle) @ Shear_x(sx) @ Shear_y(sy)] @ T(-centre)`` with
    ``angle ~ U(-degrees, degrees)``, ``s ~ U(*scale)``, ``sx, sy ~ U(-shear, shear)`` (degrees;
    ``Shear_x(sx) = [[1, tan sx], [0, 1]]``) and ``t ~ U(-translate, translate) * (width, height)``,
    the same ranges as the official ``random_affine_params(10, 0, (0.9, 1.1), 10)``.

    Args:
        rng: Source of randomness.
        height: Image height in pixels.
        width: Image width in pixels.
        degrees: Largest rotation, in degrees.
        scale: Range of the isotropic scale.
        shear: Largest shear angle on each axis, in degrees.
        translate: Largest shift, as a fraction of the image side.

    Returns:
        ``(3, 3) float64`` matrix mapping output pixel coordinates ``(x, y, 1)`` from input ones
        (continuous coordinates: pixel ``i`` spans ``[i, i + 1)``).
    """
    angle = math.radians(rng.uniform(-degrees, degrees))
    factor = rng.uniform(*scale)
    shear_x = math.tan(math.radians(rng.uniform(-shear, shear)))
    shear_y = math.tan(math.radians(rng.uniform(-shear, shear)))
    shift = (rng.uniform(-translate, translate) * width, rng.uniform(-translate, translate) * height)
    cos, sin = math.cos(angle), math.sin(angle)
    linear = factor * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear_x], [0.0, 1.0]])
    linear = linear @ np.array([[1.0, 0.0], [shear_y, 1.0]])
    centre = np.array([width / 2, height / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + np.array(shift) - linear @ centre
    return matrix


def sequential_affine(
    rng: np.random.Generator,
    count: int,
    height: int,
    width: int,
    *,
    degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 10.0,
    translate: float = 0.0,
) -> list[npt.NDArray[np.float64]]:
    """The warps of a static pseudo-video: identity, then each the previous one augmented once more.

    ``A_0 = I`` and ``A_t = B_t @ A_(t-1)``, the steps ``B_t`` drawn in order by
    :func:`random_affine_step` with the given ranges.

    Args:
        rng: Source of randomness.
        count: Number of matrices (frames), ``>= 1``.
        height: Image height in pixels.
        width: Image width in pixels.
        degrees, scale, shear, translate: Ranges of each step (see :func:`random_affine_step`).

    Returns:
        ``count`` ``(3, 3) float64`` matrices.
    """
    matrices = [np.eye(3)]
    for _ in range(count - 1):
        step = random_affine_step(rng, height, width, degrees=degrees, scale=scale, shear=shear, translate=translate)
        matrices.append(step @ matrices[-1])
    return matrices


def _inverse_coefficients(matrix: npt.NDArray[np.float64]) -> tuple[float, ...]:
    """PIL's affine data: the first two rows of the inverse (output -> input) matrix."""
    inverse = np.linalg.inv(matrix)
    return tuple(float(value) for value in inverse[:2].ravel())


def warp_image(image: Image.Image, matrix: npt.NDArray[np.float64]) -> Image.Image:
    """Apply an affine ``matrix`` (see :func:`random_affine_step`) to an RGB image, same size.

    Nearest neighbour, as the official code (``TF.affine``'s default), and 5x faster than PIL's
    bilinear warp; the antialiased resize of the crop that follows smooths the staircases.
    Uncovered pixels get :data:`FILL_COLOUR`.

    Args:
        image: RGB PIL image ``W x H``.
        matrix: ``(3, 3)`` input -> output pixel-coordinate map.

    Returns:
        The warped RGB image, ``W x H``.
    """
    return image.transform(
        image.size,
        Image.Transform.AFFINE,
        _inverse_coefficients(matrix),
        resample=Image.Resampling.NEAREST,
        fillcolor=FILL_COLOUR,
    )


def warp_labels(labels: Labels, matrix: npt.NDArray[np.float64]) -> Labels:
    """Apply an affine ``matrix`` to an id map (nearest neighbour; uncovered pixels become 0).

    Args:
        labels: ``(H, W) uint8`` object ids.
        matrix: ``(3, 3)`` input -> output pixel-coordinate map.

    Returns:
        ``(H, W) uint8`` warped ids.
    """
    height, width = labels.shape
    warped = Image.fromarray(labels).transform(
        (width, height),
        Image.Transform.AFFINE,
        _inverse_coefficients(matrix),
        resample=Image.Resampling.NEAREST,
        fillcolor=0,
    )
    return np.asarray(warped, dtype=np.uint8)


def swap_and_attach(
    frames: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap-and-attach (TBD; official ``trainer.py``): paste each clip's object onto the next clip.

    With ``r(x) = torch.roll(x, shifts=1, dims=0)`` (clip ``b`` receives from clip ``b - 1``, clip
    ``0`` from clip ``B - 1``) and ``m = masks`` broadcast over the colour channels::

        frames' = (1 - r(m)) * frames + r(m) * r(frames * m)
        masks'  = (1 - r(m)) * masks

    frame by frame (frame ``t`` of clip ``b`` gets the object of frame ``t`` of clip ``b - 1``):
    pixels of the pasted object take the other clip's object colours, the target mask loses exactly
    the pasted pixels (the pasted object occludes the target), every other pixel is unchanged. The
    target may end up fully occluded, even in frame 0 (the official trainer then skips the batch).

    The pairing is the fixed roll by one, so ``generator`` is not consumed; it is accepted so that
    callers pass the trainer's generator uniformly. With ``B < 2`` there is no other clip to take
    an object from, and the inputs are returned unchanged (rolling a batch of one onto itself
    would erase its target).

    Args:
        frames: ``(B, L, 3, H, W)`` float.
        masks: ``(B, L, H, W)`` integer or bool target masks, nonzero = object.
        generator: Unused (see above).

    Returns:
        ``(frames', masks')``, new tensors of the input shapes and dtypes.
    """
    del generator
    if frames.shape[0] < 2:
        return frames, masks
    pasted = torch.roll(masks != 0, shifts=1, dims=0)
    new_frames = torch.where(pasted.unsqueeze(2), torch.roll(frames, shifts=1, dims=0), frames)
    new_masks = torch.where(pasted, torch.zeros_like(masks), masks)
    return new_frames, new_masks

"""What every training dataset shares: deterministic sampling, bad-data skipping, clip rendering.

A training dataset is a map-style :class:`torch.utils.data.Dataset` of virtually unlimited length
whose item ``k`` depends only on ``(seed, k)``: all its randomness comes from
``numpy.random.default_rng([seed, k])``. If drawing the sample fails (an unreadable file, a mask
that does not match its frame, no object in the clip's first frame), a replacement is drawn from
``default_rng([seed, k, 1])``, then ``[seed, k, 2]``, ..., and the failure is counted in
:attr:`ClipDataset.skipped`. Resumed runs and any number of DataLoader workers therefore see
identical samples.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from emvos.data.transforms import (
    CROP_RATIO,
    CROP_SCALE,
    Labels,
    balanced_crop,
    clip_to_tensors,
    crop_image,
    crop_labels,
    flip,
)
from emvos.errors import EmvosInputError
from emvos.io.masks import read_label_png

logger = logging.getLogger("emvos.data")

#: What ``len()`` of a training dataset returns: samples are drawn, not enumerated.
VIRTUAL_LENGTH = 2**31 - 1
#: Why a draw can be rejected at load time (the keys of :attr:`ClipDataset.skipped`): an image or
#: mask cannot be decoded; a mask is not the size of its image; a static image's mask has no object;
#: the first frame of a video clip has no object inside the crop (normal in videos: not logged).
SKIP_REASONS = ("unreadable", "size_mismatch", "empty_mask", "no_object")
#: Draws tried for one sample before giving up.
MAX_DRAWS = 100

#: Output pixels an object of frame 0 must cover to be tracked in a joint clip (besides the target,
#: which the balanced crop already chose); smaller objects are background there.
JOINT_MIN_PIXELS = 64

Sample = dict[str, torch.Tensor]
#: ``load_frame(position) -> (RGB image W x H, (H, W) uint8 ids)``: frame ``position`` of a clip.
FrameLoader = Callable[[int], tuple[Image.Image, Labels]]


class SampleSkipped(Exception):
    """A draw cannot make a sample; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file to RGB.

    Args:
        path: The image file.
        size: The ``(H, W)`` it must have (that of its mask), checked before decoding.

    Returns:
        The RGB image.

    Raises:
        SampleSkipped: ``unreadable`` (missing, corrupt or not an image) or ``size_mismatch``.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if size is not None and (height, width) != tuple(size):
                raise SampleSkipped(
                    "size_mismatch", f"{path}: image is {width}x{height} but its mask is {size[1]}x{size[0]}"
                )
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise SampleSkipped("unreadable", f"{path}: cannot read this image ({error})") from error


def read_labels(path: Path) -> Labels:
    """Decode an object-id PNG (:func:`emvos.io.masks.read_label_png`) to ``(H, W) uint8`` ids; may hold no object.

    Palette (``P``) masks: 255 is DAVIS's "void" border, read as background (as the official loader
    does). Greyscale (``L``/``1``) masks: values are ids, so a DAVIS-2016 0/255 mask is one object
    with id 255. Greyscale or palette masks with a fully opaque alpha band are read without it, as
    the evaluation reads them (DAVIS-2016 has such a file). A file that cannot be read as a mask
    raises :class:`SampleSkipped` (``unreadable``).
    """
    try:
        mask = read_label_png(path, opaque_alpha=True)
    except EmvosInputError as error:
        raise SampleSkipped("unreadable", str(error)) from error
    labels = mask.labels
    if mask.mode == "P":
        labels[labels == 255] = 0
    return labels


def report_scan(name: str, usable: str, excluded: Mapping[str, int]) -> None:
    """Log one line about what a dataset scan found; a warning when anything was left out.

    Args:
        name: The dataset (class and root).
        usable: What is usable, e.g. ``"28 sequences, 2000 frames"``.
        excluded: Count of what was left out, by reason.
    """
    left_out = {reason: count for reason, count in excluded.items() if count}
    if left_out:
        details = ", ".join(f"{reason}={count}" for reason, count in sorted(left_out.items()))
        logger.warning("%s: using %s; left out: %s", name, usable, details)
    else:
        logger.info("%s: using %s", name, usable)


class ClipDataset(Dataset[Sample], ABC):
    """Base of the training datasets: ``dataset[k]`` is a clip that depends only on ``(seed, k)``.

    A sample is ``{"frames": (L, 3, S, S) float32 RGB in [0, 1], "masks": (L, S, S) int64 in
    {0, 1}}``: one target object per clip (1 = the object), which is present in frame 0. A joint
    dataset (``joint``) keeps several objects of frame 0 instead, tracked together: ``masks`` are
    then ids ``0..K``.

    Attributes:
        seed: The dataset seed.
        clip_length: ``L``, frames per clip.
        crop_size: ``S``, side of the square output.
        crop_scale: Crop-area range relative to the 480p frame (official ``(0.8, 1.25)``).
        crop_ratio: Crop aspect-ratio range (official ``(3/4, 4/3)``).
        joint: Whether :meth:`_render` keeps several objects of frame 0 (ids ``1..K``).
        joint_objects: Most objects a joint clip keeps.
        excluded: What the construction-time scan left out, by reason (frozen after ``__init__``).
    """

    def __init__(
        self,
        *,
        seed: int,
        clip_length: int,
        crop_size: int,
        crop_scale: tuple[float, float] = CROP_SCALE,
        crop_ratio: tuple[float, float] = CROP_RATIO,
        joint: bool = False,
        joint_objects: int = 8,
    ) -> None:
        """Set the sampling options shared by every dataset.

        Args:
            seed: Dataset seed, ``>= 0``: sample ``k`` depends only on ``(seed, k)``.
            clip_length: ``L``, frames per clip, ``>= 1``.
            crop_size: ``S``, side of the square output, ``>= 1``.
            crop_scale: Crop-area range relative to the 480p frame.
            crop_ratio: Crop aspect-ratio range (width / height).
            joint: Keep, besides the target, the other objects of frame 0 that cover at least
                :data:`JOINT_MIN_PIXELS` output pixels, tracked together with it (see :meth:`_render`).
            joint_objects: Most objects a joint clip keeps, ``>= 1`` (the others, drawn at random
                among those large enough, are left out: background).

        Raises:
            ValueError: an option is out of range.
        """
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        if joint_objects < 1:
            raise ValueError(f"joint_objects must be >= 1, got {joint_objects}")
        self.joint, self.joint_objects = joint, joint_objects
        self.seed = seed
        self.clip_length = clip_length
        self.crop_size = crop_size
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        self.excluded: dict[str, int] = {}
        # Shared memory, so that counts made in DataLoader worker processes reach the main process.
        self._skip_counts = torch.zeros(len(SKIP_REASONS), dtype=torch.int64).share_memory_()
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    @property
    def skipped(self) -> dict[str, int]:
        """Draws rejected at load time, by reason (:data:`SKIP_REASONS`), over all worker processes.

        Each rejected draw was replaced by another; counts are approximate if workers reject
        draws at the same instant.
        """
        return dict(zip(SKIP_REASONS, self._skip_counts.tolist(), strict=True))

    def __getitem__(self, index: int) -> Sample:
        """Sample ``index``: ``{"frames": (L, 3, S, S) float32, "masks": (L, S, S) int64}``.

        Raises:
            EmvosInputError: :data:`MAX_DRAWS` draws in a row failed (the data is mostly unusable).
        """
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        for draw in range(MAX_DRAWS):
            key = [self.seed, int(index)] if draw == 0 else [self.seed, int(index), draw]
            try:
                return self._draw(np.random.default_rng(key))
            except SampleSkipped as skip:
                self._count_skip(skip)
        raise EmvosInputError(
            f"{self.describe()}: {MAX_DRAWS} draws in a row gave no usable clip "
            f"(skipped so far: {self.skipped}); check the data"
        )

    def _count_skip(self, skip: SampleSkipped) -> None:
        self._skip_counts[SKIP_REASONS.index(skip.reason)] += 1
        message = str(skip)
        if skip.reason != "no_object" and message not in self._warned:
            self._warned.add(message)
            logger.warning("%s: skipped (%s): %s", self.describe(), skip.reason, message)

    @abstractmethod
    def describe(self) -> str:
        """A short name for messages, e.g. ``"DavisClips(/data/DAVIS)"``."""

    @abstractmethod
    def _draw(self, rng: np.random.Generator) -> Sample:
        """One sample from ``rng``, or raise :class:`SampleSkipped`."""

    def _render(self, load_frame: FrameLoader, rng: np.random.Generator) -> Sample:
        """Crop, select the target object, flip and convert the ``L`` frames ``load_frame(0..L-1)``.

        Draws, in order: horizontal flip, vertical flip (``rng.random() < 0.5`` each), the balanced
        crop on frame 0 (:func:`~emvos.data.transforms.balanced_crop`), then, for a joint dataset,
        the order of the other objects large enough, of which the first ``joint_objects - 1`` are
        kept. Frames are loaded in order, frame 0 first.

        Args:
            load_frame: The frames of the clip.
            rng: Source of randomness.

        Returns:
            The sample: ``{"frames": (L, 3, S, S) float32, "masks": (L, S, S) int64}``; masks are
            0/1, or for a joint dataset ids ``1..K`` with the target as 1 (0 = background and the
            objects left out).

        Raises:
            SampleSkipped: a frame failed to load, or frame 0 has no object inside any crop.
        """
        horizontal, vertical = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        size, length = self.crop_size, self.clip_length
        first_image, first_labels = load_frame(0)
        choice = balanced_crop(first_labels, rng, size, scale=self.crop_scale, ratio=self.crop_ratio)
        if choice is None:
            raise SampleSkipped("no_object", "the clip's first frame has no object inside the crop")
        box, object_id = choice
        lut = np.zeros(256, dtype=np.uint8)  # source id -> output id
        lut[object_id] = 1
        if self.joint:
            counts = np.bincount(crop_labels(first_labels, box, size).ravel(), minlength=256)
            counts[[0, object_id]] = 0
            others = rng.permutation(np.flatnonzero(counts >= JOINT_MIN_PIXELS))[:self.joint_objects - 1]
            lut[others] = np.arange(2, len(others) + 2)
        frames = np.empty((length, 3, size, size), dtype=np.uint8)
        masks = np.empty((length, size, size), dtype=np.uint8)
        for position in range(length):
            image, labels = (first_image, first_labels) if position == 0 else load_frame(position)
            frames[position] = flip(crop_image(image, box, size), horizontal, vertical).transpose(2, 0, 1)
            masks[position] = flip(lut[crop_labels(labels, box, size)], horizontal, vertical)
        return clip_to_tensors(frames, masks)

"""Clips of consecutive annotated frames of a video: what DAVIS and YouTube-VOS training share.

Sampling, as the official ``TrainDAVIS`` / ``TrainYTVOS``: a video uniformly at random; its
annotated frames reversed with probability 0.5; a start frame uniformly at random; then the next
``L - 1`` annotated frames, the last one repeated when the video ends first. Then the common
augmentation of :meth:`~emvos.data.base.ClipDataset._render` (flips, balanced crop choosing the
target among the objects of the clip's first frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from emvos.data.base import ClipDataset, Sample, read_labels, read_rgb
from emvos.data.transforms import Labels
from emvos.io import natural_sort_key


@dataclass(frozen=True)
class AnnotatedVideo:
    """The annotated frames of one training video, in temporal order.

    Attributes:
        name: The video (sequence) name.
        images: Frame image files.
        masks: The mask file of each frame (same length as ``images``).
        has_object: Per frame, whether its mask is known to hold an object (e.g. from YouTube-VOS's
            ``meta.json``); clips start only at such frames. ``None``: unknown, any frame.
    """

    name: str
    images: tuple[Path, ...]
    masks: tuple[Path, ...]
    has_object: tuple[bool, ...] | None = None


def pair_frames(image_dir: Path, mask_dir: Path, image_suffix: str = ".jpg") -> tuple[AnnotatedVideo, int]:
    """Pair the frames of a video folder with its masks by file stem, in natural order.

    Args:
        image_dir: Folder of ``*<image_suffix>`` frames.
        mask_dir: Folder of ``*.png`` masks.
        image_suffix: Suffix of the frame files (lower case).

    Returns:
        The paired frames (possibly none) and the number of frames left out because they have no
        mask.
    """
    masks = {path.stem: path for path in mask_dir.iterdir() if path.suffix.lower() == ".png"}
    stems = sorted(
        (path.stem for path in image_dir.iterdir() if path.suffix.lower() == image_suffix),
        key=natural_sort_key,
    )
    paired = [stem for stem in stems if stem in masks]
    images = tuple(image_dir / f"{stem}{image_suffix}" for stem in paired)
    video = AnnotatedVideo(image_dir.name, images, tuple(masks[stem] for stem in paired))
    return video, len(stems) - len(paired)


def clip_positions(num_frames: int, start: int, length: int) -> list[int]:
    """``length`` consecutive positions from ``start``, repeating the last frame past the end."""
    return [min(start + offset, num_frames - 1) for offset in range(length)]


class VideoClips(ClipDataset):
    """Clips of ``L`` consecutive annotated frames from a list of videos (DAVIS, YouTube-VOS).

    Draws, in order: the video (uniform), reversal (``rng.random() < 0.5``), the start frame
    (uniform among the frames, or among those with ``has_object``), then
    :meth:`~emvos.data.base.ClipDataset._render`.
    """

    def __init__(
        self,
        videos: Sequence[AnnotatedVideo],
        *,
        binary: bool,
        seed: int,
        clip_length: int,
        crop_size: int,
        crop_scale: tuple[float, float],
        crop_ratio: tuple[float, float],
    ) -> None:
        """Wrap a list of videos.

        Args:
            videos: The videos, each with at least one frame (and one ``has_object`` frame).
            binary: Merge all object ids into one object (DAVIS 2016).
            seed: Dataset seed (see :class:`~emvos.data.base.ClipDataset`).
            clip_length: ``L``.
            crop_size: ``S``.
            crop_scale: Crop-area range relative to the 480p frame.
            crop_ratio: Crop aspect-ratio range.
        """
        super().__init__(
            seed=seed,
            clip_length=clip_length,
            crop_size=crop_size,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
        )
        self.videos = list(videos)
        self.binary = binary

    def _draw(self, rng: np.random.Generator) -> Sample:
        video = self.videos[int(rng.integers(len(self.videos)))]
        order = list(range(len(video.images)))
        if rng.random() < 0.5:
            order.reverse()
        starts = [
            position
            for position, frame_id in enumerate(order)
            if video.has_object is None or video.has_object[frame_id]
        ]
        start = starts[int(rng.integers(len(starts)))]
        frame_ids = [order[position] for position in clip_positions(len(order), start, self.clip_length)]
        cache: dict[int, tuple[Image.Image, Labels]] = {}

        def load_frame(position: int) -> tuple[Image.Image, Labels]:
            frame_id = frame_ids[position]
            if frame_id not in cache:
                cache[frame_id] = self._load(video, frame_id)
            return cache[frame_id]

        return self._render(load_frame, rng)

    def _load(self, video: AnnotatedVideo, frame_id: int) -> tuple[Image.Image, Labels]:
        labels = read_labels(video.masks[frame_id])
        if self.binary:
            labels = (labels != 0).astype(np.uint8)
        return read_rgb(video.images[frame_id], labels.shape), labels

"""YouTube-VOS training clips (main training, paper §3.7): ``L`` consecutive annotated frames.

Layout (YouTube-VOS 2018 and 2019 ``train``)::

    ROOT/train/JPEGImages/<video>/<frame>.jpg     (only the annotated frames, every 5th)
    ROOT/train/Annotations/<video>/<frame>.png    (palette masks, object ids)
    ROOT/train/meta.json                          (optional here)

"Consecutive" means consecutive *annotated* frames (5 video frames apart), as in the official
``TrainYTVOS``. Sampling is that of :class:`~emvos.data.video.VideoClips`; the target is one of the
objects of the clip's first frame. When ``meta.json`` is present, clips start only at frames where
it lists at least one object (the official code may start at an empty frame and then skips the
whole batch in training); without it, a draw whose first frame is empty is replaced and counted as
``skipped["no_object"]``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

from emvos.data.base import report_scan
from emvos.data.transforms import CROP_RATIO, CROP_SCALE
from emvos.data.video import AnnotatedVideo, VideoClips, pair_frames
from emvos.errors import EmvosInputError
from emvos.io import natural_sort_key


def read_meta(path: Path) -> dict[str, set[str]]:
    """The frames in which YouTube-VOS's ``meta.json`` lists at least one object, per video.

    Args:
        path: ``meta.json`` (``{"videos": {video: {"objects": {id: {"frames": [stem, ...]}}}}}``).

    Returns:
        ``{video: {frame stem, ...}}``.

    Raises:
        EmvosInputError: the file cannot be read or is not in that format.
    """
    try:
        videos = json.loads(path.read_text())["videos"]
        return {
            name: {frame for entry in video["objects"].values() for frame in entry["frames"]}
            for name, video in videos.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise EmvosInputError(
            f"{path}: not a YouTube-VOS meta.json ({error!r}); fix or remove it (it is optional)"
        ) from error


class YTVOSClips(VideoClips):
    """YouTube-VOS 2018/2019 training clips (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        videos: Sequence[str] | None = None,
        exclude: Collection[str] = (),
        clip_length: int = 10,
        crop_size: int = 384,
        seed: int = 0,
        crop_scale: tuple[float, float] = CROP_SCALE,
        crop_ratio: tuple[float, float] = CROP_RATIO,
    ) -> None:
        """Scan the videos (folders, file names and ``meta.json``; images are decoded when sampled).

        Args:
            root: The YouTube-VOS folder (holding ``train/``).
            split: The subfolder with ``JPEGImages`` and ``Annotations``.
            videos: The videos to use; default: every folder in ``<split>/JPEGImages``.
            exclude: Videos to leave out (e.g. held out for validation).
            clip_length: ``L``, annotated frames per clip (paper: 10).
            crop_size: ``S`` (paper: 384).
            seed: Dataset seed: sample ``k`` depends only on ``(seed, k)``.
            crop_scale: Crop-area range relative to the 480p frame.
            crop_ratio: Crop aspect-ratio range.

        Raises:
            EmvosInputError: the folders are missing, ``meta.json`` is malformed, or no video is
                usable.
        """
        self.root = Path(root)
        split_root = self.root / split
        image_root, mask_root = split_root / "JPEGImages", split_root / "Annotations"
        if not image_root.is_dir():
            raise EmvosInputError(
                f"{image_root}: no such folder; pass the YouTube-VOS root (with {split}/JPEGImages/<video>)"
            )
        meta_path = split_root / "meta.json"
        meta = read_meta(meta_path) if meta_path.is_file() else None
        if videos is None:
            videos = sorted((path.name for path in image_root.iterdir() if path.is_dir()), key=natural_sort_key)
        excluded = set(exclude)
        counts = {"missing_folder": 0, "no_annotated_frame": 0, "unannotated_frame": 0, "no_object": 0}
        usable = []
        for name in videos:
            if name in excluded:
                continue
            if not (image_root / name).is_dir() or not (mask_root / name).is_dir():
                counts["missing_folder"] += 1
                continue
            video, unpaired = pair_frames(image_root / name, mask_root / name)
            counts["unannotated_frame"] += unpaired
            if not video.images:
                counts["no_annotated_frame"] += 1
                continue
            if meta is not None and name in meta:
                has_object = tuple(path.stem in meta[name] for path in video.images)
                if not any(has_object):
                    counts["no_object"] += 1
                    continue
                video = AnnotatedVideo(video.name, video.images, video.masks, has_object)
            usable.append(video)
        super().__init__(
            usable,
            binary=False,
            seed=seed,
            clip_length=clip_length,
            crop_size=crop_size,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
        )
        self.excluded = counts
        frames = sum(len(video.images) for video in usable)
        report_scan(self.describe(), f"{len(usable)} videos, {frames} annotated frames", counts)
        if not usable:
            raise EmvosInputError(f"{self.describe()}: no usable video (left out: {counts})")

    def describe(self) -> str:
        return f"YTVOSClips({self.root})"

"""DAVIS training clips (main training, paper §3.7): ``L`` consecutive annotated frames of a sequence.

Layout (DAVIS 2016 and 2017)::

    ROOT/JPEGImages/480p/<sequence>/<frame>.jpg
    ROOT/Annotations/480p/<sequence>/<frame>.png
    ROOT/ImageSets/<year>/<split>.txt        (one sequence name per line)

Frames without a mask are left out (DAVIS annotates every frame). Sampling is that of
:class:`~emvos.data.video.VideoClips` (the official ``TrainDAVIS``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from emvos.data.base import report_scan
from emvos.data.transforms import CROP_RATIO, CROP_SCALE
from emvos.data.video import VideoClips, pair_frames
from emvos.errors import EmvosInputError
from emvos.io import natural_sort_key

#: DAVIS editions: 2016 masks are one object (any nonzero pixel), 2017 masks hold object ids.
DAVIS_YEARS = (2016, 2017)


class DavisClips(VideoClips):
    """DAVIS 2016/2017 training clips (see the module docstring for the sampling).

    DAVIS 2016 masks (0/255) are one object; for DAVIS 2017 palette masks, the target is one of the
    objects of the clip's first frame (255 = void is background).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        year: int = 2017,
        split: str | None = "train",
        sequences: Sequence[str] | None = None,
        exclude: Collection[str] = (),
        resolution: str = "480p",
        clip_length: int = 10,
        crop_size: int = 384,
        seed: int = 0,
        crop_scale: tuple[float, float] = CROP_SCALE,
        crop_ratio: tuple[float, float] = CROP_RATIO,
    ) -> None:
        """Scan the sequences (folders and file names only; images are decoded when sampled).

        Args:
            root: The DAVIS folder (holding ``JPEGImages``, ``Annotations``, ``ImageSets``).
            year: 2016 (binary masks) or 2017 (object ids).
            split: Read the sequences from ``ImageSets/<year>/<split>.txt``; ``None``: every
                sequence folder in ``JPEGImages/<resolution>``. Ignored when ``sequences`` is given.
            sequences: The sequences to use, instead of a split file.
            exclude: Sequences to leave out (e.g. held-out validation sequences).
            resolution: The resolution folder.
            clip_length: ``L``, frames per clip (paper: 10).
            crop_size: ``S`` (paper: 384).
            seed: Dataset seed: sample ``k`` depends only on ``(seed, k)``.
            crop_scale: Crop-area range relative to the 480p frame.
            crop_ratio: Crop aspect-ratio range.

        Raises:
            EmvosInputError: ``root`` or the split file is missing, or no sequence is usable.
        """
        if year not in DAVIS_YEARS:
            raise EmvosInputError(f"DAVIS year must be one of {DAVIS_YEARS}, got {year}")
        self.root = Path(root)
        image_root = self.root / "JPEGImages" / resolution
        mask_root = self.root / "Annotations" / resolution
        if not image_root.is_dir():
            raise EmvosInputError(
                f"{image_root}: no such folder; pass the DAVIS root (with JPEGImages/{resolution}/<sequence>)"
            )
        names = list(sequences) if sequences is not None else self._split_names(image_root, year, split)
        excluded = set(exclude)
        counts = {"missing_folder": 0, "no_annotated_frame": 0, "unannotated_frame": 0}
        videos = []
        for name in names:
            if name in excluded:
                continue
            if not (image_root / name).is_dir() or not (mask_root / name).is_dir():
                counts["missing_folder"] += 1
                continue
            video, unpaired = pair_frames(image_root / name, mask_root / name)
            counts["unannotated_frame"] += unpaired
            if video.images:
                videos.append(video)
            else:
                counts["no_annotated_frame"] += 1
        super().__init__(
            videos,
            binary=year == 2016,
            seed=seed,
            clip_length=clip_length,
            crop_size=crop_size,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
        )
        self.year = year
        self.excluded = counts
        frames = sum(len(video.images) for video in videos)
        report_scan(self.describe(), f"{len(videos)} sequences, {frames} frames", self.excluded)
        if not videos:
            raise EmvosInputError(f"{self.describe()}: no usable sequence (left out: {self.excluded})")

    @staticmethod
    def _split_names(image_root: Path, year: int, split: str | None) -> list[str]:
        if split is None:
            return sorted((path.name for path in image_root.iterdir() if path.is_dir()), key=natural_sort_key)
        split_file = image_root.parent.parent / "ImageSets" / str(year) / f"{split}.txt"
        if not split_file.is_file():
            raise EmvosInputError(
                f"{split_file}: no such split file; pass split=None to use every sequence folder, or list the sequences"
            )
        return [line.strip() for line in split_file.read_text().splitlines() if line.strip()]

    def describe(self) -> str:
        return f"DavisClips({self.root})"

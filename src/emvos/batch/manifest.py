"""The videos of a batch: a CSV manifest, or a folder of videos with their masks beside them.

A CSV manifest has a header and at least the columns ``video`` and ``mask`` (an optional ``name``
column names the output folder); paths are relative to the manifest's folder. ``video`` is a video
file or a folder of frames; ``mask`` a mask file or a folder of masks named after their frames (as
``emvos segment --mask``).

A folder holds videos (files with a video extension, or folders of frames) and, beside each video
``NAME``, its mask ``NAME.png`` or a folder of masks ``NAME.masks/``.

Only the paths are checked here, before any work; what is inside them is checked when each video is
segmented, and a bad video then fails alone.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from emvos.errors import EmvosInputError
from emvos.io import VIDEO_EXTENSIONS

#: Columns a CSV manifest must have.
REQUIRED_COLUMNS = ("video", "mask")
#: Suffix of a folder of masks beside a video in a folder manifest.
MASKS_SUFFIX = ".masks"


@dataclass(frozen=True)
class BatchVideo:
    """One video of a batch.

    Attributes:
        name: its output folder's name (unique in the batch).
        video: a video file or a folder of frames.
        mask: a mask file or a folder of masks.
    """

    name: str
    video: Path
    mask: Path


def read_manifest(path: str | Path) -> list[BatchVideo]:
    """The videos of a CSV manifest or of a folder, in order.

    Raises:
        EmvosInputError: the manifest does not exist, lacks a column, names a path that does not
            exist, has no video, or gives two videos the same name.
    """
    path = Path(path)
    if path.is_dir():
        videos = _read_folder(path)
    elif path.is_file():
        videos = _read_csv(path)
    else:
        raise EmvosInputError(f"{path}: no such manifest; give a CSV file (columns video,mask) or a folder of videos")
    if not videos:
        raise EmvosInputError(f"{path}: lists no videos; add rows (video,mask) or videos with their masks")
    seen: dict[str, Path] = {}
    for video in videos:
        if video.name in seen:
            raise EmvosInputError(f"{path}: {seen[video.name]} and {video.video} would both write to "
                                  f"{video.name}/; give the rows distinct names in a name column")
        seen[video.name] = video.video
    return videos


def _read_csv(path: Path) -> list[BatchVideo]:
    root = path.parent
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            columns = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EmvosInputError(f"{path}: not a readable CSV manifest ({exc}); write it as UTF-8 CSV") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if rows and missing:
        raise EmvosInputError(f"{path}: no column {', '.join(missing)}; the header needs video,mask")
    videos = []
    for line, row in enumerate(rows, start=2):
        video, mask = (root / (row.get(c) or "").strip() for c in REQUIRED_COLUMNS)
        for column, target in (("video", video), ("mask", mask)):
            if not (row.get(column) or "").strip() or not target.exists():
                raise EmvosInputError(f"{path}, line {line}: {column} {target} does not exist; fix the path "
                                      f"(relative to the manifest's folder)")
        name = (row.get("name") or "").strip() or (video.stem if video.is_file() else video.name)
        videos.append(BatchVideo(name, video, mask))
    return videos


def _read_folder(folder: Path) -> list[BatchVideo]:
    videos = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(MASKS_SUFFIX):
            continue
        if entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            name = entry.stem
        elif entry.is_dir():
            name = entry.name
        else:
            continue  # masks and other files
        masks = [m for m in (folder / f"{name}.png", folder / f"{name}{MASKS_SUFFIX}") if m.exists()]
        if not masks:
            raise EmvosInputError(f"{entry}: no mask beside it; add {name}.png (first frame) or a folder "
                                  f"{name}{MASKS_SUFFIX}/ of masks, or list the videos in a CSV manifest")
        videos.append(BatchVideo(name, entry, masks[0]))
    return videos

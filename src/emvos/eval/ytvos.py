"""``emvos ytvos``: segment a YouTube-VOS 2018/2019 split and write the benchmark's submission.

Layout read (``valid`` split; ``test`` of 2019 is the same)::

    ROOT/valid/JPEGImages/<video>/<frame>.jpg        the frames the benchmark scores (every 5th)
    ROOT/valid/Annotations/<video>/<frame>.png       each object's mask, once, where it first appears
    ROOT/valid/meta.json                             {"videos": {<video>: {"objects": {<id>: {"frames"}}}}}
    ROOT/valid_all_frames/JPEGImages/<video>/        optional: every frame (30 fps), for --all-frames

Written::

    OUT/Annotations/<video>/<frame>.png   one indexed PNG per frame of valid/JPEGImages/<video>/,
                                          at the original size, with the annotations' palette
    OUT/submission.zip                    those PNGs, ``Annotations/...`` at the zip's root
    OUT/ytvos.json                        settings, model and end-to-end fps, peak memory, per video

Objects that appear later are given to the predictor at the frame of their first annotation PNG,
as the official EMVOS evaluator does. In YouTube-VOS a later annotation PNG holds only the objects
first annotated there (the first of an object's ``frames`` in ``meta.json`` is the frame of the PNG
that holds its mask). Should a later PNG also hold an object given before, those pixels are not
given again: the protocol gives each object's mask once, so they are left to the prediction (the
official code would reset that object's reference to the extra mask, i.e. use more ground truth
than the protocol allows).

With ``--all-frames`` every frame of ``valid_all_frames`` is segmented (shorter gaps between frames
make propagation easier) and only the listed frames are written. Frames before a video's first
annotation are written empty, so every listed frame has its PNG as the submission format asks (the
official evaluator skips them). Speeds count the frames from the first annotation on, the frames
the network runs on, as the official evaluator counts them. Every video runs at ``--resolution``
(the official evaluator falls back to the original size when a given object has fewer than 1000
pixels at 480p; emvos does not).

Videos can be split over processes: ``--shard i/n`` runs every n-th video starting at i and writes
its timings to ``OUT/timings/``; ``--merge`` checks that every video is done, zips the submission
and writes ``OUT/ytvos.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.eval.benchmark import run_info
from emvos.eval.shards import clear_shard, parse_shard, read_shards, write_shard
from emvos.inference.cli import add_inference_options, build_predictor
from emvos.io import FRAME_EXTENSIONS, LabelWriter, MaskMode, check_mask_size, natural_sort_key, open_frames, read_mask
from emvos.io.files import atomic_path, write_text_atomically

if TYPE_CHECKING:  # PyTorch is imported when the command runs, not when its options are parsed
    from emvos.inference.predictor import FramePrediction, VideoPredictor

#: Name of the zip written into the output folder.
SUBMISSION_ZIP = "submission.zip"


@dataclass(frozen=True)
class YTVOSVideo:
    """One video of a YouTube-VOS split.

    Attributes:
        name: The video's folder name.
        frames_dir: The frames segmented: ``<split>/JPEGImages/<name>`` or, with all frames,
            ``<split>_all_frames/JPEGImages/<name>``.
        listed: Stems of the frames in ``<split>/JPEGImages/<name>``, in order: the frames written.
        annotations: ``{frame stem: annotation PNG}`` from ``<split>/Annotations/<name>``.
    """

    name: str
    frames_dir: Path
    listed: tuple[str, ...]
    annotations: dict[str, Path]


@dataclass(frozen=True)
class GivenMasks:
    """The masks a video's objects are given by, each object once, at its first annotation.

    Attributes:
        masks: ``{frame stem: (H, W) uint8 labels}`` holding only the objects first annotated there.
        palette: Palette of the first annotation PNG (mode ``P``), for the output PNGs.
        mode: ``"P"`` or ``"L"``, as the first annotation PNG.
    """

    masks: dict[str, np.ndarray]
    palette: list[int] | None
    mode: MaskMode

    @property
    def object_ids(self) -> list[int]:
        """Every object given, ascending."""
        return sorted({int(i) for labels in self.masks.values() for i in np.unique(labels) if i})


@dataclass(frozen=True)
class VideoTiming:
    """How long one video took.

    Attributes:
        video: Its name.
        frames: Frames segmented from the first annotated frame on.
        written: PNGs written (the listed frames).
        objects: Objects given.
        model_seconds: Time spent in :meth:`VideoPredictor.step` on those frames.
        total_seconds: Wall time from reading the annotations to the last PNG written.
    """

    video: str
    frames: int
    written: int
    objects: int
    model_seconds: float
    total_seconds: float


def _image_stems(folder: Path) -> list[str]:
    """Stems of the image files in ``folder``, in natural order."""
    return sorted(
        (p.stem for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")),
        key=natural_sort_key,
    )


def read_meta_videos(meta_path: Path) -> list[str]:
    """The videos listed in a YouTube-VOS ``meta.json``, sorted.

    Raises:
        EmvosInputError: the file is missing or not in the ``{"videos": {<video>: {"objects": ...}}}`` format.
    """
    if not meta_path.is_file():
        raise EmvosInputError(f"{meta_path}: not found; the YouTube-VOS split folder must hold its meta.json")
    try:
        videos = json.loads(meta_path.read_text())["videos"]
        if not all(isinstance(video["objects"], dict) for video in videos.values()):
            raise TypeError("objects of a video must be a mapping of object ids")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise EmvosInputError(
            f"{meta_path}: not a YouTube-VOS meta.json ({error!r}); restore it from the dataset archive"
        ) from error
    return sorted(videos)


def list_videos(
    root: Path, split: str = "valid", all_frames: bool = False, videos: list[str] | None = None
) -> list[YTVOSVideo]:
    """The videos to run, checked: every folder exists and every video has annotations.

    Args:
        root: The YouTube-VOS folder (holding ``<split>/``).
        split: ``valid`` (or ``test``).
        all_frames: Segment ``<split>_all_frames/JPEGImages/<video>`` instead of the listed frames.
        videos: Videos to run instead of all those of ``meta.json``.

    Raises:
        EmvosInputError: a missing root, split, ``meta.json`` or folder, an unknown video, or a video
            without any annotation PNG.
    """
    if not root.is_dir():
        raise EmvosInputError(f"{root}: no such folder; pass --root the YouTube-VOS folder (holding {split}/)")
    split_dir = root / split
    if not split_dir.is_dir():
        raise EmvosInputError(f"{split_dir}: not found; check --root and --split (e.g. valid)")
    known = read_meta_videos(split_dir / "meta.json")
    if videos:
        unknown = [v for v in videos if v not in set(known)]
        if unknown:
            raise EmvosInputError(
                f"--videos: {', '.join(unknown[:5])} not in {split_dir / 'meta.json'}; pick videos of the {split} split"
            )
        names = sorted(set(videos))
    else:
        names = known
    all_root = root / f"{split}_all_frames" / "JPEGImages"
    if all_frames and not all_root.is_dir():
        raise EmvosInputError(f"{all_root}: not found; extract {split}_all_frames into --root or drop --all-frames")
    result = []
    for name in names:
        listed_dir = split_dir / "JPEGImages" / name
        if not listed_dir.is_dir() or not (listed := _image_stems(listed_dir)):
            raise EmvosInputError(f"{listed_dir}: no frames; the {split} split is incomplete (video {name!r})")
        frames_dir = all_root / name if all_frames else listed_dir
        if not frames_dir.is_dir():
            raise EmvosInputError(f"{frames_dir}: not found; {split}_all_frames lacks video {name!r}")
        mask_dir = split_dir / "Annotations" / name
        pngs = sorted(mask_dir.glob("*.png"), key=lambda p: natural_sort_key(p.name)) if mask_dir.is_dir() else []
        if not pngs:
            raise EmvosInputError(f"{mask_dir}: no annotation PNG; video {name!r} has no object to segment")
        result.append(YTVOSVideo(name, frames_dir, tuple(listed), {p.stem: p for p in pngs}))
    return result


def given_masks(video: YTVOSVideo, frame_size: tuple[int, int]) -> GivenMasks:
    """Read a video's annotation PNGs and keep each object only in the first one it appears in.

    Raises:
        EmvosInputError: a PNG cannot be read, holds no object, or differs from ``frame_size``.
    """
    pngs = [(stem, read_mask(path)) for stem, path in video.annotations.items()]  # in frame order
    masks: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    for stem, mask in pngs:
        check_mask_size(mask, frame_size, video.annotations[stem])
        new = set(mask.object_ids) - seen
        if new:
            masks[stem] = np.where(np.isin(mask.labels, sorted(new)), mask.labels, 0).astype(np.uint8)
            seen |= new
    first = pngs[0][1]
    return GivenMasks(masks, first.palette, first.mode)


def segment_video(predictor: VideoPredictor, video: YTVOSVideo, out_dir: Path) -> VideoTiming:
    """Segment one video streaming, giving each object at its first annotation; write the listed frames.

    Raises:
        EmvosInputError: a listed frame or an annotated frame is missing from the frames segmented,
            or a file cannot be read or written.
    """
    start = time.perf_counter()
    frames = open_frames(video.frames_dir)
    names = set(frames.names or ())
    missing = [s for s in (*video.listed, *video.annotations) if s not in names]
    if missing:
        raise EmvosInputError(f"{video.frames_dir}: has no frame {missing[0]!r}, which {video.name!r} lists or "
                              "annotates; the dataset is incomplete")
    given = given_masks(video, frames.size)
    listed = set(video.listed)
    state = predictor.init_state()
    model_seconds = 0.0
    count = written = 0

    def timed(pred: FramePrediction, seconds: float) -> None:
        nonlocal model_seconds, count
        if pred.object_ids:  # frames before the first object cost nothing and are not counted
            model_seconds += seconds
            count += 1

    masks = {index: given.masks[name] for index, name in enumerate(frames.names or ()) if name in given.masks}
    with LabelWriter(out_dir, given.palette, given.mode) as writer:
        for pred in predictor.propagate(state, (f.image for f in frames), masks, on_frame=timed):
            name = frames.frame_name(pred.index)
            if name in listed:
                writer.write(name, pred.labels)
                written += 1
    return VideoTiming(video.name, count, written, len(given.object_ids), model_seconds,
                       time.perf_counter() - start)


def write_submission(out: Path, videos: list[YTVOSVideo]) -> Path:
    """Zip ``OUT/Annotations/<video>/<frame>.png`` of every listed frame into ``OUT/submission.zip``, atomically.

    Raises:
        EmvosInputError: a listed frame has no PNG (a video was not segmented), or the zip cannot be written.
    """
    target = out / SUBMISSION_ZIP
    try:
        with atomic_path(target) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
            for video in videos:
                for stem in video.listed:
                    png = out / "Annotations" / video.name / f"{stem}.png"
                    if not png.is_file():
                        raise EmvosInputError(f"{png}: missing; segment video {video.name!r} (or its shard) first")
                    archive.write(png, f"Annotations/{video.name}/{stem}.png")
    except OSError as error:
        raise EmvosInputError(f"{target}: cannot write ({error.strerror or error}); check free disk space") from error
    return target


def summarize(timings: list[VideoTiming], info: dict[str, object]) -> dict[str, object]:
    """The ``ytvos.json`` document: settings, totals, model and end-to-end fps, a row per video."""
    frames = sum(t.frames for t in timings)
    return {
        **info,
        "videos": len(timings),
        "frames": frames,
        "written": sum(t.written for t in timings),
        "model_fps": frames / sum(t.model_seconds for t in timings),
        "end_to_end_fps": frames / sum(t.total_seconds for t in timings),
        "per_video": [
            {**asdict(t), "model_fps": t.frames / t.model_seconds, "end_to_end_fps": t.frames / t.total_seconds}
            for t in timings
        ],
    }


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos ytvos``."""
    parser = subparsers.add_parser(
        "ytvos",
        help=command_summary("ytvos"),
        description="Segment every video of a YouTube-VOS split (streaming; objects that appear later are "
        "given at their first annotation) and write OUT/Annotations/<video>/<frame>.png for the listed "
        "frames, OUT/submission.zip for the evaluation server, and timings in OUT/ytvos.json.",
    )
    parser.add_argument("--root", type=Path, required=True, help="YouTube-VOS folder (valid/, valid_all_frames/)")
    parser.add_argument("--split", default="valid", help="split folder (default: valid)")
    parser.add_argument("--all-frames", action="store_true",
                        help="segment every frame of <split>_all_frames (better propagation); write the listed ones")
    parser.add_argument("--videos", type=lambda s: [x for x in s.split(",") if x], default=None,
                        metavar="A,B,...", help="comma-separated videos instead of the whole split")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                        help="run only every N-th video starting at I (then --merge)")
    parser.add_argument("--merge", action="store_true", help="combine the shards' timings and zip the submission")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_inference_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run (a shard of) the split; with the whole split (or ``--merge``), zip it and write the timings."""
    videos = list_videos(args.root, args.split, args.all_frames, args.videos)
    if args.out.exists() and not args.out.is_dir():
        raise EmvosInputError(f"{args.out}: exists and is a file; give --out a folder path")
    shard, shards = args.shard or (0, 1)
    if not args.merge:
        import torch

        if shards > 1 and args.device == "auto" and torch.cuda.device_count() > 1:
            args.device = f"cuda:{shard % torch.cuda.device_count()}"
        predictor = build_predictor(args)
        clear_shard(args.out, shard, shards)
        timings = [
            segment_video(predictor, video, args.out / "Annotations" / video.name)
            for video in tqdm(videos[shard::shards], unit="video", disable=args.quiet, desc="ytvos")
        ]
        info = {"split": args.split, "all_frames": args.all_frames, **run_info(args, predictor)}
        path = write_shard(args.out, shard, shards, info, [asdict(t) for t in timings])
        if shards > 1:
            print(f"shard {shard}/{shards} done: {len(timings)} videos -> {path}")
            return 0
    return _merge(args.out, videos, None if args.merge else shards)


def _merge(out: Path, videos: list[YTVOSVideo], shards: int | None) -> int:
    """Check every video has timings, zip the submission and write ``ytvos.json``."""
    loaded = read_shards(out, shards)
    by_video = {t["video"]: VideoTiming(**t) for doc in loaded for t in doc["timings"]}
    missing = [v.name for v in videos if v.name not in by_video]
    if missing:
        raise EmvosInputError(f"{out / 'timings'}: no timings for {', '.join(missing[:5])}; "
                              "run the missing shards before --merge")
    zip_path = write_submission(out, videos)
    info = dict(loaded[0]["info"])
    for key in ("peak_rss_mb", "peak_vram_mb"):
        if key in info:
            info[key] = max(doc["info"].get(key, 0.0) for doc in loaded)
    summary = summarize([by_video[v.name] for v in videos], info)
    write_text_atomically(out / "ytvos.json", json.dumps(summary, indent=1))
    print(f"{summary['videos']} videos, {summary['frames']} frames segmented, {summary['written']} written on "
          f"{summary['device']}: model {summary['model_fps']:.2f} fps, end to end {summary['end_to_end_fps']:.2f} fps, "
          f"peak RSS {summary['peak_rss_mb']:.0f} MiB")
    print(f"-> {zip_path}", file=sys.stderr)
    return 0

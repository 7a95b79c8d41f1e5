"""Segment the videos of a batch, one after another or on Ray workers, and keep their records.

Each video is segmented as ``emvos segment`` would (:func:`emvos.inference.cli.segment_video`) into
``OUT/<name>/``, by a predictor that the process (or Ray worker) keeps for all its videos. Its record
``OUT/<name>/emvos-batch.json`` says whether it finished (frames, objects, seconds, fps) or failed
(the error); a finished video is skipped by the next run, a failed one is tried again. After every
video ``OUT/summary.csv`` is written again from the records of all the manifest's videos, so that
shards running side by side (``--shard i/n``) and an interrupted run leave a summary of what is done.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emvos.batch.manifest import BatchVideo
from emvos.io.files import write_text_atomically

if TYPE_CHECKING:
    from emvos.inference.predictor import VideoPredictor
    from emvos.onnx.predictor import OnnxPredictor

    Predictor = VideoPredictor | OnnxPredictor

#: A video's record, in its output folder.
RECORD = "emvos-batch.json"
#: The batch's summary, in the output folder.
SUMMARY = "summary.csv"
SUMMARY_COLUMNS = ("video", "status", "frames", "objects", "seconds", "fps", "error")


@dataclass(frozen=True)
class VideoRecord:
    """The outcome of one video: ``status`` is ``done``, ``failed`` or ``pending`` (not tried yet)."""

    video: str
    status: str
    frames: int = 0
    objects: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    error: str = ""


def record_path(out: Path, video: BatchVideo) -> Path:
    """Where the record of ``video`` is kept."""
    return out / video.name / RECORD


def read_record(out: Path, video: BatchVideo) -> VideoRecord:
    """The record of ``video``; ``pending`` if it has none or an unreadable one."""
    try:
        return VideoRecord(**json.loads(record_path(out, video).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return VideoRecord(video.name, "pending")


def segment_args(args: argparse.Namespace, video: BatchVideo, out: Path) -> argparse.Namespace:
    """``emvos segment``'s arguments for one video of the batch: the batch's inference and backend
    options, segment's defaults for the rest (no progress bar, no overlay), and ``--overwrite``: the
    video's folder belongs to the batch, and a failed video's partial results are replaced."""
    from emvos.inference.cli import segment_arguments

    one = segment_arguments(video.video, [video.mask], out / video.name)
    vars(one).update({name: value for name, value in vars(args).items()
                      if name in vars(one) and name not in ("out", "quiet")})
    one.quiet = one.overwrite = True
    return one


def segment_one(args: argparse.Namespace, video: BatchVideo, out: Path, predictor: Predictor) -> VideoRecord:
    """Segment one video into ``out/<name>/`` and write its record; any error is recorded, not raised."""
    from emvos.inference.cli import segment_video

    try:
        done = segment_video(segment_args(args, video, out), predictor)
        record = VideoRecord(video.name, "done", done.frames, done.objects, round(done.seconds, 3),
                             round(done.fps, 3))
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the batch
        return record_failure(out, video, exc)
    write_text_atomically(record_path(out, video), json.dumps(asdict(record)) + "\n")
    return record


def record_failure(out: Path, video: BatchVideo, exc: BaseException) -> VideoRecord:
    """Write and return the record of a video that failed with ``exc`` (its type and first line)."""
    lines = str(exc).strip().splitlines()
    record = VideoRecord(video.name, "failed", error=f"{type(exc).__name__}: {lines[0] if lines else ''}")
    write_text_atomically(record_path(out, video), json.dumps(asdict(record)) + "\n")
    return record


def write_summary(out: Path, videos: Iterable[BatchVideo]) -> Path:
    """Write ``out/summary.csv`` from the records of ``videos`` (atomically)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for video in videos:
        writer.writerow(asdict(read_record(out, video)))
    write_text_atomically(out / SUMMARY, text.getvalue())
    return out / SUMMARY


def segment_locally(args: argparse.Namespace, videos: list[BatchVideo], out: Path,
                    predictor: Predictor) -> Iterator[VideoRecord]:
    """Segment ``videos`` in this process with one predictor, yielding each record as it is written."""
    for video in videos:
        yield segment_one(args, video, out, predictor)


def pending(videos: list[BatchVideo], out: Path) -> tuple[list[BatchVideo], list[BatchVideo]]:
    """``(to do, already done)``: videos whose record says ``done`` are skipped."""
    done = [v for v in videos if read_record(out, v).status == "done"]
    return [v for v in videos if v not in done], done

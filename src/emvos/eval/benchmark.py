"""``emvos benchmark``: segment a DAVIS split with streaming inference, score it, and time it.

For every sequence of the split, the first annotated frame is given and the rest are segmented
frame by frame, as ``emvos segment`` does; result PNGs go to ``OUT/results/<sequence>/``, which is
then scored with :func:`emvos.eval.davis.evaluate_results`. Two speeds are reported, over all
frames of all sequences (the first included, as in the paper's protocol on DAVIS 480p):

* **model fps**: frames / time spent in :meth:`VideoPredictor.step` (the network, matching,
  aggregation, and turning the input and output into arrays — not reading or writing files);
* **end-to-end fps**: frames / wall time from opening a sequence to its last PNG on disk.

With test-time adaptation (``--adapt``, on by default), the time to adapt to each sequence's first
mask is counted in both.

Sequences can be split over processes: ``--shard i/n`` runs every n-th sequence starting at i and
writes its timings to ``OUT/timings/``; ``--merge`` (or the rank-0 process of a ``torchrun``
launch, which shards automatically) combines them and scores the whole split.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tqdm import tqdm

from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.eval.davis import RESOLUTION, YEARS, EvaluationResult, evaluate_results, format_report, write_reports
from emvos.eval.shards import clear_shard, parse_shard, read_shards, wait_for_shards, write_shard
from emvos.inference.cli import add_inference_options, build_predictor
from emvos.io import LabelWriter, open_frames, read_mask
from emvos.io.files import write_text_atomically

if TYPE_CHECKING:  # PyTorch is imported when a command runs, not when its options are parsed
    import torch

    from emvos.inference.predictor import FramePrediction, VideoPredictor


@dataclass(frozen=True)
class SequenceTiming:
    """How long one sequence took.

    Attributes:
        sequence: its name.
        frames: frames segmented (all of them, the given first frame included).
        objects: objects given in the first frame.
        model_seconds: time spent in :meth:`VideoPredictor.step`.
        total_seconds: wall time from opening the frames to the last PNG written.
    """

    sequence: str
    frames: int
    objects: int
    model_seconds: float
    total_seconds: float


def segment_sequence(
    predictor: VideoPredictor, frames_dir: Path, mask_path: Path, out_dir: Path, max_frames: int | None = None
) -> SequenceTiming:
    """Segment one DAVIS sequence from its first-frame mask and write its PNGs into ``out_dir``.

    Frames go to the predictor in chunks of its ``lookahead``; model time is the time in
    :meth:`VideoPredictor.step_many`, as :meth:`VideoPredictor.propagate` reports it.
    """
    start = time.perf_counter()
    frames = open_frames(frames_dir)
    mask = read_mask(mask_path)
    state = predictor.init_state()
    model_seconds = 0.0
    count = 0

    def timed(_: FramePrediction, seconds: float) -> None:
        nonlocal model_seconds
        model_seconds += seconds

    images = (frame.image for frame in itertools.islice(frames, max_frames))
    with LabelWriter(out_dir, mask.palette, mask.mode) as writer:
        for pred in predictor.propagate(state, images, {0: mask.labels}, on_frame=timed):
            writer.write(frames.frame_name(pred.index), pred.labels)
            count += 1
    return SequenceTiming(frames_dir.name, count, len(mask.object_ids), model_seconds, time.perf_counter() - start)


def split_sequences(davis_root: Path, year: int, split: str, sequences: list[str] | None) -> list[str]:
    """The sequences to run: ``sequences`` if given, else those of ``ImageSets/<year>/<split>.txt``."""
    if sequences:
        names = sequences
    else:
        listing = davis_root / "ImageSets" / str(year) / f"{split}.txt"
        if not listing.is_file():
            raise EmvosInputError(f"{listing} not found; check --davis-root, --year and --split, or pass --sequences")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    for name in names:
        if not (davis_root / "JPEGImages" / RESOLUTION / name).is_dir():
            raise EmvosInputError(
                f"{davis_root / 'JPEGImages' / RESOLUTION / name} not found; "
                f"sequence {name!r} is not in this DAVIS folder"
            )
    return sorted(names)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated on ``device``, in MiB."""
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        import torch

        peak["peak_vram_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def run_info(args: argparse.Namespace, predictor: VideoPredictor) -> dict[str, object]:
    """What a run of the inference options (:func:`~emvos.inference.cli.add_inference_options`) used and
    how much memory it took: recorded with each shard's timings."""
    import torch

    return {
        "device": str(predictor.device),
        "resolution": args.resolution,
        "matching": args.matching or predictor.model.config.matching,
        "encoder": predictor.model.config.encoder,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "shipped",
        "adapt_steps": predictor.adapt.steps if predictor.adapt else 0,
        "reach": predictor.reach or 0.0,
        "threads": torch.get_num_threads(),
        **peak_memory_mb(predictor.device),
    }


def summarize(timings: list[SequenceTiming], result: EvaluationResult, info: dict[str, object]) -> dict[str, object]:
    """The benchmark's JSON document: settings, speed, memory, J&F and a row per sequence."""
    frames = sum(t.frames for t in timings)
    by_sequence: dict[str, list[float]] = {}
    for obj in result.objects:
        by_sequence.setdefault(obj.sequence, []).append((obj.j.mean + obj.f.mean) / 2)
    return {
        **info,
        "frames": frames,
        "model_fps": frames / sum(t.model_seconds for t in timings),
        "end_to_end_fps": frames / sum(t.total_seconds for t in timings),
        "global": result.global_row(),
        "sequences": [
            {
                **asdict(t),
                "model_fps": t.frames / t.model_seconds,
                "end_to_end_fps": t.frames / t.total_seconds,
                "J&F-Mean": sum(by_sequence[t.sequence]) / len(by_sequence[t.sequence]),
            }
            for t in timings
        ],
    }


def sequences_csv(summary: dict[str, object]) -> str:
    """One row per sequence: frames, objects, model and end-to-end fps, J&F."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Sequence", "Frames", "Objects", "Model-FPS", "End-to-end-FPS", "J&F-Mean"])
    for row in cast(list[dict[str, Any]], summary["sequences"]):
        writer.writerow(
            [
                row["sequence"],
                row["frames"],
                row["objects"],
                f"{row['model_fps']:.3f}",
                f"{row['end_to_end_fps']:.3f}",
                f"{row['J&F-Mean']:.3f}",
            ]
        )
    return buffer.getvalue()


def format_summary(summary: dict[str, object]) -> str:
    """The speed and memory lines printed under the J&F table."""
    lines = [
        f"{summary['frames']} frames on {summary['device']} at resolution {summary['resolution']}, "
        f"matching {summary['matching']}",
        f"model: {summary['model_fps']:.2f} fps   end to end: {summary['end_to_end_fps']:.2f} fps   "
        f"peak RSS: {summary['peak_rss_mb']:.0f} MiB"
        + (f"   peak VRAM: {summary['peak_vram_mb']:.0f} MiB" if "peak_vram_mb" in summary else ""),
    ]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos benchmark``."""
    parser = subparsers.add_parser(
        "benchmark",
        help=command_summary("benchmark"),
        description="Segment every sequence of a DAVIS split from its first-frame masks (streaming), score the "
        "results with J&F, and report model and end-to-end fps and peak memory.",
    )
    parser.add_argument("--davis-root", type=Path, required=True, help="DAVIS folder (JPEGImages/480p, ...)")
    parser.add_argument("--year", type=int, choices=YEARS, default=2017)
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--sequences",
        type=lambda s: [x for x in s.split(",") if x],
        default=None,
        help="comma-separated sequences instead of the split's",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark"), help="output folder (default: benchmark)")
    parser.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="segment at most this many frames per sequence (for quick checks; scores need all)",
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="I/N",
        help="run only every N-th sequence starting at I (then --merge)",
    )
    parser.add_argument("--merge", action="store_true", help="combine the shards' timings and score the split")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_inference_options(parser)
    parser.set_defaults(func=run)


def _launch_shard(args: argparse.Namespace) -> tuple[int, int]:
    """``--shard`` if given, else the rank of a ``torchrun`` launch, else the whole split."""
    if args.shard is not None:
        return args.shard
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def run(args: argparse.Namespace) -> int:
    """Run (a shard of) the benchmark, then score and summarise when this process has the whole split."""
    names = split_sequences(args.davis_root, args.year, args.split, args.sequences)
    if args.max_frames is not None and args.max_frames < 2:
        raise EmvosInputError(f"--max-frames must be at least 2, got {args.max_frames}")
    if args.out.exists() and not args.out.is_dir():
        raise EmvosInputError(f"{args.out}: exists and is a file; give --out a folder path")
    shard, shards = _launch_shard(args)
    results = args.out / "results"
    if not args.merge:
        import torch

        if shards > 1 and args.device == "auto" and torch.cuda.is_available():
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', shard)) % torch.cuda.device_count()}"
        predictor = build_predictor(args)
        clear_shard(args.out, shard, shards)
        timings = []
        mine = names[shard::shards]
        for name in tqdm(mine, unit="sequence", disable=args.quiet, desc="benchmark"):
            timings.append(
                segment_sequence(
                    predictor,
                    args.davis_root / "JPEGImages" / RESOLUTION / name,
                    args.davis_root / "Annotations" / RESOLUTION / name / "00000.png",
                    results / name,
                    args.max_frames,
                )
            )
        path = write_shard(args.out, shard, shards, run_info(args, predictor), [asdict(t) for t in timings])
        if shards > 1:
            if "WORLD_SIZE" not in os.environ or shard != 0:
                print(f"shard {shard}/{shards} done: {len(timings)} sequences -> {path}")
                return 0
            wait_for_shards(args.out, shards)
    return _merge_and_score(args, names, None if args.merge else shards)


def _merge_and_score(args: argparse.Namespace, names: list[str], shards: int | None) -> int:
    loaded = read_shards(args.out, shards)
    timings = [SequenceTiming(**t) for doc in loaded for t in doc["timings"]]
    missing = sorted(set(names) - {t.sequence for t in timings})
    if missing:
        raise EmvosInputError(
            f"{args.out / 'timings'}: no timings for {', '.join(missing[:5])}; run the missing shards before --merge"
        )
    timings = sorted((t for t in timings if t.sequence in names), key=lambda t: t.sequence)
    info = dict(loaded[0]["info"])
    info["peak_rss_mb"] = max(doc["info"]["peak_rss_mb"] for doc in loaded)
    if args.max_frames is not None:
        print(f"--max-frames {args.max_frames}: sequences are cut short, so they are timed but not scored")
        summary = {
            **info,
            "frames": sum(t.frames for t in timings),
            "model_fps": sum(t.frames for t in timings) / sum(t.model_seconds for t in timings),
            "end_to_end_fps": sum(t.frames for t in timings) / sum(t.total_seconds for t in timings),
        }
    else:
        result = evaluate_results(
            args.out / "results", args.davis_root, year=args.year, split=args.split, sequences=names
        )
        write_reports(result, args.out / "results")
        print(format_report(result))
        summary = summarize(timings, result, {**info, "year": args.year, "split": args.split})
        write_text_atomically(args.out / "benchmark.csv", sequences_csv(summary))
    write_text_atomically(args.out / "benchmark.json", json.dumps(summary, indent=1))
    print(format_summary(summary))
    print(f"-> {args.out / 'benchmark.json'}", file=sys.stderr)
    return 0

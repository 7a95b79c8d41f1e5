"""``emvos batch``: segment many videos, in this process or on Ray workers."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from emvos.batch.manifest import MASKS_SUFFIX, read_manifest
from emvos.batch.runner import SUMMARY, pending, segment_locally, write_summary
from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.eval.shards import parse_shard
from emvos.inference.cli import add_backend_options, add_inference_options, check_backend_options, make_predictor


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos batch``."""
    parser = subparsers.add_parser(
        "batch", help=command_summary("batch"),
        description="Segment every video of a manifest into OUT/<video name>/ (as emvos segment), with one "
                    "predictor for all of them; a video that fails is recorded and the others go on, and a "
                    f"re-run skips the videos already done. OUT/{SUMMARY} lists every video's frames, objects, "
                    "fps or error.")
    parser.add_argument("manifest", type=Path,
                        help="a CSV file with a header and columns video,mask (optional name; paths relative to "
                             "it), or a folder of videos (files or frame folders) with NAME.png or "
                             f"NAME{MASKS_SUFFIX}/ beside each video NAME")
    parser.add_argument("--out", type=Path, required=True, help="output folder: one folder of label PNGs per video")
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                        help="segment only every N-th video from the I-th (0 <= I < N), e.g. for a SLURM job array")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="distribute the videos over Ray workers: on a new local Ray instance, or on the "
                             "cluster at ADDRESS (auto: the one this node belongs to) (pip install 'emvos[ray]')")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --ray: workers, one predictor each (default: the cluster's CPUs / --threads)")
    parser.add_argument("--quiet", action="store_true", help="no progress")
    add_inference_options(parser)
    add_backend_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the manifest and options, then segment the videos not done yet; 1 if any video failed."""
    videos = read_manifest(args.manifest)
    if args.out.exists() and not args.out.is_dir():
        raise EmvosInputError(f"{args.out}: exists and is a file; give --out a folder path")
    if args.workers is not None and (args.ray is None or args.workers < 1):
        raise EmvosInputError("--workers N (N >= 1) sets the number of Ray workers; add --ray, or leave it out")
    if args.threads is not None and args.threads < 1:
        raise EmvosInputError(f"--threads must be at least 1, got {args.threads}")
    if args.ray is not None:
        args.threads = args.threads or 1  # each worker's share of the CPUs it asks Ray for
    check_backend_options(args)
    if args.backend == "onnxruntime" and args.onnx is None:
        from emvos.onnx.files import cached_onnx_folder

        args.onnx, args.checkpoint = cached_onnx_folder(args.checkpoint).folder, None  # exported once, not per worker
    predictor = make_predictor(args)  # checks the options and the model before any video; workers build their own
    shard = videos if args.shard is None else videos[args.shard[0]::args.shard[1]]
    todo, done = pending(shard, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"batch: {len(shard)} videos" + (f" (shard {args.shard[0]}/{args.shard[1]} of {len(videos)})"
                                             if args.shard else "") + f", {len(done)} already done, {len(todo)} to do")
    if args.ray is not None:
        from emvos.batch.cluster import segment_on_ray

        del predictor
        records = segment_on_ray(args, todo, args.out, args.ray or None, args.workers, args.threads)
    else:
        records = segment_locally(args, todo, args.out, predictor)
    failed = frames = 0
    start = time.perf_counter()
    with tqdm(total=len(todo), unit="video", desc="batch", disable=args.quiet) as bar:
        for record in records:
            if record.status == "done":
                line = (f"{record.video}: {record.frames} frames, {record.objects} objects, "
                        f"{record.fps:.2f} fps")
                frames += record.frames
            else:
                line = f"{record.video}: failed: {record.error}"
                failed += 1
            if not args.quiet:
                bar.write(line)
            write_summary(args.out, videos)
            bar.update(1)
    elapsed = time.perf_counter() - start
    summary = write_summary(args.out, videos)
    print(f"batch: {len(todo) - failed} done, {failed} failed, {len(done)} skipped; {frames} frames in "
          f"{elapsed:.1f} s ({frames / elapsed if elapsed else 0:.2f} fps overall) -> {summary}")
    return 1 if failed else 0


"""``emvos synth``: write synthetic benchmarks to disk; the logic lives in :mod:`emvos.data.synthetic`."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from emvos.commands import command_summary
from emvos.errors import EmvosInputError

#: The settings ``emvos synth distractors`` can set instead of the difficulty's, and their types.
SETTING_OPTIONS = {"targets": int, "distractors": int, "similarity": float, "speed": float, "occlusion": float,
                   "entering": float}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos synth`` and its generators."""
    parser = subparsers.add_parser(
        "synth", help=command_summary("synth"),
        description="Generate synthetic video benchmarks in DAVIS layout, readable by emvos eval, "
                    "emvos benchmark and the davis training dataset.")
    generators = parser.add_subparsers(title="generators", metavar="GENERATOR", required=True)
    _add_distractors_parser(generators)
    _add_crowd_parser(generators)


def _add_distractors_parser(generators: argparse._SubParsersAction) -> None:
    parser = generators.add_parser(
        "distractors", help="targets moving among look-alike distractors",
        description="Videos where targets (objects 1..N in the annotations) move among look-alike "
                    "distractors (background) that cross, occlude them and enter the frame. --difficulty "
                    "(0..1) raises together the number of distractors per target (1..5), their similarity "
                    "to the target (0.25..1, 1 = clones), the speed (0.004..0.03 of the shorter side per "
                    "frame), the share of distractors crossing their target's path (0.1..0.9) and the share "
                    "entering the frame (0..0.5); the options below set one knob instead. The same arguments "
                    "give identical files.")
    parser.add_argument("--out", type=Path, required=True, help="new (or empty) folder for the benchmark")
    parser.add_argument("--videos", type=int, default=30, help="number of videos (default 30)")
    parser.add_argument("--frames", type=int, default=50, help="frames per video (default 50)")
    parser.add_argument("--difficulty", type=float, default=0.5, help="0 (easy) .. 1 (hard), default 0.5")
    parser.add_argument("--seed", type=int, default=0, help="non-negative seed (default 0)")
    parser.add_argument("--size", default="854x480", metavar="WxH",
                        help="frame size (default 854x480)")
    parser.add_argument("--texture-source", type=Path, default=None, metavar="DIR",
                        help="folder of photos to cut textures from, e.g. a DAVIS root (its JPEGImages are used); "
                             "default: procedural textures")
    parser.add_argument("--split", default="val", help="name of the split file ImageSets/2017/NAME.txt (default val)")
    knobs = parser.add_argument_group("knobs (instead of the difficulty's)")
    knobs.add_argument("--targets", type=int, help="targets per video (default 2)")
    knobs.add_argument("--distractors", type=int, help="look-alike distractors per target")
    knobs.add_argument("--similarity", type=float, help="0..1, appearance similarity to the target (1 = clones)")
    knobs.add_argument("--speed", type=float, help="mean speed, in shorter sides per frame")
    knobs.add_argument("--occlusion", type=float,
                       help="0..1, share of distractors crossing their target's path (half of them in front)")
    knobs.add_argument("--entering", type=float, help="0..1, share of distractors entering the frame")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_distractors)


def run_distractors(args: argparse.Namespace) -> int:
    """Write the benchmark; print where and with which settings."""
    from emvos.data.synthetic import DistractorSettings, parse_size, write_distractor_benchmark  # imports PyTorch

    size = parse_size(args.size, "--size")
    overrides = {name: getattr(args, name) for name in SETTING_OPTIONS if getattr(args, name) is not None}
    try:
        settings = DistractorSettings.from_difficulty(args.difficulty, **overrides)
    except ValueError as exc:
        raise EmvosInputError(str(exc)) from None
    # The bar shows after a second, so that an argument refused at once prints only the error.
    with tqdm(total=args.videos, unit="video", disable=args.quiet, desc="synth", delay=1.0) as bar:
        names = write_distractor_benchmark(
            args.out, videos=args.videos, length=args.frames, settings=settings, seed=args.seed, size=size,
            texture_source=args.texture_source, split=args.split, progress=lambda _: bar.update())
    height, width = size
    print(f"wrote {len(names)} videos of {args.frames} frames ({width}x{height}) -> {args.out}; {settings}")
    return 0


def _add_crowd_parser(generators: argparse._SubParsersAction) -> None:
    parser = generators.add_parser(
        "crowd", help="many real objects, most of them small, pasted into real videos",
        description="Videos made of DAVIS sequences: each video is one sequence (its object is object 1) "
                    "with more objects pasted in, each cut frame by frame from a sequence with its own motion, "
                    "scaled to a random area (log-uniform within --area pixels, so most are small), drifting "
                    "and occluding each other. Build it from sequences no model was trained on. The same "
                    "arguments give identical files.")
    parser.add_argument("--out", type=Path, required=True, help="new (or empty) folder for the benchmark")
    parser.add_argument("--source", type=Path, required=True, metavar="DAVIS_ROOT",
                        help="DAVIS folder with JPEGImages/480p and Annotations/480p")
    parser.add_argument("--sequences", required=True, help="comma-separated sequences giving scenes and objects")
    parser.add_argument("--videos", type=int, default=1, help="number of videos (default 1)")
    parser.add_argument("--objects", type=int, default=44, help="objects per video (default 44)")
    parser.add_argument("--frames", type=int, default=100, help="frames per video (default 100)")
    parser.add_argument("--size", default="1920x1080", metavar="WxH", help="frame size (default 1920x1080)")
    parser.add_argument("--area", default="300,20000", metavar="MIN,MAX",
                        help="range of the pasted objects' areas in pixels (default 300,20000)")
    parser.add_argument("--speed", type=float, default=0.002,
                        help="largest drift per frame, in shorter sides (default 0.002)")
    parser.add_argument("--seed", type=int, default=0, help="non-negative seed (default 0)")
    parser.add_argument("--split", default="val", help="name of the split file ImageSets/2017/NAME.txt (default val)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_crowd)


def run_crowd(args: argparse.Namespace) -> int:
    """Write the crowd benchmark; print where."""
    from emvos.data.crowd import write_crowd_benchmark
    from emvos.data.synthetic import parse_size

    size = parse_size(args.size, "--size")
    try:
        low, high = (float(v) for v in args.area.split(","))
    except ValueError:
        raise EmvosInputError(f"--area {args.area!r}: give two areas in pixels, e.g. 300,20000") from None
    with tqdm(total=args.videos, unit="video", disable=args.quiet, desc="synth", delay=1.0) as bar:
        names = write_crowd_benchmark(
            args.out, source=args.source, sequences=[s for s in args.sequences.split(",") if s],
            videos=args.videos, objects=args.objects, length=args.frames, size=size, seed=args.seed,
            area=(low, high), speed=args.speed, split=args.split, progress=lambda _: bar.update())
    height, width = size
    print(f"wrote {len(names)} videos of {args.frames} frames ({width}x{height}), {args.objects} objects each "
          f"-> {args.out}")
    return 0

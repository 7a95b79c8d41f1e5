"""``emvos speed``: its options, their checks (one line, exit status 2, before any work), and the run.

What it measures is described in :mod:`emvos.benchmarking`; :class:`~emvos.benchmarking.sweep.SpeedRun`
measures, :mod:`emvos.benchmarking.report` renders.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from emvos.benchmarking.settings import (
    MODES,
    QUICK,
    DavisSubset,
    ModelSpec,
    SweepSettings,
    paper_spec,
    shipped_spec,
)
from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.eval.davis import YEARS
from emvos.io.files import write_text_atomically


def _ints(option: str, text: str, smallest: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EmvosInputError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < smallest:
        raise EmvosInputError(f"{option} takes integers >= {smallest}, got {text!r}")
    return values


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    """The sweep: ``--quick`` or the full one, with the options given on the command line."""
    settings = QUICK if args.quick else SweepSettings()
    changes: dict[str, Any] = {}
    if args.modes:
        changes["modes"] = tuple(m for m in args.modes.split(",") if m)
    if args.objects:
        changes["objects"] = _ints("--objects", args.objects, 1)
    if args.lengths:
        changes["lengths"] = () if args.lengths == "none" else _ints("--lengths", args.lengths, 1)
    if args.resolutions:
        changes["resolutions"] = _ints("--resolutions", args.resolutions, 32)
        if any(r % 2 for r in changes["resolutions"]):
            raise EmvosInputError(f"--resolutions must be even (mp4 frames), got {args.resolutions}")
    for option, smallest in (("warmup", 1), ("min_frames", 1), ("max_frames", 1)):
        value = getattr(args, option)
        if value is not None:
            if value < smallest:
                raise EmvosInputError(f"--{option.replace('_', '-')} must be at least {smallest}, got {value}")
            changes[option] = value
    if args.cell_seconds is not None:
        if args.cell_seconds < 0:
            raise EmvosInputError(f"--cell-seconds must be >= 0, got {args.cell_seconds}")
        changes["cell_seconds"] = args.cell_seconds
    settings = replace(settings, **changes)
    if settings.min_frames > settings.max_frames:
        raise EmvosInputError(f"--min-frames {settings.min_frames} is above --max-frames {settings.max_frames}")
    return settings


def command_line(args: argparse.Namespace) -> str:
    """``emvos speed`` with the options given (every option of this command defaults to ``None``/``False``)."""
    words = ["emvos", "speed"]
    for dest, value in vars(args).items():
        if dest == "func" or value is None or value is False:
            continue
        words.append("--" + dest.replace("_", "-"))
        if value is not True:
            words.append(str(value))
    return shlex.join(words)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos speed``."""
    parser = subparsers.add_parser(
        "speed", help=command_summary("speed"),
        description="Time the paper model and the shipped model in every inference mode over objects x "
                    "resolutions (model-only and end-to-end fps, GFLOPs, fraction of the measured peak, peak RSS, "
                    "mask agreement), the official EMVOS code side by side, and peak RSS over video length. "
                    "Writes OUT/speed.json and OUT/speed.csv, and with --doc a Markdown report.")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: speed)")
    parser.add_argument("--doc", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every part at tiny sizes")
    parser.add_argument("--models", default=None, help="comma-separated: paper, shipped (default: both)")
    parser.add_argument("--modes", default=None, help=f"comma-separated, of {', '.join(MODES)} (default: every "
                                                      "mode of the device; fp16 and the graph modes need CUDA)")
    parser.add_argument("--objects", default=None, help="object counts (default 1,3,7)")
    parser.add_argument("--resolutions", default=None, help="frame heights, 16:9 frames (default 480,720,1080)")
    parser.add_argument("--lengths", default=None,
                        help="frames of the video-length runs (default 100,1000,10000; none: no video-length sweep)")
    parser.add_argument("--cell-seconds", type=float, default=None,
                        help="model time each cell aims for (default 5); the main knob of the run time")
    parser.add_argument("--min-frames", type=int, default=None, help="fewest timed frames per cell (default 2)")
    parser.add_argument("--max-frames", type=int, default=None, help="most timed frames per cell (default 50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed frames before each cell (default 1)")
    parser.add_argument("--paper-checkpoint", type=Path, default=None,
                        help="trained weights of the paper model (official .pth or emvos); default: random")
    parser.add_argument("--shipped-checkpoint", type=Path, default=None,
                        help="weights of the shipped model (default: the installed ones, else random)")
    parser.add_argument("--official-repo", type=Path, default=None,
                        help="a checkout of github.com/suhwan-cho/EMVOS to time side by side (random weights)")
    parser.add_argument("--davis-root", type=Path, default=None, help="score every mode's J&F on DAVIS sequences")
    parser.add_argument("--year", type=int, default=None, help=f"DAVIS year, {' or '.join(map(str, YEARS))} "
                                                               "(default 2017)")
    parser.add_argument("--split", default=None, help="DAVIS split (default val)")
    parser.add_argument("--sequences", default=None, help="comma-separated DAVIS sequences instead of the split's")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="only print the tables of an earlier speed.json (and write --doc); runs nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def _model_specs(args: argparse.Namespace) -> dict[str, ModelSpec]:
    names = [m for m in (args.models or "paper,shipped").split(",") if m]
    if not names or any(m not in ("paper", "shipped") for m in names):
        raise EmvosInputError(f"--models takes paper and/or shipped, got {args.models!r}")
    checkpoints = {"paper": args.paper_checkpoint, "shipped": args.shipped_checkpoint}
    for name, path in checkpoints.items():
        if path is not None and not path.is_file():
            raise EmvosInputError(f"--{name}-checkpoint {path}: no such file")
    specs = {"paper": paper_spec, "shipped": shipped_spec}
    return {name: specs[name](checkpoints[name]) for name in dict.fromkeys(names)}


def _davis_subset(args: argparse.Namespace) -> DavisSubset | None:
    if args.davis_root is None:
        if args.year or args.split or args.sequences:
            raise EmvosInputError("--year, --split and --sequences choose DAVIS sequences; add --davis-root")
        return None
    year = args.year or 2017
    if year not in YEARS:
        raise EmvosInputError(f"--year must be one of {', '.join(map(str, YEARS))}, got {year}")
    split = args.split or "val"
    wanted = [s for s in args.sequences.split(",") if s] if args.sequences else None
    from emvos.eval.benchmark import split_sequences

    return DavisSubset(args.davis_root, year, split, tuple(split_sequences(args.davis_root, year, split, wanted)))


def _log_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _not_a_summary(path: Path) -> EmvosInputError:
    return EmvosInputError(f"--from-json {path}: not a speed.json written by emvos speed; "
                           "pass OUT/speed.json of an earlier run")


def run(args: argparse.Namespace) -> int:
    """Check the options, run the sweep (or load ``--from-json``), print the tables, write the outputs."""
    import torch

    from emvos.benchmarking.report import format_markdown, format_text
    from emvos.benchmarking.sweep import SpeedRun
    from emvos.inference.predictor import resolve_device

    if args.from_json is not None:
        if not args.from_json.is_file():
            raise EmvosInputError(f"--from-json {args.from_json}: no such file")
        try:
            summary = json.loads(args.from_json.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _not_a_summary(args.from_json) from None
    else:
        settings = settings_from_args(args)
        models = _model_specs(args)
        davis = _davis_subset(args)
        if args.threads is not None:
            if args.threads < 1:
                raise EmvosInputError(f"--threads must be at least 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device or "auto")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EmvosInputError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
        out = args.out or Path("speed")
        if out.exists() and not out.is_dir():
            raise EmvosInputError(f"{out}: exists and is a file; give --out a folder path")
        summary = SpeedRun(settings, models, device, out, command_line(args), args.official_repo, davis,
                           None if args.quiet else _log_line).run()
        print(f"-> {out / 'speed.json'}, {out / 'speed.csv'}", file=sys.stderr)
    try:
        text = format_text(summary)
        markdown = format_markdown(summary) if args.doc is not None else None
    except (KeyError, TypeError, AttributeError):
        if args.from_json is None:
            raise
        raise _not_a_summary(args.from_json) from None  # JSON of another shape
    print(text)
    if markdown is not None:
        write_text_atomically(args.doc, markdown)
        print(f"-> {args.doc}", file=sys.stderr)
    return 0


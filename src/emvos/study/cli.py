"""``emvos study``: run a study from its config; the logic lives in :mod:`emvos.study`."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.study.config import load_study_config, study_preset_names
from emvos.study.report import replace_section


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emvos study`` and its studies."""
    parser = subparsers.add_parser(
        "study", help=command_summary("study"),
        description="Run a study from start to report: data, training, evaluation, tables.")
    studies = parser.add_subparsers(title="studies", metavar="STUDY", required=True)
    matching = studies.add_parser(
        "matching", help="SM vs BM vs EM (the paper's Table 5) on held-out real sequences and distractors",
        description="Write the distractor benchmark's train and test sets, train SM, EM and SM+EM networks with the "
                    "same recipe for every seed, segment held-out real sequences and the distractor test set with "
                    "each (SM also with bijective matching over a K1/K2 grid), and write results.json and a "
                    "Markdown section with the Table-5-shaped table, the K1/K2 sensitivity, the budget and whether "
                    "the ordering agrees with the paper's. Resumable: run the same command again to continue; "
                    "finished runs and evaluations are skipped.")
    matching.add_argument("--config", default="matching", metavar="FILE_OR_PRESET",
                          help=f"study config, a YAML file or preset ({', '.join(study_preset_names())}; "
                               "default matching)")
    matching.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                          help="override config values, e.g. seeds=[0,1,2,3] train.stages.real.iterations=600")
    matching.add_argument("--out", type=Path, default=Path("runs/study-matching"),
                          help="the study's folder: data, runs, results.json (default runs/study-matching)")
    matching.add_argument("--doc", type=Path, default=None,
                          help="Markdown file whose section between <!-- study:begin --> and <!-- study:end --> "
                               "is replaced with the results (appended if it has none), e.g. docs/matching-study.md")
    matching.add_argument("--quiet", action="store_true", help="no progress bars")
    matching.set_defaults(func=run_matching)


def command_line(args: argparse.Namespace) -> str:
    """The command that runs this study again (written into its report)."""
    words = ["emvos", "study", "matching", "--config", str(args.config), "--out", str(args.out)]
    if args.doc is not None:
        words += ["--doc", str(args.doc)]
    return shlex.join(words + list(args.overrides))


def run_matching(args: argparse.Namespace) -> int:
    """Check the inputs, run the study; a stop signal during training exits with 128 + its number."""
    config = load_study_config(args.config, args.overrides)
    if args.doc is not None:
        if args.doc.is_dir() or not args.doc.parent.is_dir():
            raise EmvosInputError(f"--doc {args.doc}: give a Markdown file in an existing folder")
        if args.doc.is_file():
            replace_section(args.doc.read_text(encoding="utf-8"), "")  # broken markers: fail now, not at the end
    from emvos.study.matching import run_study  # PyTorch, once the inputs are checked
    from emvos.train.trainer import TrainingInterrupted

    try:
        run_study(config, args.out, command_line(args), doc=args.doc, progress=not args.quiet)
    except TrainingInterrupted as stopped:
        print(f"emvos study: stopped by {signal.Signals(stopped.signum).name} at step {stopped.step} of "
              f"{stopped.checkpoint.parent}; run the same command again to continue (finished runs and evaluations "
              "are skipped)", file=sys.stderr)
        return 128 + stopped.signum
    return 0

"""The evaluation subcommands of ``emvos`` (``emvos eval``); the logic lives in :mod:`emvos.eval.davis`.

Each subcommand is registered by its own ``_add_<name>_parser`` function, called from
:func:`add_parser`, and runs through its own ``run...`` function.
"""

from __future__ import annotations

import argparse

from emvos.commands import command_summary
from emvos.errors import EmvosInputError
from emvos.eval.davis import YEARS, evaluate_results, format_report, write_reports


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this module's subcommands with the ``emvos`` parser."""
    _add_eval_parser(subparsers)


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help=command_summary("eval"),
        description=(
            "Score RESULTS/<sequence>/<frame>.png indexed masks against a DAVIS ground truth with the "
            "semi-supervised protocol of the official DAVIS toolkit (first and last frames not scored). "
            "Prints the global and per-object table and writes global_results-<split>.csv, "
            "per-sequence_results-<split>.csv and eval_results-<split>.json into RESULTS."
        ),
    )
    parser.add_argument("results", metavar="RESULTS", help="folder holding <sequence>/<frame>.png masks")
    parser.add_argument(
        "--davis-root",
        required=True,
        metavar="ROOT",
        help="DAVIS folder with Annotations/480p and ImageSets/<year>/<split>.txt",
    )
    parser.add_argument(
        "--year",
        type=int,
        choices=YEARS,
        default=2017,
        help="2017: every object scored on its own (default); 2016: masks binarised, one object",
    )
    parser.add_argument("--split", default="val", help="split file ImageSets/<year>/<split>.txt (default: val)")
    parser.add_argument(
        "--sequences",
        metavar="A,B,...",
        help="comma-separated sequences to score instead of the split's",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="processes scoring sequences in parallel (default: number of CPUs)",
    )
    parser.set_defaults(func=run)


def _parse_sequences(text: str | None) -> list[str] | None:
    """``--sequences a,b`` as a list, or None when not given."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise EmvosInputError(f"--sequences {text!r} has an empty name; give names separated by commas")
    return names


def run(args: argparse.Namespace) -> int:
    """Run ``emvos eval``: evaluate, print the table, write the reports; returns the exit status."""
    result = evaluate_results(
        args.results,
        args.davis_root,
        year=args.year,
        split=args.split,
        sequences=_parse_sequences(args.sequences),
        workers=args.workers,
    )
    paths = write_reports(result, args.results)
    print(format_report(result))
    print()
    print("Wrote " + ", ".join(str(path) for path in paths))
    return 0

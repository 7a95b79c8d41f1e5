"""The ``emvos`` command: a thin layer that parses arguments and calls the library.

Each subcommand lives in the module of its stage and exposes ``add_parser(subparsers)``, which
registers its arguments and sets ``func`` to a ``run(args) -> int`` function. Errors in user input
(:class:`emvos.errors.EmvosInputError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from emvos import __version__
from emvos.commands import SUBCOMMANDS
from emvos.errors import EmvosInputError, EmvosInputWarning
from emvos.runtime import keep_freed_memory, use_cudnn_autotuning, use_huge_pages


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser.

    With a known ``command``, only that subcommand's module is imported and registers its
    arguments. Without one (``emvos --help``, a mistyped command), the subcommands are listed from
    :data:`SUBCOMMANDS` and none is imported: no PyTorch import, so the listing and the error
    come at once. ``command="*"`` registers every subcommand in full.
    """
    parser = argparse.ArgumentParser(
        prog="emvos",
        description="Semi-supervised video object segmentation with pixel-level equalized matching.",
    )
    parser.add_argument("--version", action="version", version=f"emvos {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, (module, summary) in SUBCOMMANDS.items():
        if command == "*" or command == name:
            importlib.import_module(module).add_parser(subparsers)
        elif command not in SUBCOMMANDS:
            subparsers.add_parser(name, help=summary)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Print :class:`EmvosInputWarning` as ``emvos: warning: <message>``, other warnings as Python does."""
    if issubclass(category, EmvosInputWarning):
        print(f"emvos: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emvos`` console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    use_huge_pages()  # before any subcommand imports PyTorch
    keep_freed_memory()
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    if "torch" in sys.modules:  # imported by the subcommand's module; ``segment`` imports it after checking its inputs
        use_cudnn_autotuning()
    try:
        return int(args.func(args) or 0)
    except EmvosInputError as exc:
        print(f"emvos: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emvos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

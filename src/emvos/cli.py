"""The ``emvos`` command: a thin layer that parses arguments and calls the library.

Each subcommand lives in the module of its stage and exposes ``add_parser(subparsers)``, which
registers its arguments and sets ``func`` to a ``run(args) -> int`` function. Errors in user input
(:class:`emvos.errors.EmvosInputError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from emvos import __version__
from emvos.errors import EmvosInputError
from emvos.runtime import keep_freed_memory, use_huge_pages

#: Each subcommand and the module that registers it, in the order ``emvos --help`` lists them.
SUBCOMMANDS = {
    "segment": "emvos.inference.cli",
    "eval": "emvos.eval.cli",
    "benchmark": "emvos.eval.benchmark",
    "speed": "emvos.eval.speed",
    "ytvos": "emvos.eval.ytvos",
    "train": "emvos.train.cli",
    "export": "emvos.train.export",
    "synth": "emvos.data.cli",
    "visualize": "emvos.visualize.cli",
    "study": "emvos.study.cli",
    "app": "emvos.app.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``command``, only that subcommand's module is imported (fast ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="emvos",
        description="Semi-supervised video object segmentation with pixel-level equalized matching.",
    )
    parser.add_argument("--version", action="version", version=f"emvos {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    modules = [SUBCOMMANDS[command]] if command in SUBCOMMANDS else SUBCOMMANDS.values()
    for name in modules:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emvos`` console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    use_huge_pages()  # before any subcommand imports PyTorch
    keep_freed_memory()
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    import torch  # the subcommands have imported it by now

    torch.backends.cudnn.benchmark = True  # a video's frames share one shape: cuDNN picks its fastest kernels once
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

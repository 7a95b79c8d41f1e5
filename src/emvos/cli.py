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
from emvos.runtime import keep_freed_memory, use_cudnn_autotuning, use_huge_pages

#: Each subcommand: the module that registers it, and its one-line help (:func:`command_summary`),
#: in the order ``emvos --help`` lists them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("emvos.inference.cli", "segment objects through a video, given their masks"),
    "batch": ("emvos.batch.cli", "segment many videos (a CSV manifest or a folder), locally or on Ray workers"),
    "eval": ("emvos.eval.cli", "score result masks on DAVIS (J&F, as the official toolkit)"),
    "benchmark": ("emvos.eval.benchmark", "segment a DAVIS split, score it and measure speed and memory"),
    "speed": ("emvos.eval.speed",
              "time emvos against the hardware's peak and the official code; memory over video length"),
    "ytvos": ("emvos.eval.ytvos", "segment a YouTube-VOS 2018/2019 split and write the submission zip"),
    "train": ("emvos.train.cli", "train a network (the paper's recipe, or a preset / YAML config)"),
    "export": ("emvos.train.export",
               "write a training checkpoint's model as a small inference file, or a model as ONNX graphs"),
    "synth": ("emvos.data.cli", "generate synthetic benchmarks (DAVIS layout)"),
    "visualize": ("emvos.visualize.cli", "figures of the matching study (score maps, toy)"),
    "study": ("emvos.study.cli", "reproduce the paper's studies with our own runs (matching: Table 5)"),
    "app": ("emvos.app.cli", "annotate, propagate and correct masks in the browser"),
}


def command_summary(name: str) -> str:
    """The one-line help of subcommand ``name``, which its module passes to ``add_parser``."""
    return SUBCOMMANDS[name][1]


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emvos`` console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
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
